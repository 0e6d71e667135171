//! Issue 6's context-shift must-show on SmolLM2 (CPU; the oracle check also on the GPU): with shift on, a generation four times
//! the context runs to its token budget and stays on topic; with shift off it stops with
//! LENGTH at the context. The shifted cache is checked against an oracle: after a shift, the
//! next-token predictions over real text agree with a fresh prefill of the same kept tokens.

use hangar_engine::generate::{GenerateParams, StopReason};
use hangar_engine::graph::Logits;
use hangar_engine::sampling::SamplingParams;
use hangar_tests::{argmax, gpu, load_cpu, load_on};

const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const N_CTX: usize = 128;

const TEXT: &str = "The history of astronomy is the study of how people have understood the sky. Early \
observers tracked the motions of the Sun, the Moon and the planets, and used them to keep calendars. \
Later, astronomers built instruments to measure the positions of stars with greater accuracy, and the \
telescope revealed moons around Jupiter and phases of Venus. These observations supported the idea that \
the Earth moves around the Sun. In the following centuries, astronomers catalogued thousands of stars, \
discovered new planets, and learned to measure the distances to nearby stars using parallax. The study \
of light from stars showed what they are made of, and how hot they are. Photography allowed faint \
objects to be recorded over long exposures, and large surveys found that many fuzzy patches in the sky \
were distant galaxies. Measurements of their spectra showed that most galaxies are moving away from us, \
which led to the theory that the universe is expanding. Radio telescopes later detected the faint glow \
left over from the early universe, and space telescopes now observe in wavelengths that the atmosphere \
blocks, from infrared to X-rays.";

#[test]
fn with_shift_a_generation_four_times_the_context_runs_on_and_without_it_stops_with_length() {
    let mut model = load_cpu(MODEL);
    let prompt = model.tokenizer.encode("Here is a long story about a lighthouse keeper and the sea.", true, false).expect("tokenize");
    let params = |shift: Option<usize>| GenerateParams {
        sampling: SamplingParams { temperature: 0.7, seed: Some(3), ..SamplingParams::default() },
        max_tokens: 4 * N_CTX,
        min_tokens: 4 * N_CTX,
        context_shift: shift,
        logprobs: Some(0),
        ..GenerateParams::default()
    };
    let off = model.session(N_CTX).expect("session").generate(&prompt, &params(None), |_, _| true).expect("no shift");
    assert_eq!(off.stop_reason, StopReason::Length);
    assert_eq!(prompt.len() + off.tokens.len(), N_CTX + 1, "without shift generation stops at the context");

    let on = model.session(N_CTX).expect("session").generate(&prompt, &params(Some(prompt.len())), |_, _| true).expect("shift");
    assert_eq!(on.stop_reason, StopReason::Length);
    assert_eq!(on.tokens.len(), 4 * N_CTX, "with shift the whole budget is generated");
    // Coherent: the model stays as confident in its own text after the shifts as before them
    // (a broken cache shows up as a collapse of the chosen tokens' log-probabilities).
    let mean = |lp: &[hangar_engine::logprobs::TokenLogprobs]| lp.iter().map(|l| l.logprob as f64).sum::<f64>() / lp.len() as f64;
    let (before, after) = (mean(&on.logprobs[..N_CTX - prompt.len()]), mean(&on.logprobs[3 * N_CTX..]));
    eprintln!("mean log-probability of chosen tokens: {before:.3} before the first shift, {after:.3} in the last context");
    assert!(after > before - 0.5, "generation degraded after shifting: {before:.3} -> {after:.3}");
    let distinct = on.tokens[3 * N_CTX..].iter().collect::<std::collections::HashSet<_>>().len();
    assert!(distinct > N_CTX / 4, "the last context is a loop: {distinct} distinct tokens in {N_CTX}");
}

#[test]
fn after_a_shift_predictions_agree_with_a_fresh_prefill_of_the_kept_tokens() {
    shift_agrees_with_a_fresh_prefill(load_cpu(MODEL));
}

#[test]
fn after_a_shift_on_the_gpu_predictions_agree_with_a_fresh_prefill_of_the_kept_tokens() {
    // The GPU reads each layer back and shifts it with the CPU cache's code (kernels/src/kv_ops.rs).
    shift_agrees_with_a_fresh_prefill(load_on(MODEL, gpu()));
}

fn shift_agrees_with_a_fresh_prefill(mut model: hangar_engine::model::Model) {
    let text = model.tokenizer.encode(TEXT, true, false).expect("tokenize");
    assert!(text.len() >= N_CTX + 32, "the text is too short ({} tokens)", text.len());
    let (keep, discard) = (8, 48);
    let (head, tail) = text.split_at(N_CTX);
    let probe = &tail[..32];

    let mut shifted = model.session(N_CTX).expect("session");
    shifted.eval(head, 64, Logits::Last).expect("fill the context");
    shifted.shift(keep, discard).expect("shift");
    let kept: Vec<u32> = shifted.history().to_vec();
    assert_eq!(kept.len(), N_CTX - discard);
    let mut got = Vec::new();
    for &t in probe {
        got.push(argmax(&shifted.eval(&[t], 1, Logits::Last).expect("decode")));
    }
    drop(shifted);

    let mut fresh = model.session(N_CTX).expect("session");
    fresh.eval(&kept, 64, Logits::Last).expect("prefill the kept tokens");
    let mut want = Vec::new();
    for &t in probe {
        want.push(argmax(&fresh.eval(&[t], 1, Logits::Last).expect("decode")));
    }
    let agree = got.iter().zip(&want).filter(|(a, b)| a == b).count();
    eprintln!("top-1 agreement after a shift: {agree}/{}", probe.len());
    assert!(agree * 4 >= probe.len() * 3, "only {agree} of {} next-token predictions agree with a fresh prefill", probe.len());
}
