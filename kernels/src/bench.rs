//! Prefill and decode throughput of a model on the shared device, for `hangar bench` (the
//! subcommand lives in services), measured as llama-bench does: pp = a synthetic prompt of
//! `n_prompt` tokens prefilled in chunks; tg = `n_gen` tokens decoded greedily on a fresh
//! sequence, argmax on the device, one submission per token.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use hangar_engine::backend::Backend;
use hangar_engine::family::Registry;
use hangar_engine::gguf::GgufFile;
use hangar_engine::graph::{forward_act, Logits, Weights};
use hangar_engine::spec::ModelSpec;

use crate::profile::ProfileLine;
use crate::{Gpu, GpuBackend};

#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub n_prompt: usize,
    pub n_gen: usize,
    /// Prefill chunk (tokens per forward pass).
    pub chunk: usize,
    /// Measured repetitions after one warm-up.
    pub reps: usize,
    /// Also time every dispatch of one prefill and a few decode steps (needs HANGAR_PROFILE).
    pub profile: bool,
    /// How the benchmarked sequences store their KV cache.
    pub kv: hangar_engine::kv::KvPolicy,
}

#[derive(Clone, Debug)]
pub struct BenchReport {
    pub adapter: String,
    pub load_s: f64,
    pub n_prompt: usize,
    pub n_gen: usize,
    /// Best of the repetitions.
    pub prefill_s: f64,
    pub decode_s: f64,
    pub prefill_s_mean: f64,
    pub decode_s_mean: f64,
    /// Bytes of weight matrices one decode step reads (the file's sizes, as llama.cpp counts).
    pub weight_bytes_per_token: u64,
    /// Command buffers submitted per decoded token.
    pub submissions_per_token: f64,
    /// Host time per decoded token spent recording and submitting (overlapped with the device).
    pub record_us_per_token: f64,
    pub profile_prefill: Vec<ProfileLine>,
    pub profile_decode: Vec<ProfileLine>,
}

