//! Batch invariance (issue 6): seeded sequences generating concurrently through one model's
//! scheduler produce exactly the tokens each produces alone, on the CPU backend (which batches
//! decode rows into one pass over the weights) and on the GPU backend (lavapipe in CI).
//!
//! "Alone" is a plain `Session` on a second copy of the model, so the reference never passes
//! through the scheduler under test.

use std::path::Path;

use hangar_engine::backend::Backend;
use hangar_engine::batch::Scheduler;
use hangar_engine::constraint::Hooks;
use hangar_engine::cpu::CpuBackend;
use hangar_engine::generate::{GenerateOutput, GenerateParams, SampleOnDevice};
use hangar_engine::sampling::SamplingParams;
use hangar_engine::Model;
use hangar_tests::gpu;

fn load(path: &Path, backend: Box<dyn Backend>) -> Model {
    Model::load(path, &hangar_families::registry(), backend, |_, _| {}).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

/// Request `i`: its own prompt length, seed and sampling settings, so rows of one step sit at
/// different positions and sample differently. Every fourth is greedy; every fifth has a
/// repetition penalty (edits of its logits from its own history); every other one asks for
/// log-probabilities (its logits are read back), the rest are picked on the device (top-k 0
/// by the general kernel, which requests 9, 21, ... are sent to; top-k 40 and 8 by the
/// two-stage one), so steps mix them all.
fn request(i: usize, n_vocab: usize, max_tokens: usize) -> (Vec<u32>, GenerateParams) {
    let len = 3 + (i * 5) % 17;
    let prompt = (0..len).map(|j| (1 + i * 7 + j * 13) as u32 % (n_vocab as u32 - 1) + 1).collect();
    let sampling = SamplingParams {
        temperature: if i % 4 == 3 { 0.0 } else { 0.7 + 0.1 * (i % 3) as f32 },
        top_k: [0, 40, 8][i % 3],
        top_p: [1.0, 0.95, 0.8][i % 3],
        seed: Some(1000 + i as u64),
        repetition_penalty: if i % 5 == 0 { 1.1 } else { 1.0 },
        ..SamplingParams::default()
    };
    // End-of-generation tokens are ignored so every sequence runs its full length.
    let logprobs = (i % 2 == 0).then_some(4);
    let sample_on_device = if i % 6 == 3 { SampleOnDevice::Always } else { SampleOnDevice::Auto };
    let params = GenerateParams { sampling, max_tokens, min_tokens: max_tokens, prefill_chunk: 8, logprobs, sample_on_device, ..GenerateParams::default() };
    (prompt, params)
}

/// Runs `n` requests alone on `alone`, then all at once through a scheduler over `batched`,
/// and asserts identical tokens and, where asked for, bit-identical log-probabilities (tokens
/// alone would rarely notice a rounding difference; the log-probabilities of the top
/// alternatives do). Returns the largest batch the scheduler decoded.
fn assert_batch_invariant(mut alone: Model, batched: Model, n: usize, max_tokens: usize, n_ctx: usize) -> u64 {
    let n_vocab = alone.spec.hparams.n_vocab.min(alone.tokenizer.n_vocab());
    let want: Vec<GenerateOutput> = (0..n)
        .map(|i| {
            let (prompt, params) = request(i, n_vocab, max_tokens);
            let mut s = alone.session(n_ctx).expect("session");
            s.generate(&prompt, &params, |_, _| true).expect("alone")
        })
        .collect();
    let (sched, thread) = Scheduler::spawn("batching-test", batched, None).expect("scheduler");
    let got: Vec<GenerateOutput> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let sched = sched.clone();
                scope.spawn(move || {
                    let (prompt, params) = request(i, n_vocab, max_tokens);
                    let mut s = sched.session(n_ctx).expect("session");
                    s.generate_steps_hooked(&prompt, &params, Hooks::default(), |_| true).expect("batched")
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("sequence thread")).collect()
    });
    let counts = sched.counts();
    drop(sched);
    thread.join();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.tokens.len(), max_tokens, "request {i} stopped early");
        assert_eq!(g.tokens, w.tokens, "request {i}: batched tokens differ from alone");
        assert_eq!(g.logprobs, w.logprobs, "request {i}: batched log-probabilities differ from alone");
    }
    assert!(counts.max_batch > 1, "the scheduler never batched: {counts:?}");
    eprintln!("{n} sequences x {max_tokens} tokens: {counts:?}");
    counts.max_batch
}

