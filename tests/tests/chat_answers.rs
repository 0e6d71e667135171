//! The instruction-tuned Qwen models answer chat questions sensibly through their own chat
//! template (greedy, stopping at end-of-turn). Their exact greedy text is checked against
//! llama.cpp in parity_llama_cpp.rs; this checks that the answers carry the facts asked for.

use hangar_engine::chat::ChatMessage;
use hangar_engine::sampling::SamplingParams;
use hangar_engine::{GenerateParams, Model, StopReason};
use hangar_tests::load_cpu;

fn answer(model: &mut Model, question: &str) -> String {
    let prompt = model.encode_chat(&[ChatMessage::new("user", question)]).expect("chat template");
    let params = GenerateParams {
        sampling: SamplingParams { temperature: 0.0, seed: Some(0), ..SamplingParams::default() },
        max_tokens: 48,
        ..GenerateParams::default()
    };
    let out = model.session(512).expect("session").generate(&prompt, &params, |_, _| true).expect("generate");
    eprintln!("Q: {question}\nA: {} ({:?})", out.text, out.stop_reason);
    assert_ne!(out.stop_reason, StopReason::Cancelled);
    out.text
}

fn answers_sensibly(file: &str) {
    let mut model = load_cpu(file);
    let a = answer(&mut model, "What is the capital of France? Answer in one sentence.");
    assert!(a.contains("Paris"), "capital of France: {a:?}");
    let a = answer(&mut model, "What is 17 + 25? Reply with just the number.");
    assert!(a.contains("42"), "17 + 25: {a:?}");
    let a = answer(&mut model, "Write a Python function that returns the square of x. Only the code.");
    assert!(a.contains("def ") && a.contains("x"), "square function: {a:?}");
}

#[test]
fn qwen25_05b_answers_chat_questions_sensibly() {
    answers_sensibly("qwen2.5-coder-0.5b-instruct.Q4_K_M-mix.gguf");
}

#[test]
fn qwen25_15b_answers_chat_questions_sensibly() {
    answers_sensibly("qwen2.5-coder-1.5b-instruct.Q4_K_M.gguf");
}
