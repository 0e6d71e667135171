//! `hangar perplexity` and `hangar generate` on every real model, against llama.cpp's
//! perplexity procedure on the F32 twin (goldens in tests/golden/perplexity/, made by
//! scripts/gen_ppl_golden.py). CI runs the CLI on the CPU backend; the ignored variant runs the
//! engine on the GPU backend where a real GPU is.

mod tools;

use std::process::Command;

use hangar_engine::backend::Backend;
use hangar_engine::gguf::GgufFile;
use hangar_engine::tokenizer::Tokenizer;
use hangar_tests::{golden, gpu, load_on, model_path};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/ppl_corpus.txt");

fn check_against_golden(name: &str, ppl: f64, n_scored: u64, how: &str) {
    let g = golden(&format!("perplexity/{name}.json"));
    let want = g["ppl"].as_f64().expect("ppl");
    let rel = (ppl - want).abs() / want;
    eprintln!("{name} perplexity ({how}): ours {ppl:.4}, llama.cpp {want:.4} ({:.3}% apart, {n_scored} tokens)", rel * 100.0);
    assert_eq!(n_scored, g["n_tokens_scored"].as_u64().expect("n_tokens_scored"), "{name}: scored tokens");
    assert!(rel <= 0.005, "{name}: perplexity {ppl:.4} vs {want:.4}");
}

/// The golden's corpus tokenizes as llama.cpp's did (the windows then hold the same tokens).
fn assert_same_tokens(name: &str) {
    let g = golden(&format!("perplexity/{name}.json"));
    let file = GgufFile::open(model_path(g["model"]["file"].as_str().expect("model.file"))).expect("open model");
    let tokenizer = Tokenizer::from_gguf(&file).expect("tokenizer");
    let text = std::fs::read_to_string(CORPUS).expect("corpus");
    let tokens = tokenizer.encode(&text, true, false).expect("encode");
    assert_eq!(tokens.len() as u64, g["n_tokens"].as_u64().expect("n_tokens"), "{name}: corpus tokenizes differently");
}

fn hangar_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new(tools::hangar_bin()).args(args).output().expect("run hangar");
    assert!(out.status.success(), "hangar {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("hangar {args:?} printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// `hangar perplexity` with the golden's window size and count, then `hangar generate`.
fn perplexity_within_half_a_percent(name: &str) {
    assert_same_tokens(name);
    let g = golden(&format!("perplexity/{name}.json"));
    let model = model_path(g["model"]["file"].as_str().expect("model.file"));
    let model = model.to_str().expect("utf-8 path");
    let (n_ctx, n_chunks) = (g["n_ctx"].as_u64().expect("n_ctx").to_string(), g["n_chunks"].as_u64().expect("n_chunks").to_string());
    let out = hangar_json(&["perplexity", "--backend", "cpu", "--model", model, "--file", CORPUS, "--ctx", &n_ctx, "--chunks", &n_chunks, "--json"]);
    check_against_golden(name, out["ppl"].as_f64().expect("ppl"), out["n_tokens"].as_u64().expect("n_tokens"), "hangar perplexity, cpu");

    let out = hangar_json(&["generate", "--backend", "cpu", "--model", model, "--prompt", "The capital of France is", "--max-tokens", "8", "--json"]);
    let n = out["tokens"].as_array().expect("tokens").len();
    eprintln!("{name}: hangar generate -> {:?}", out["text"]);
    assert!(n == 8 || out["stop_reason"] == "eos", "{name}: {n} tokens, stop {}", out["stop_reason"]);
    assert!(!out["text"].as_str().expect("text").trim().is_empty(), "{name}: no text");
}

/// The same goldens through the engine on another backend (the GPU, for the ignored variant).
fn perplexity_within_half_a_percent_on(name: &str, backend: Box<dyn Backend>) {
    let g = golden(&format!("perplexity/{name}.json"));
    let mut model = load_on(g["model"]["file"].as_str().expect("model.file"), backend);
    let text = std::fs::read_to_string(CORPUS).expect("corpus");
    let tokens = model.tokenizer.encode(&text, true, false).expect("encode");
    let n_ctx = g["n_ctx"].as_u64().expect("n_ctx") as usize;
    // A golden made with --max-chunks scored only its first n_chunks windows.
    let n_chunks = g["n_chunks"].as_u64().expect("n_chunks") as usize;
    let scored = &tokens[..(n_chunks * n_ctx).min(tokens.len())];
    let out = hangar_engine::perplexity::perplexity(&mut model, scored, n_ctx, 512, |_, _| {}).expect("perplexity");
    check_against_golden(name, out.ppl, out.n_tokens as u64, model.backend_name());
}

#[test]
fn smollm2_cli_perplexity_is_within_half_a_percent_of_llama_cpp_and_generate_runs() {
    perplexity_within_half_a_percent("smollm2");
}

#[test]
fn gemma3_cli_perplexity_is_within_half_a_percent_of_llama_cpp_and_generate_runs() {
    perplexity_within_half_a_percent("gemma3");
}

#[test]
fn qwen25_05b_cli_perplexity_is_within_half_a_percent_of_llama_cpp_and_generate_runs() {
    perplexity_within_half_a_percent("qwen05");
}

#[test]
fn qwen25_15b_cli_perplexity_is_within_half_a_percent_of_llama_cpp_and_generate_runs() {
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