#[test]
fn thirty_two_seeded_sequences_batched_on_the_cpu_match_each_alone() {
    let path = hangar_tests::model_path("SmolLM2-135M-Instruct.Q4_1.gguf");
    let max_batch = assert_batch_invariant(load(&path, Box::new(CpuBackend::new())), load(&path, Box::new(CpuBackend::new())), 32, 16, 256);
    assert!(max_batch >= 16, "32 concurrent sequences never shared a step beyond {max_batch}");
}

#[test]
fn batched_sequences_match_alone_for_every_tiny_family_on_the_cpu() {
    let dir = hangar_tests::families::fixture_dir();
    for fam in ["llama", "gemma2", "gemma3", "phi2", "qwen2", "falcon", "gptneox"] {
        let path = dir.join(format!("tiny-{fam}-k-v256.Q4_K_M.gguf"));
        eprintln!("{fam}");
        assert_batch_invariant(load(&path, Box::new(CpuBackend::new())), load(&path, Box::new(CpuBackend::new())), 8, 12, 128);
    }
}

#[test]
fn batched_sequences_match_alone_for_every_tiny_family_on_the_gpu() {
    // One batched submission per step: every family's graph through the GPU's row-batched
    // matvecs, per-row attention and row gather.
    let dir = hangar_tests::families::fixture_dir();
    for fam in ["llama", "gemma2", "gemma3", "phi2", "qwen2", "falcon", "gptneox"] {
        let path = dir.join(format!("tiny-{fam}-k-v256.Q4_K_M.gguf"));
        eprintln!("{fam}");
        let max_batch = assert_batch_invariant(load(&path, gpu()), load(&path, gpu()), 8, 12, 128);
        assert!(max_batch > 1);
    }
}

#[test]
fn thirty_two_seeded_sequences_batched_on_the_gpu_match_each_alone() {
    let path = hangar_tests::families::fixture_dir().join("tiny-llama-k-v256.Q4_K_M.gguf");
    assert_batch_invariant(load(&path, gpu()), load(&path, gpu()), 32, 12, 128);
}

/// Under int4 the newest positions are read from their exact copies (`kv::Ring`), which a
/// batched step must not disturb: 40 tokens each, so the contexts outgrow the 32-position window.
#[test]
fn int4_sequences_batched_match_each_alone_on_cpu_and_gpu() {
    let path = hangar_tests::families::fixture_dir().join("tiny-llama-k-v256.Q4_K_M.gguf");
    let int4 = |backend: Box<dyn Backend>| {
        let mut m = load(&path, backend);
        m.set_kv_policy(hangar_engine::kv::KvPolicy::Int4Hadamard).expect("int4h");
        m
    };
    assert_batch_invariant(int4(Box::new(CpuBackend::new())), int4(Box::new(CpuBackend::new())), 32, 40, 128);
    assert_batch_invariant(int4(gpu()), int4(gpu()), 32, 40, 128);
}

