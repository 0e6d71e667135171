//! Long-context retrieval under a quantized KV cache: a pass key hidden in ~2.2k tokens of
//! filler (the passkey test of Mohtashami & Jaggi, 2023) at three depths must come back in
//! the answer with the int4 cache, and with f32 (so a failure is the cache's, not the model's).
//! Qwen2.5-Coder-0.5B-Instruct through its chat template, greedy, on the CPU backend.

use hangar_engine::chat::ChatMessage;
use hangar_engine::kv::KvPolicy;
use hangar_engine::sampling::SamplingParams;
use hangar_engine::{GenerateParams, Model};
use hangar_tests::load_cpu;

const MODEL: &str = "qwen2.5-coder-0.5b-instruct.Q4_K_M-mix.gguf";
const FILLER: &str = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ";
/// Filler sentences around the needle: about 2.2k tokens of prompt in all.
const N_FILLER: usize = 100;

/// The prompt with the needle after `depth` of the filler, and the key it carries.
fn haystack(depth: f64, key: u32) -> String {
    let at = (N_FILLER as f64 * depth).round() as usize;
    let mut text = String::from("There is a pass key hidden inside a lot of irrelevant text. Find it and memorize it.\n\n");
    for i in 0..N_FILLER {
        if i == at {
            text.push_str(&format!("The pass key is {key}. Remember it. {key} is the pass key. "));
        }
        text.push_str(FILLER);
    }
    text.push_str("\n\nWhat is the pass key? Answer with the number only.");
    text
}

fn answer(model: &mut Model, depth: f64, key: u32) -> (String, usize) {
    let prompt = model.encode_chat(&[ChatMessage::new("user", &haystack(depth, key))]).expect("chat template");
    let params = GenerateParams {
        sampling: SamplingParams { temperature: 0.0, seed: Some(0), ..SamplingParams::default() },
        max_tokens: 12,
        ..GenerateParams::default()
    };
    let n_prompt = prompt.len();
    let out = model.session(n_prompt + 16).expect("session").generate(&prompt, &params, |_, _| true).expect("generate");
    (out.text, n_prompt)
}

#[test]
fn int4_cache_retrieves_a_pass_key_at_three_depths_in_a_2k_context() {
    let mut model = load_cpu(MODEL);
    for policy in [KvPolicy::F32, KvPolicy::Int4Hadamard] {
        model.set_kv_policy(policy).expect("policy");
        for (depth, key) in [(0.1, 68_213u32), (0.5, 40_971), (0.9, 93_517)] {
            let (text, n_prompt) = answer(&mut model, depth, key);
            eprintln!("{policy} depth {depth}: {n_prompt} prompt tokens -> {text:?}");
            assert!(n_prompt >= 2048, "the haystack is only {n_prompt} tokens");
            assert!(text.contains(&key.to_string()), "{policy} at depth {depth}: answered {text:?}, key {key}");
        }
    }
}
