//! `perplexity` on real models against llama.cpp's perplexity procedure on the F32 twin
//! (goldens in tests/golden/perplexity/, made by scripts/gen_ppl_golden.py).

use hangar_tests::{golden, load_cpu};

fn perplexity_within_half_a_percent(name: &str) {
    let g = golden(&format!("perplexity/{name}.json"));
    let mut model = load_cpu(g["model"]["file"].as_str().expect("model.file"));
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
    eprintln!("{name} perplexity: ours {:.4}, llama.cpp {want:.4} ({:.3}% apart, {} tokens)", out.ppl, rel * 100.0, out.n_tokens);
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
