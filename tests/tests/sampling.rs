//! Seeded sampling through a real (tiny) model. Every token is drawn by the device sampler,
//! after the request's logit bias and penalties as edits of the logits: on the GPU backend by
//! `sample_topk.wgsl` (llama.cpp's top-k 40; only ids are read back), on the CPU backend and
//! wherever logits are on the host by its CPU twins. So a seed fixes the output, and asking for log-probabilities (which
//! reads the logits back and draws on the host) leaves the tokens as they were.
//!
//! On the GPU the twin and the kernel differ only in `exp`'s last bits, which could move a draw
//! lying within rounding of a boundary between tokens; the cases below don't.

use hangar_engine::backend::Backend;
use hangar_engine::cpu::CpuBackend;
use hangar_engine::generate::{GenerateOutput, GenerateParams};
use hangar_engine::sampling::SamplingParams;
use hangar_engine::Model;
use hangar_tests::gpu;

fn tiny_llama(backend: Box<dyn Backend>) -> Model {
    let path = hangar_tests::families::fixture_dir().join("tiny-llama-k-v256.Q4_K_M.gguf");
    Model::load(&path, &hangar_families::registry(), backend, |_, _| {}).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

/// llama.cpp's default sampling (temperature 0.8, top-k 40, top-p 0.95, min-p 0.05); odd seeds
/// add a logit bias and penalties.
fn params(seed: u64, logprobs: Option<usize>) -> GenerateParams {
    let mut sampling = SamplingParams { seed: Some(seed), ..SamplingParams::default() };
    if seed % 2 == 1 {
        (sampling.logit_bias, sampling.repetition_penalty, sampling.frequency_penalty) = (vec![(7, 1.5), (9, f32::NEG_INFINITY)], 1.2, 0.3);
    }
    GenerateParams { sampling, max_tokens: 16, min_tokens: 16, logprobs, ..GenerateParams::default() }
}

fn check(backend: impl Fn() -> Box<dyn Backend>) {
    let mut m = tiny_llama(backend());
    let mut gen = |p: &GenerateParams| -> GenerateOutput { m.session(64).expect("session").generate(&[1, 5, 9, 13], p, |_, _| true).expect("generate") };
    let mut outputs = std::collections::HashSet::new();
    for seed in 0..4 {
        let first = gen(&params(seed, None));
        assert_eq!((first.tokens.len(), first.seed), (16, seed));
        assert_eq!(gen(&params(seed, None)).tokens, first.tokens, "seed {seed} is not reproducible");
        let with_logprobs = gen(&params(seed, Some(2)));
        assert_eq!(with_logprobs.tokens, first.tokens, "seed {seed}: asking for log-probabilities changed the tokens");
        assert_eq!(with_logprobs.logprobs.len(), 16);
        if seed % 2 == 1 {
            assert!(!first.tokens.contains(&9), "seed {seed}: a banned token was drawn");
        }
        outputs.insert(first.tokens);
    }
    assert!(outputs.len() > 1, "different seeds should draw differently");
}

#[test]
fn seeded_sampling_on_the_cpu_is_reproducible_and_unchanged_by_logprobs() {
    check(|| Box::new(CpuBackend::new()));
}

#[test]
fn seeded_sampling_on_the_gpu_is_reproducible_and_unchanged_by_logprobs() {
    check(gpu);
}
