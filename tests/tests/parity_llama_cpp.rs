//! The engine, running the original quantized SmolLM2-135M Q4_1 file on the CPU backend,
//! against llama.cpp running its all-F32 dequant twin (goldens in tests/golden/parity/).

use hangar_engine::graph::Logits;
use hangar_tests::{argmax, golden, greedy, ids, load_cpu};

/// The bars.
const MIN_TOP1_AGREEMENT: f64 = 0.995;
const MIN_GREEDY_MATCH: f64 = 0.90;
/// Logit differences come only from f32 summation order (dequantization is exact), so they stay
/// far below the logit spread (~8); this bound catches real bugs, which show up at O(1).
const MAX_ABS_DLOGIT: f64 = 0.05;

#[test]
fn smollm2_q4_1_matches_llama_cpp_f32_twin() {
    let g = golden("parity/smollm2.json");
    let mut model = load_cpu(g["model"]["file"].as_str().expect("model.file"));
    let n_vocab = model.spec.hparams.n_vocab;
    let n_ctx = g["oracle"]["n_ctx"].as_u64().expect("n_ctx") as usize;
    let (mut agree, mut total) = (0usize, 0usize);
    let (mut max_d, mut sum_d, mut n_d) = (0f64, 0f64, 0usize);
    let (mut greedy_same, mut n_prompts) = (0usize, 0usize);
    for p in g["prompts"].as_array().expect("prompts") {
        let name = p["name"].as_str().unwrap_or("?");
        let prompt = ids(&p["prompt_ids"]);
        let text = p["text"].as_str().expect("text");
        let parse_special = p["parse_special"].as_bool().unwrap_or(false);
        let ours = model.tokenizer.encode(text, model.tokenizer.add_bos(), parse_special).expect("encode");
        assert_eq!(ours, prompt, "prompt {name}: token ids differ from llama.cpp's");

        let cont = ids(&p["continuation_ids"]);
        let all: Vec<u32> = prompt.iter().chain(&cont).copied().collect();
        let logits = model.session(n_ctx).expect("session").eval(&all, 512, Logits::All).expect("eval");
        let tf_argmax = ids(&p["tf_argmax"]);
        for (i, row) in logits.chunks(n_vocab).enumerate() {
            total += 1;
            agree += (argmax(row) as u32 == tf_argmax[i]) as usize;
            for pair in p["tf_top"][i].as_array().expect("tf_top row") {
                let id = pair[0].as_u64().expect("id") as usize;
                let want = pair[1].as_f64().expect("logit");
                let d = (row[id] as f64 - want).abs();
                max_d = max_d.max(d);
                sum_d += d;
                n_d += 1;
            }
        }
        let got = greedy(&mut model, &prompt, cont.len(), n_ctx);
        n_prompts += 1;
        if got == cont {
            greedy_same += 1;
        } else {
            let at = got.iter().zip(&cont).position(|(a, b)| a != b).unwrap_or(0);
            eprintln!("prompt {name}: greedy diverges at step {at}");
        }
    }
    let top1 = agree as f64 / total as f64;
    let greedy_rate = greedy_same as f64 / n_prompts as f64;
    eprintln!(
        "SmolLM2 Q4_1 vs llama.cpp f32 twin: top-1 {agree}/{total} = {top1:.4}, greedy {greedy_same}/{n_prompts}, |dlogit| max {max_d:.2e} mean {:.2e}",
        sum_d / n_d as f64
    );
    assert!(n_prompts >= 20, "need at least 20 prompts, golden has {n_prompts}");
    assert!(top1 >= MIN_TOP1_AGREEMENT, "top-1 agreement {top1:.4} < {MIN_TOP1_AGREEMENT}");
    assert!(greedy_rate >= MIN_GREEDY_MATCH, "greedy match {greedy_rate:.3} < {MIN_GREEDY_MATCH}");
    assert!(max_d <= MAX_ABS_DLOGIT, "max |dlogit| {max_d:.3e} > {MAX_ABS_DLOGIT}");
}

#[test]
fn smollm2_perplexity_is_within_half_a_percent_of_llama_cpp() {
    let g = golden("perplexity/smollm2.json");
    let mut model = load_cpu(g["model"]["file"].as_str().expect("model.file"));
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/data/ppl_corpus.txt")).expect("corpus");
    let tokens = model.tokenizer.encode(&text, true, false).expect("encode");
    assert_eq!(tokens.len() as u64, g["n_tokens"].as_u64().expect("n_tokens"), "corpus tokenizes differently");
    let n_ctx = g["n_ctx"].as_u64().expect("n_ctx") as usize;
    let out = hangar_engine::perplexity::perplexity(&mut model, &tokens, n_ctx, 512, |_, _| {}).expect("perplexity");
    let want = g["ppl"].as_f64().expect("ppl");
    let rel = (out.ppl - want).abs() / want;
    eprintln!("SmolLM2 perplexity: ours {:.4}, llama.cpp {want:.4} ({:.3}% apart, {} tokens)", out.ppl, rel * 100.0, out.n_tokens);
    assert_eq!(out.n_tokens as u64, g["n_tokens_scored"].as_u64().expect("n_tokens_scored"));
    assert!(rel <= 0.005, "perplexity {:.4} vs {want:.4}", out.ppl);
}
