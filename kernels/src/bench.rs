//! Decode throughput of a model on the shared device, for `hangar bench` (the subcommand lives
//! in services): a synthetic prompt is prefilled in one chunk, then `n_gen` tokens are decoded
//! greedily with argmax on the device, one submission per token.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use hangar_engine::backend::Backend;
use hangar_engine::family::Registry;
use hangar_engine::gguf::GgufFile;
use hangar_engine::graph::{forward_act, Logits, Weights};

use crate::{Gpu, GpuBackend};

#[derive(Clone, Debug)]
pub struct BenchReport {
    pub adapter: String,
    pub load_s: f64,
    pub n_prompt: usize,
    pub prefill_s: f64,
    pub n_gen: usize,
    pub decode_s: f64,
    /// Command buffers submitted while decoding (one per token).
    pub decode_submissions: u64,
}

impl BenchReport {
    pub fn prefill_tok_s(&self) -> f64 {
        self.n_prompt as f64 / self.prefill_s.max(1e-9)
    }
    pub fn decode_tok_s(&self) -> f64 {
        self.n_gen as f64 / self.decode_s.max(1e-9)
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

/// Loads `model_path` on the shared device and measures prefill of `n_prompt` tokens and
/// greedy decode of `n_gen` tokens.
pub fn decode_tok_s(model_path: &Path, registry: &Registry, n_prompt: usize, n_gen: usize) -> Result<BenchReport, BenchError> {
    if n_prompt == 0 || n_gen == 0 {
        return Err(BenchError::Empty);
    }
    let gpu = Gpu::shared()?;
    let t = Instant::now();
    let file = Arc::new(GgufFile::open(model_path)?);
    let spec = registry.build_spec(&file)?;
    let mut be = GpuBackend::new(gpu.clone());
    let w = Weights::load(&spec, &file, &mut be, |_, _| {})?;
    let hp = &spec.hparams;
    let seq = be.new_sequence(hp.n_layer, hp.kv_dim(), n_prompt + n_gen)?;
    // The upload happens at the first step; a one-token warm-up step also compiles pipelines.
    let warm = be.new_sequence(hp.n_layer, hp.kv_dim(), 1)?;
    let l = forward_act(&spec, &w, &mut be, warm, &[0], 0, Logits::Last)?;
    be.argmax(l, hp.n_vocab)?;
    be.free_sequence(warm);
    let load_s = t.elapsed().as_secs_f64();

    let prompt: Vec<u32> = (0..n_prompt).map(|i| (i * 7919 % hp.n_vocab.max(1)) as u32).collect();
    let t = Instant::now();
    let l = forward_act(&spec, &w, &mut be, seq, &prompt, 0, Logits::Last)?;
    let mut tok = be.argmax(l, hp.n_vocab)?[0];
    let prefill_s = t.elapsed().as_secs_f64();

    let before = be.submissions();
    let t = Instant::now();
    for i in 0..n_gen {
        let l = forward_act(&spec, &w, &mut be, seq, &[tok], n_prompt + i, Logits::Last)?;
        tok = be.argmax(l, hp.n_vocab)?[0];
    }
    let decode_s = t.elapsed().as_secs_f64();
    Ok(BenchReport {
        adapter: gpu.describe(),
        load_s,
        n_prompt,
        prefill_s,
        n_gen,
        decode_s,
        decode_submissions: be.submissions() - before,
    })
}
