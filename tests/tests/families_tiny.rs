//! Every family on tiny random-weight fixtures (F32, Q8_0, Q4_0 and Q4_K_M) on the CPU backend,
//! against llama.cpp's logits on each fixture's all-F32 twin, at every position.

use hangar_engine::cpu::CpuBackend;
use hangar_tests::families::{check_fixture, entries, index, MAX_NMSE};
use hangar_tests::ids;

fn family_matches_llama_cpp(family: &str) {
    let idx = index();
    let tokens = ids(&idx["tokens"]);
    let fixtures = entries(&idx, family);
    assert!(fixtures.len() >= 4, "{family}: only {} fixtures", fixtures.len());
    let mut failed = Vec::new();
    for e in &fixtures {
        let r = check_fixture(e, &tokens, Box::new(CpuBackend::new()));
        eprintln!("{:36} worst NMSE {:.2e} at position {:2}, top-1 {}/{}", r.file, r.worst_nmse, r.worst_pos, r.top1_agree, r.rows);
        if !r.passed() {
            failed.push(r.file);
        }
    }
    assert!(failed.is_empty(), "{family}: NMSE above {MAX_NMSE:e} in {failed:?}");
}

macro_rules! family_tests {
    ($($name:ident => $family:literal),* $(,)?) => {$(
        #[test]
        fn $name() {
            family_matches_llama_cpp($family);
        }
    )*};
}

family_tests! {
    tiny_llama_logits_match_llama_cpp => "llama",
    tiny_mistral_logits_match_llama_cpp => "mistral",
    tiny_phi2_logits_match_llama_cpp => "phi2",
    tiny_phi3_logits_match_llama_cpp => "phi3",
    tiny_qwen2_logits_match_llama_cpp => "qwen2",
    tiny_falcon_logits_match_llama_cpp => "falcon",
    tiny_gptneox_logits_match_llama_cpp => "gptneox",
    tiny_stablelm_logits_match_llama_cpp => "stablelm",
    tiny_gemma_logits_match_llama_cpp => "gemma",
    tiny_gemma2_logits_match_llama_cpp => "gemma2",
    tiny_gemma3_logits_match_llama_cpp => "gemma3",
}
