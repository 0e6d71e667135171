//! The `Backend` trait: the primitive ops the engine's graph is written in. The CPU reference
//! (`cpu/`) executes them eagerly; the wgpu backend records them into one submission per step.
//!
//! Activations are `[rows, cols]` row-major f32 matrices (rows = tokens) named by `Act`
//! handles that live until the next `begin_step`. Weights stay in their file's format and are
//! named by `WeightId`.

use std::sync::Arc;

use crate::gguf::GgufFile;
use crate::quant::GgmlType;
use crate::spec::{Activation, NormKind, RopeConfig};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WeightId(pub u32);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Act(pub u32);

/// One sequence's KV cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SeqId(pub u32);

/// How a sequence's KV cache stores each head vector of `head_dim` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KvFormat {
    pub policy: crate::kv::KvPolicy,
    pub head_dim: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("tensor {0:?} is not in the file")]
    MissingTensor(String),
    #[error("tensor {name:?}: type {ty} is not supported by the {backend} backend")]
    UnsupportedType { name: String, ty: GgmlType, backend: &'static str },
    #[error("shape mismatch in {op}: {detail}")]
    Shape { op: &'static str, detail: String },
    #[error("token id {id} is outside the vocabulary of {n_vocab}")]
    TokenOutOfRange { id: u32, n_vocab: usize },
    #[error("context full: position {pos} + {n} tokens exceeds the KV cache of {n_ctx}")]
    ContextFull { pos: usize, n: usize, n_ctx: usize },
    #[error("unknown handle {0}")]
    BadHandle(String),
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    #[error("device error: {0}")]
    Device(String),
}

/// How `norm` normalizes: each run of `group` elements of a row separately (per-head norms),
/// or the whole row when `group` equals the row width.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NormParams {
    pub kind: NormKind,
    pub eps: f32,
    /// Multiply by (1 + w) instead of w (Gemma).
    pub add_one: bool,
    pub group: usize,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnParams {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub scale: f32,
    pub softcap: Option<f32>,
    pub window: Option<usize>,
}

/// The sampler chain a device runs (`sample_topk.wgsl` when top-k is on and at most
/// [`TOP_K_MAX`](Self::TOP_K_MAX), `sample.wgsl` otherwise; CPU twin `cpu::ops::sample`): the host
/// [`Sampler`](crate::sampling::Sampler)'s order after its logit bias and penalties (which
/// reach the device as [`LogitEdit`]s). NaN logits
/// count as -inf and a +inf logit wins outright (the first, by id); then top-k (exactly k: ties
/// at the k-th value are broken by lower id), top-p over the untempered probabilities of the
/// top-k survivors (normalised over them), min-p against the best of them, and a draw with the
/// uniform `u` from softmax(logit / temperature) over what is left, walking the kept tokens in
/// id order. `temperature <= 0` (or NaN) is greedy; `top_k == 0`, `top_p >= 1` and
/// `min_p <= 0` turn those filters off.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeviceSampling {
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub min_p: f32,
}

impl DeviceSampling {
    /// The argmax.
    pub const GREEDY: DeviceSampling = DeviceSampling { temperature: 0.0, top_k: 0, top_p: 1.0, min_p: 0.0 };

    /// The largest top-k the two-stage top-k sampler (`sample_topk.wgsl`) serves: its last
    /// stage sorts the survivors in one workgroup of this many invocations. llama.cpp's and
    /// Ollama's default of 40, and the usual 100, fit; a larger or absent top-k goes through
    /// the general kernel, which bisects over the whole vocabulary and is much slower.
    pub const TOP_K_MAX: usize = 256;

    pub fn is_greedy(&self) -> bool {
        self.temperature.is_nan() || self.temperature <= 0.0
    }

    /// Whether a sampled draw under these settings takes the two-stage top-k path: top-k on and
    /// at most [`TOP_K_MAX`](Self::TOP_K_MAX).
    pub fn is_top_k_bounded(&self) -> bool {
        (1..=Self::TOP_K_MAX).contains(&self.top_k)
    }

    /// What the draw multiplies `logit - max` by. Capped at `f32::MAX`: a subnormal temperature
    /// would give +inf, and the best token's `0 * inf` would be NaN.
    pub fn inv_temperature(&self) -> f32 {
        (1.0 / self.temperature).min(f32::MAX)
    }
}

/// A sparse edit of one logit, made before the device sampler's chain: the logit bias and
/// penalties of the host sampler's order, which come from the request and its history rather
/// than from the logits. `l + add`, then `l * rep` where that is `<= 0` and `l * inv_rep`
/// elsewhere, then `l - sub`; the CPU twin is `cpu::ops::edit_logits`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LogitEdit {
    /// The logit's element of the activation: `row * cols + token`.
    pub index: u32,
    pub add: f32,
    pub rep: f32,
    pub inv_rep: f32,
    pub sub: f32,
}

pub trait Backend: Send {
    fn name(&self) -> &'static str;

