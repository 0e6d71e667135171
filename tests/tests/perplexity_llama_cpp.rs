//! `perplexity` on real models against llama.cpp's perplexity procedure on the F32 twin
//! (goldens in tests/golden/perplexity/, made by scripts/gen_ppl_golden.py), on the CPU backend
//! in CI and on the GPU backend where a real GPU runs the ignored variants.

use hangar_engine::backend::Backend;
use hangar_engine::cpu::CpuBackend;
use hangar_tests::{golden, gpu, load_on};

fn perplexity_within_half_a_percent(name: &str) {
    perplexity_within_half_a_percent_on(name, Box::new(CpuBackend::new()));
}

fn perplexity_within_half_a_percent_on(name: &str, backend: Box<dyn Backend>) {
    let g = golden(&format!("perplexity/{name}.json"));
    let mut model = load_on(g["model"]["file"].as_str().expect("model.file"), backend);
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/data/ppl_corpus.txt")).expect("corpus");
    let tokens = model.tokenizer.encode(&text, true, false).expect("encode");
    assert_eq!(tokens.len() as u64, g["n_tokens"].as_u64().expect("n_tokens"), "corpus tokenizes differently");
    let n_ctx = g["n_ctx"].as_u64().expect("n_ctx") as usize;
    // A golden made with --max-chunks scored only its first n_chunks windows.
    let n_chunks = g["n_chunks"].as_u64().expect("n_chunks") as usize;
    let scored = &tokens[..(n_chunks * n_ctx).min(tokens.len())];
    let out = hangar_engine::perplexity::perplexity(&mut model, scored, n_ctx, 512, |_, _| {}).expect("perplexity");
    let want = g["ppl"].as_f64().expect("ppl");
    let rel = (out.ppl - want).abs() / want;
    eprintln!("{name} perplexity on {}: ours {:.4}, llama.cpp {want:.4} ({:.3}% apart, {} tokens)", model.backend_name(), out.ppl, rel * 100.0, out.n_tokens);
    assert_eq!(out.n_tokens as u64, g["n_tokens_scored"].as_u64().expect("n_tokens_scored"));
    assert!(rel <= 0.005, "perplexity {:.4} vs {want:.4}", out.ppl);
}

#[test]
fn smollm2_perplexity_is_within_half_a_percent_of_llama_cpp() {
    perplexity_within_half_a_percent("smollm2");
}

#[test]
fn gemma3_perplexity_is_within_half_a_percent_of_llama_cpp() {
    perplexity_within_half_a_percent("gemma3");
}

#[test]
fn qwen25_05b_perplexity_is_within_half_a_percent_of_llama_cpp() {
    perplexity_within_half_a_percent("qwen05");
}

#[test]
fn qwen25_15b_perplexity_is_within_half_a_percent_of_llama_cpp() {
    perplexity_within_half_a_percent("qwen15");
}

// Lavapipe would take most of an hour over these four; a real GPU runs them:
// `cargo test --release -p hangar-tests --test perplexity_llama_cpp -- --ignored on_the_gpu`.
#[test]
#[ignore = "real GPU: perplexity goldens on the GPU backend"]
fn perplexity_on_the_gpu_is_within_half_a_percent_of_llama_cpp_for_every_real_model() {
    for name in ["smollm2", "gemma3", "qwen05", "qwen15"] {
        perplexity_within_half_a_percent_on(name, gpu());
    }
}