/// The real models on a real GPU (lavapipe would take hours): 32 seeded sequences of 32 tokens
/// each, batched through the scheduler, against each alone.
/// `cargo test --release -p hangar-tests --test batching -- --ignored real_models`
#[test]
#[ignore = "real GPU: real models batched on the GPU backend"]
fn thirty_two_seeded_sequences_of_real_models_batched_on_the_gpu_match_each_alone() {
    for file in ["SmolLM2-135M-Instruct.Q4_1.gguf", "gemma-3-270m-q4_k_m.gguf", "qwen2.5-coder-0.5b-instruct.Q4_K_M-mix.gguf"] {
        let path = hangar_tests::model_path(file);
        eprintln!("{file}");
        let max_batch = assert_batch_invariant(load(&path, gpu()), load(&path, gpu()), 32, 32, 256);
        assert!(max_batch >= 16, "{file}: 32 concurrent sequences never shared a step beyond {max_batch}");
    }
}

/// A system prompt of at least `n` tokens of English prose.
fn system_prompt(model: &Model, n: usize) -> Vec<u32> {
    let para = "You are a careful assistant. Answer questions about the history of science, citing the people, places and dates involved, and say plainly when something is not known. ";
    let mut toks = model.tokenizer.encode(&para.repeat(1 + n / 20), true, false).expect("tokenize");
    toks.truncate(n);
    assert_eq!(toks.len(), n, "the system prompt is shorter than {n} tokens");
    toks
}

#[test]
fn sixteen_requests_sharing_a_1k_system_prompt_prefill_it_once() {
    shared_prefix_case(|| Box::new(CpuBackend::new()), &[0, 5, 10, 15]);
}

#[test]
fn sixteen_requests_sharing_a_1k_system_prompt_prefill_it_once_on_the_gpu() {
    // The prefix's KV copied between caches on the device (kernels/src/kv_ops.rs).
    shared_prefix_case(gpu, &[0, 15]);
}

fn shared_prefix_case(backend: impl Fn() -> Box<dyn hangar_engine::backend::Backend>, checked: &[usize]) {
    const N: usize = 16;
    const SHARED: usize = 1024;
    const CHUNK: usize = 256;
    let path = hangar_tests::model_path("SmolLM2-135M-Instruct.Q4_1.gguf");
    let mut alone = load(&path, backend());
    let system = system_prompt(&alone, SHARED);
    let prompts: Vec<Vec<u32>> = (0..N)
        .map(|i| {
            let q = format!("\nQuestion {i}: who first measured the speed of light{}?", "?".repeat(i % 3));
            let mut p = system.clone();
            p.extend(alone.tokenizer.encode(&q, false, false).expect("tokenize"));
            p
        })
        .collect();
    let params = |i: usize| GenerateParams {
        sampling: SamplingParams { temperature: 0.8, seed: Some(i as u64), ..SamplingParams::default() },
        max_tokens: 4,
        min_tokens: 4,
        prefill_chunk: CHUNK,
        logprobs: Some(2),
        ..GenerateParams::default()
    };
    // Alone references for a spread of the requests (each costs a full 1k-token prefill);
    // whichever request computed the prefix, the others copied it.
    let want: Vec<GenerateOutput> =
        checked.iter().map(|&i| alone.session(2048).expect("session").generate(&prompts[i], &params(i), |_, _| true).expect("alone")).collect();

    let (sched, thread) = Scheduler::spawn("prefix-test", load(&path, backend()), None).expect("scheduler");
    let got: Vec<GenerateOutput> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..N)
            .map(|i| {
                let (sched, prompt, params) = (sched.clone(), &prompts[i], params(i));
                scope.spawn(move || sched.session(2048).expect("session").generate_steps_hooked(prompt, &params, Hooks::default(), |_| true).expect("batched"))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("sequence thread")).collect()
    });
    let counts = sched.counts();
    drop(sched);
    thread.join();
    for (&i, w) in checked.iter().zip(&want) {
        let g = &got[i];
        assert_eq!((&g.tokens, &g.logprobs), (&w.tokens, &w.logprobs), "request {i}: a reused prefix changed the output");
    }
    // The shared 1024 tokens are four whole chunks: computed by one request, copied by 15.
    let suffixes: usize = prompts.iter().map(|p| p.len() - SHARED).sum();
    eprintln!("{counts:?}");
    assert_eq!(counts.reused_tokens, ((N - 1) * SHARED) as u64, "{counts:?}");
    assert_eq!(counts.prefill_tokens, (SHARED + suffixes) as u64, "{counts:?}");
}