    /// Makes a tensor of `file` available to kernels, in its stored format.
    fn load_weight(&mut self, file: &Arc<GgufFile>, name: &str) -> Result<WeightId, BackendError>;

    /// Allocates a KV cache of `n_ctx` positions for `n_layer` layers of `kv_dim` values,
    /// stored as `format` says (a policy the backend cannot hold is a `Shape` error).
    fn new_sequence(&mut self, n_layer: usize, kv_dim: usize, n_ctx: usize, format: KvFormat) -> Result<SeqId, BackendError>;
    fn free_sequence(&mut self, seq: SeqId);

    /// Starts a step; every `Act` of the previous step becomes invalid.
    fn begin_step(&mut self);

    /// Rows of an embedding table, dequantized: `[tokens.len(), n_embd]`.
    fn embed(&mut self, table: WeightId, tokens: &[u32]) -> Result<Act, BackendError>;
    /// `x · Wᵀ (+ b)`: `[n, k] -> [n, m]` for a weight of m rows of k.
    fn linear(&mut self, x: Act, w: WeightId, bias: Option<WeightId>) -> Result<Act, BackendError>;
    fn norm(&mut self, x: Act, w: Option<WeightId>, b: Option<WeightId>, p: NormParams) -> Result<Act, BackendError>;
    /// Rotates every `head_dim` run of each row; row r is at position `pos0 + r`.
    fn rope(&mut self, x: Act, head_dim: usize, pos0: usize, rope: &RopeConfig) -> Result<Act, BackendError>;
    /// Writes k and v at positions `pos0..pos0+n` of `layer`'s cache, then attends causally.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &mut self,
        seq: SeqId,
        layer: usize,
        pos0: usize,
        q: Act,
        k: Act,
        v: Act,
        p: &AttnParams,
    ) -> Result<Act, BackendError>;
    /// `act(gate) * up`, or `act(up)` for non-gated activations (`gate` = None).
    fn ffn_act(&mut self, gate: Option<Act>, up: Act, act: Activation) -> Result<Act, BackendError>;
    fn add(&mut self, a: Act, b: Act) -> Result<Act, BackendError>;
    fn scale(&mut self, x: Act, s: f32) -> Result<Act, BackendError>;
    /// `cap * tanh(x / cap)`.
    fn softcap(&mut self, x: Act, cap: f32) -> Result<Act, BackendError>;
    /// Splits columns into consecutive blocks of the given widths (fused QKV).
    fn split_cols(&mut self, x: Act, widths: &[usize]) -> Result<Vec<Act>, BackendError>;
    fn last_row(&mut self, x: Act) -> Result<Act, BackendError>;
    /// Copies an activation back to the host.
    fn read(&mut self, x: Act) -> Result<Vec<f32>, BackendError>;

    /// Whether this backend runs [`crate::graph::forward_decode_batch`]'s batched graph: its
    /// `linear_rows`, `row_slice` and `concat_rows` work, and `linear_rows` computes each row
    /// exactly as a one-row `linear` would. Backends that answer `false` decode a batch one
    /// sequence at a time, which gives the same tokens by construction.
    fn batches_rows(&self) -> bool {
        false
    }

    /// [`linear`](Self::linear) whose every output row is bit-identical to a one-row `linear`
    /// of that input row, whatever the other rows are: what makes a sequence's tokens the same
    /// alone or batched.
    fn linear_rows(&mut self, x: Act, w: WeightId, bias: Option<WeightId>) -> Result<Act, BackendError> {
        let _ = (x, w, bias);
        Err(BackendError::Shape { op: "linear_rows", detail: format!("the {} backend does not batch rows", self.name()) })
    }

    /// Copies positions `pos0..pos0 + n` of every layer's KV cache from `src` to `dst`, so a
    /// prompt prefix computed once serves another sequence. Backends without it compute.
    fn copy_kv(&mut self, src: SeqId, dst: SeqId, pos0: usize, n: usize) -> Result<(), BackendError> {
        let _ = (src, dst, pos0, n);
        Err(BackendError::Shape { op: "copy_kv", detail: format!("the {} backend does not copy KV caches", self.name()) })
    }

    /// Context shift of `seq`'s cache (see `cpu::KvCache::shift`): positions
    /// `n_keep..n_keep + n_discard` of the first `len` are dropped and later keys re-rotated
    /// with each layer's rope (`ropes`, one per layer).
    fn shift_kv(&mut self, seq: SeqId, n_keep: usize, n_discard: usize, len: usize, ropes: &[&RopeConfig]) -> Result<(), BackendError> {
        let _ = (seq, n_keep, n_discard, len, ropes);
        Err(BackendError::Shape { op: "shift_kv", detail: format!("the {} backend cannot shift a KV cache", self.name()) })
    }

    /// Rows `r0..r0 + n` of `x`.
    fn row_slice(&mut self, x: Act, r0: usize, n: usize) -> Result<Act, BackendError> {
        let _ = (x, r0, n);
        Err(BackendError::Shape { op: "row_slice", detail: format!("the {} backend does not batch rows", self.name()) })
    }

    /// The rows of `parts`, in order, as one activation (all of one width).
    fn concat_rows(&mut self, parts: &[Act]) -> Result<Act, BackendError> {
        let _ = parts;
        Err(BackendError::Shape { op: "concat_rows", detail: format!("the {} backend does not batch rows", self.name()) })
    }

    /// A layer boundary: only `keep` (and activations made later) are used again in this
    /// step, so a backend may reuse the memory of the others. The CPU frees nothing.
    fn retain(&mut self, _keep: &[Act]) -> Result<(), BackendError> {
        Ok(())
    }

    /// Index of the largest value of each `cols`-wide row of `x` (the first on ties). A GPU
    /// backend computes it on the device and reads back only the indices.
    fn argmax(&mut self, x: Act, cols: usize) -> Result<Vec<u32>, BackendError> {
        let v = self.read(x)?;
        Ok(v.chunks(cols.max(1)).map(crate::cpu::ops::argmax).collect())
    }

    /// Logits with banned tokens removed before argmax or sampling: a copy of `x` where each
    /// column whose bit is set in the bitset `banned` (bit `c % 32` of word `c / 32`) is
    /// `-inf`; the CPU twin is `cpu::ops::mask_logits`. A GPU backend applies it on the device,
    /// so a constrained or policy-masked step still reads back only a token id. An empty
    /// bitset bans nothing and may return `x` itself (unhooked greedy decoding).
    fn mask_logits(&mut self, x: Act, banned: &[u32]) -> Result<Act, BackendError>;

    /// A copy of `x` with `edits` applied, each element at most once (see [`LogitEdit`]). A GPU
    /// backend edits on the device, so a request with a logit bias or penalties still reads
    /// back only its token id.
    fn edit_logits(&mut self, x: Act, edits: &[LogitEdit]) -> Result<Act, BackendError>;

    /// Each row `i` of `x` masked with its own bitset `banned[i]` (one per row), as
    /// [`mask_logits`](Self::mask_logits) masks with one: a batched step whose sequences carry
    /// different policies or output constraints. Rows with an empty bitset are kept. The
    /// default masks row by row; a GPU backend masks every row in one dispatch.
    fn mask_logits_rows(&mut self, x: Act, banned: &[&[u32]]) -> Result<Act, BackendError> {
        if banned.iter().all(|b| b.iter().all(|&w| w == 0)) {
            return Ok(x);
        }
        let mut rows = Vec::with_capacity(banned.len());
        for (i, b) in banned.iter().enumerate() {
            let row = self.row_slice(x, i, 1)?;
            rows.push(self.mask_logits(row, b)?);
        }
        self.concat_rows(&rows)
    }

    /// The greedy pick from the one-row logits `x` (`cols` wide) with the `banned` bitset
    /// masked out: [`mask_logits`](Self::mask_logits) then [`argmax`](Self::argmax).
    fn pick_masked(&mut self, x: Act, banned: &[u32], cols: usize) -> Result<u32, BackendError> {
        let masked = self.mask_logits(x, banned)?;
        Ok(self.argmax(masked, cols)?.first().copied().unwrap_or(0))
    }

    /// Draws a token from the one-row logits `x` with `u` uniform in [0, 1); the CPU twin is
    /// `cpu::ops::sample`. A GPU backend samples on the device and reads back only the id.
    fn sample(&mut self, x: Act, p: &DeviceSampling, u: f32) -> Result<u32, BackendError> {
        let v = self.read(x)?;
        Ok(crate::cpu::ops::sample(&v, p, u))
    }

    /// [`sample`](Self::sample) from the one-row logits `x` with the `banned` bitset masked out,
    /// then `edits` applied: the host sampler's order (hooks, then bias and penalties).
    fn sample_masked(&mut self, x: Act, banned: &[u32], edits: &[LogitEdit], p: &DeviceSampling, u: f32) -> Result<u32, BackendError> {
        let mut x = self.mask_logits(x, banned)?;
        if !edits.is_empty() {
            x = self.edit_logits(x, edits)?;
        }
        self.sample(x, p, u)
    }

    /// One token per `cols`-wide row of `x`, row `i` drawn as `picks[i]` (settings, uniform)
    /// says; greedy rows get [`argmax`](Self::argmax)'s pick. The default reads `x` once and
    /// runs the CPU twin on each row; a GPU backend samples every row in one submission.
    fn sample_rows(&mut self, x: Act, cols: usize, picks: &[(DeviceSampling, f32)]) -> Result<Vec<u32>, BackendError> {
        let v = self.read(x)?;
        if cols == 0 || v.len() != cols * picks.len() {
            return Err(BackendError::Shape { op: "sample_rows", detail: format!("{} logits for {} rows of {cols}", v.len(), picks.len()) });
        }
        Ok(v.chunks_exact(cols).zip(picks).map(|(row, (p, u))| crate::cpu::ops::sample(row, p, *u)).collect())
    }
}