impl BenchReport {
    pub fn prefill_tok_s(&self) -> f64 {
        self.n_prompt as f64 / self.prefill_s.max(1e-9)
    }
    pub fn decode_tok_s(&self) -> f64 {
        self.n_gen as f64 / self.decode_s.max(1e-9)
    }
    pub fn prefill_tok_s_mean(&self) -> f64 {
        self.n_prompt as f64 / self.prefill_s_mean.max(1e-9)
    }
    pub fn decode_tok_s_mean(&self) -> f64 {
        self.n_gen as f64 / self.decode_s_mean.max(1e-9)
    }
    /// Weight-read bandwidth that the best decode speed implies.
    pub fn decode_gb_s(&self) -> f64 {
        self.weight_bytes_per_token as f64 * self.decode_tok_s() / 1e9
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Gpu(#[from] crate::GpuError),
    #[error(transparent)]
    Gguf(#[from] hangar_engine::gguf::GgufError),
    #[error(transparent)]
    Family(#[from] hangar_engine::family::FamilyError),
    #[error(transparent)]
    Backend(#[from] hangar_engine::backend::BackendError),
    #[error("n_prompt and n_gen must be at least 1")]
    Empty,
}

/// Bytes of the matrices a decode step streams: every loaded tensor except the embedding
/// table, of which one row is read (unless it doubles as the output projection).
fn weight_bytes_per_token(spec: &ModelSpec, file: &GgufFile) -> u64 {
    spec.tensor_names()
        .iter()
        .filter(|n| **n != spec.token_embd.as_str() || spec.output == spec.token_embd)
        .filter_map(|n| file.tensor(n).map(|t| t.data.len() as u64))
        .sum()
}

struct Run<'a> {
    spec: &'a ModelSpec,
    w: &'a Weights,
    be: &'a mut GpuBackend,
    kv: hangar_engine::kv::KvPolicy,
}

impl Run<'_> {
    fn prefill(&mut self, prompt: &[u32], chunk: usize, n_ctx: usize) -> Result<(hangar_engine::backend::SeqId, u32), BenchError> {
        let hp = &self.spec.hparams;
        let seq = self.be.new_sequence(hp.n_layer, hp.kv_dim(), n_ctx, hangar_engine::backend::KvFormat { policy: self.kv, head_dim: hp.head_dim })?;
        let mut tok = 0;
        let mut pos = 0;
        for c in prompt.chunks(chunk.max(1)) {
            let l = forward_act(self.spec, self.w, self.be, seq, c, pos, Logits::Last)?;
            tok = self.be.argmax(l, hp.n_vocab)?[0];
            pos += c.len();
        }
        Ok((seq, tok))
    }

    /// Greedy decode of `n` tokens; step i + 1 is recorded while step i runs on the device
    /// (its token id stays there). Returns the host time spent recording and submitting.
    fn decode(&mut self, seq: hangar_engine::backend::SeqId, tok: u32, pos0: usize, n: usize) -> Result<f64, BenchError> {
        let mut pending = None;
        let mut record_s = 0.0;
        for i in 0..n {
            let t = Instant::now();
            if i > 0 {
                self.be.set_token_from_device();
            }
            let l = forward_act(self.spec, self.w, self.be, seq, &[tok], pos0 + i, Logits::Last)?;
            let p = self.be.argmax_to_device(l)?;
            record_s += t.elapsed().as_secs_f64();
            if let Some(prev) = pending.replace(p) {
                self.be.wait_token(prev)?;
            }
        }
        if let Some(p) = pending {
            self.be.wait_token(p)?;
        }
        Ok(record_s)
    }
}

/// Loads `model_path` on the shared device and measures prefill of `n_prompt` tokens and
/// greedy decode of `n_gen` tokens.
pub fn run(model_path: &Path, registry: &Registry, o: &BenchOptions) -> Result<BenchReport, BenchError> {
    if o.n_prompt == 0 || o.n_gen == 0 {
        return Err(BenchError::Empty);
    }
    let gpu = Gpu::shared()?;
    let t = Instant::now();
    let file = Arc::new(GgufFile::open(model_path)?);
    let spec = registry.build_spec(&file)?;
    let mut be = GpuBackend::new(gpu.clone());
    let w = Weights::load(&spec, &file, &mut be, |_, _| {})?;
    let hp = spec.hparams.clone();
    let n_ctx = o.n_prompt + o.n_gen + 1;
    let prompt: Vec<u32> = (0..o.n_prompt).map(|i| (1 + i * 7919 % hp.n_vocab.saturating_sub(1).max(1)) as u32).collect();
    let mut r = Run { spec: &spec, w: &w, be: &mut be, kv: o.kv };
    // The upload happens at the first step; a short warm-up also compiles the pipelines.
    let (seq, tok) = r.prefill(&prompt[..o.n_prompt.min(8)], o.chunk, n_ctx)?;
    r.decode(seq, tok, o.n_prompt.min(8), 2)?;
    r.be.free_sequence(seq);
    let load_s = t.elapsed().as_secs_f64();

    let (mut pp, mut tg) = (Vec::new(), Vec::new());
    let mut subs = 0;
    let mut record = 0.0;
    for _ in 0..o.reps.max(1) {
        let t = Instant::now();
        let (seq, _) = r.prefill(&prompt, o.chunk, n_ctx)?;
        pp.push(t.elapsed().as_secs_f64());
        r.be.free_sequence(seq);
        // Decode on a fresh sequence, as llama-bench's tg test does (one prompt token).
        let (seq, tok) = r.prefill(&prompt[..1], o.chunk, n_ctx)?;
        let before = r.be.submissions();
        let t = Instant::now();
        record = r.decode(seq, tok, 1, o.n_gen)?;
        tg.push(t.elapsed().as_secs_f64());
        subs = r.be.submissions() - before;
        r.be.free_sequence(seq);
    }
    let (mut profile_prefill, mut profile_decode) = (Vec::new(), Vec::new());
    if o.profile && r.be.set_profiling(true) {
        let (seq, tok) = r.prefill(&prompt, o.chunk, n_ctx)?;
        profile_prefill = r.be.take_profile();
        r.decode(seq, tok, o.n_prompt, o.n_gen.min(16))?;
        profile_decode = r.be.take_profile();
        r.be.free_sequence(seq);
        r.be.set_profiling(false);
    }
    let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    Ok(BenchReport {
        adapter: gpu.describe(),
        load_s,
        n_prompt: o.n_prompt,
        n_gen: o.n_gen,
        prefill_s: best(&pp),
        decode_s: best(&tg),
        prefill_s_mean: mean(&pp),
        decode_s_mean: mean(&tg),
        weight_bytes_per_token: weight_bytes_per_token(&spec, &file),
        submissions_per_token: subs as f64 / o.n_gen as f64,
        record_us_per_token: record * 1e6 / o.n_gen as f64,
        profile_prefill,
        profile_decode,
    })
}

/// GPU against CPU on `model_path` (see [`crate::parity`]) over `n_prompts` prompts of
/// deterministic pseudo-random token ids (8 to 39 tokens), `n_gen` greedy tokens each.
pub fn parity_check(model_path: &Path, registry: &Registry, n_prompts: usize, n_gen: usize) -> Result<crate::parity::ParityReport, BenchError> {
    if n_prompts == 0 || n_gen == 0 {
        return Err(BenchError::Empty);
    }
    let file = Arc::new(GgufFile::open(model_path)?);
    let spec = registry.build_spec(&file)?;
    let mut gpu = GpuBackend::new(Gpu::shared()?);
    let gw = Weights::load(&spec, &file, &mut gpu, |_, _| {})?;
    let mut cpu = hangar_engine::cpu::CpuBackend::new();
    let cw = Weights::load(&spec, &file, &mut cpu, |_, _| {})?;
    let n_vocab = spec.hparams.n_vocab.max(2) as u64;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    let prompts: Vec<Vec<u32>> =
        (0..n_prompts).map(|_| (0..8 + next() % 32).map(|_| (1 + next() % (n_vocab - 1)) as u32).collect()).collect();
    Ok(crate::parity::compare(&spec, &mut gpu, &gw, &mut cpu, &cw, &prompts, n_gen)?)
}