/// A hook that bans a rotating set of tokens, as a policy mask or a constraint would: on the
/// GPU the mask and the greedy pick run on the device (only the id is read back).
struct BanEvery {
    step: u32,
    every: u32,
}

impl hangar_engine::constraint::LogitsHook for BanEvery {
    fn mask(&mut self, logits: &mut [f32]) -> Result<(), hangar_engine::constraint::HookError> {
        for (i, l) in logits.iter_mut().enumerate() {
            if (i as u32 + self.step) % self.every == 0 {
                *l = f32::NEG_INFINITY;
            }
        }
        Ok(())
    }
    fn accept(&mut self, _token: u32) -> Result<(), hangar_engine::constraint::HookError> {
        self.step += 1;
        Ok(())
    }
    fn banned_bits(&mut self, n_vocab: usize) -> Result<Option<Vec<u32>>, hangar_engine::constraint::HookError> {
        let mut bits = vec![0u32; n_vocab.div_ceil(32)];
        for i in (0..n_vocab as u32).filter(|i| (i + self.step) % self.every == 0) {
            bits[i as usize / 32] |= 1 << (i % 32);
        }
        Ok(Some(bits))
    }
}

/// Greedy and sampled generations with a masking hook, alone and batched: same tokens, and
/// every token respects the mask of its step.
fn assert_masked_batch_invariant(mut alone: Model, batched: Model, n: usize) {
    let n_vocab = alone.spec.hparams.n_vocab.min(alone.tokenizer.n_vocab());
    let run = |i: usize, gen: &mut dyn FnMut(&[u32], &GenerateParams, Hooks<'_>) -> GenerateOutput| {
        let (prompt, mut params) = request(i, n_vocab, 10);
        params.sampling = SamplingParams { temperature: if i % 2 == 0 { 0.0 } else { 0.9 }, seed: Some(i as u64), ..SamplingParams::default() };
        params.logprobs = None;
        let mut ban = BanEvery { step: 0, every: 2 + i as u32 % 3 };
        let mut hooks = Hooks::default();
        hooks.logits.push(&mut ban);
        let out = gen(&prompt, &params, hooks);
        for (step, &t) in out.tokens.iter().enumerate() {
            assert_ne!((t + step as u32) % (2 + i as u32 % 3), 0, "request {i}: token {t} at step {step} was banned");
        }
        out.tokens
    };
    let want: Vec<Vec<u32>> = (0..n)
        .map(|i| run(i, &mut |p, params, hooks| alone.session(128).expect("session").generate_hooked(p, params, hooks, |_, _| true).expect("alone")))
        .collect();
    let (sched, thread) = Scheduler::spawn("masked-test", batched, None).expect("scheduler");
    let got: Vec<Vec<u32>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let sched = sched.clone();
                scope.spawn(move || run(i, &mut |p, params, hooks| sched.session(128).expect("session").generate_steps_hooked(p, params, hooks, |_| true).expect("batched")))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("sequence thread")).collect()
    });
    drop(sched);
    thread.join();
    assert_eq!(got, want, "masked generations differ batched");
}

#[test]
fn masked_greedy_and_sampled_sequences_batched_match_alone_on_cpu_and_gpu() {
    let path = hangar_tests::families::fixture_dir().join("tiny-llama-k-v256.Q4_K_M.gguf");
    assert_masked_batch_invariant(load(&path, Box::new(CpuBackend::new())), load(&path, Box::new(CpuBackend::new())), 8);
    assert_masked_batch_invariant(load(&path, gpu()), load(&path, gpu()), 8);
}
