//! Every family on tiny random-weight fixtures (F32, Q8_0, Q4_0 and Q4_K_M) on the CPU backend
//! and on the GPU backend (lavapipe where there is no GPU), against llama.cpp's logits on each
//! fixture's all-F32 twin, at every position.

use hangar_engine::backend::Backend;
use hangar_engine::cpu::CpuBackend;
use hangar_kernels::{Gpu, GpuBackend};
use hangar_tests::families::{check_fixture, entries, index, MAX_NMSE};
use hangar_tests::ids;

fn cpu() -> Box<dyn Backend> {
    Box::new(CpuBackend::new())
}

/// The process's one GPU; a machine without any Vulkan device fails here rather than skip.
fn gpu() -> Box<dyn Backend> {
    Box::new(GpuBackend::new(Gpu::shared().expect("a Vulkan adapter (lavapipe in CI)")))
}

fn family_matches_llama_cpp(family: &str, backend: fn() -> Box<dyn Backend>) {
    let idx = index();
    let tokens = ids(&idx["tokens"]);
    let fixtures = entries(&idx, family);
    assert!(fixtures.len() >= 4, "{family}: only {} fixtures", fixtures.len());
    let mut failed = Vec::new();
    for e in &fixtures {
        let r = check_fixture(e, &tokens, backend());
        eprintln!("{:36} worst NMSE {:.2e} at position {:2}, top-1 {}/{}", r.file, r.worst_nmse, r.worst_pos, r.top1_agree, r.rows);
        if !r.passed() {
            failed.push(r.file);
        }
    }
    assert!(failed.is_empty(), "{family}: NMSE above {MAX_NMSE:e} in {failed:?}");
}

macro_rules! family_tests {
    ($($name:ident, $gpu_name:ident => $family:literal),* $(,)?) => {$(
        #[test]
        fn $name() {
            family_matches_llama_cpp($family, cpu);
        }

        #[test]
        fn $gpu_name() {
            family_matches_llama_cpp($family, gpu);
        }
    )*};
}

family_tests! {
    tiny_llama_logits_match_llama_cpp, tiny_llama_logits_match_llama_cpp_on_the_gpu => "llama",
    tiny_mistral_logits_match_llama_cpp, tiny_mistral_logits_match_llama_cpp_on_the_gpu => "mistral",
    tiny_phi2_logits_match_llama_cpp, tiny_phi2_logits_match_llama_cpp_on_the_gpu => "phi2",
    tiny_phi3_logits_match_llama_cpp, tiny_phi3_logits_match_llama_cpp_on_the_gpu => "phi3",
    tiny_qwen2_logits_match_llama_cpp, tiny_qwen2_logits_match_llama_cpp_on_the_gpu => "qwen2",
    tiny_falcon_logits_match_llama_cpp, tiny_falcon_logits_match_llama_cpp_on_the_gpu => "falcon",
    tiny_gptneox_logits_match_llama_cpp, tiny_gptneox_logits_match_llama_cpp_on_the_gpu => "gptneox",
    tiny_stablelm_logits_match_llama_cpp, tiny_stablelm_logits_match_llama_cpp_on_the_gpu => "stablelm",
    tiny_gemma_logits_match_llama_cpp, tiny_gemma_logits_match_llama_cpp_on_the_gpu => "gemma",
    tiny_gemma2_logits_match_llama_cpp, tiny_gemma2_logits_match_llama_cpp_on_the_gpu => "gemma2",
    tiny_gemma3_logits_match_llama_cpp, tiny_gemma3_logits_match_llama_cpp_on_the_gpu => "gemma3",
}
