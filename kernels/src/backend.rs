//! `GpuBackend`: the engine's `Backend` on the shared wgpu device. Ops are recorded (see
//! `recorder`) and submitted as one command buffer when something is read back, so a decode
//! step is one submission that returns one token id (`argmax`/`sample`) or the logits. Decode
//! ops are fused where one can absorb another (see `fuse`).

use std::collections::HashMap;
use std::sync::Arc;

use hangar_engine::backend::{Act, AttnParams, Backend, BackendError, DeviceSampling, KvFormat, NormParams, SeqId, WeightId};
use hangar_engine::gguf::GgufFile;
use hangar_engine::spec::{Activation, RopeConfig, RopeStyle};

use crate::arena::{Arenas, GpuWeight};
use crate::device::Gpu;
use crate::fuse::{Group, LazyCombine, LazyNorm, LazyRope, MvGroups, Part};
use crate::kv_cache::KvSeq;
use crate::pipelines::Op;
use crate::recorder::{grid, Binds, Recorder, TOKEN_SLOT};

/// Activations of a step beyond this are reused at layer boundaries.
const REUSE_BYTES: u64 = 8 << 20;

/// Whether an activation's data exists yet, or which pending op will produce it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum St {
    Ready,
    /// An output of the open matvec group.
    Group,
    /// A norm folded into the matvecs that read it (index into `lazy_norms`).
    Norm(u32),
    /// A rope folded into attention (index into `lazy_ropes`).
    Rope(u32),
    /// Attention's split-context merge, folded into the matvec that reads it (index into
    /// `lazy_combines`).
    Combine(u32),
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct ActInfo {
    pub off: u32,
    pub rows: usize,
    pub cols: usize,
    pub st: St,
}

/// Construction options for a model's backend.
#[derive(Clone, Debug, Default)]
pub struct BackendOptions {
    /// Caps each weight arena below the device's storage binding limit (tests use it to
    /// exercise tensors split over arenas cheaply).
    pub max_arena_bytes: Option<u64>,
    /// Activation bytes of a step beyond which layer boundaries reuse memory (default 8 MiB).
    pub reuse_bytes: Option<u64>,
    /// Dispatch every op on its own instead of fusing decode ops (tests compare the two).
    pub no_fusion: bool,
    /// Decode matvecs of fewer wide-layout workgroups than this take the lean layout (default:
    /// `fuse::MV_LEAN_BELOW` on a GPU, never on a CPU driver; tests force it either way).
    pub mv_lean_below: Option<usize>,
    /// Bind one weight arena per dispatch even where the device has binding arrays (tests and
    /// benchmarks compare the two paths on one device; the device's own switch is
    /// `GpuOptions::allow_binding_arrays`, off by default).
    pub no_binding_arrays: bool,
    /// Q4_0 and Q8_0 decode matvecs at least this wide quantize their input to 8-bit blocks and
    /// dot with packed integer dot products, as llama.cpp's do (default `fuse::MV_Q8_FROM`;
    /// HANGAR_MV_Q8=N overrides it). H200 tg128: 8B Q4_0 248 -> 331 tok/s, 8B Q8_0 266 -> 285
    /// (bench/RESULTS.md sessions 16-18).
    pub mv_q8_from: Option<usize>,
    /// Lean-layout matvecs take 8-bit inputs too (default off: see `fuse::MV_Q8_LEAN`;
    /// HANGAR_MV_Q8_LEAN=1 or 0 overrides it).
    pub mv_q8_lean: Option<bool>,
}

pub struct GpuBackend {
    pub(crate) gpu: Arc<Gpu>,
    pub(crate) arenas: Arenas,
    weights: Vec<GpuWeight>,
    pub(crate) seqs: HashMap<u32, KvSeq>,
    pub(crate) next_seq: u32,
    pub(crate) acts: Vec<ActInfo>,
    pub(crate) rec: Recorder,
    pub(crate) group: Option<Group>,
    pub(crate) lazy_norms: Vec<LazyNorm>,
    pub(crate) lazy_ropes: Vec<LazyRope>,
    pub(crate) lazy_combines: Vec<LazyCombine>,
    /// Decode ops are fused (tests switch it off to compare against the unfused kernels).
    pub(crate) fuse: bool,
    /// The next one-token `embed` reads its id from the device (`set_token_from_device`).
    token_from_device: bool,
    /// Invocations per row of the decode matvec, when set (HANGAR_MV_THREADS, for tuning).
    pub(crate) mv_threads: Option<usize>,
    /// Row groups per matvec workgroup, when set (HANGAR_MV_GROUPS: N, or aN for about N
    /// workgroups; for tuning).
    pub(crate) mv_groups: Option<MvGroups>,
    /// Matvec rows from this width on walk two blocks a step (HANGAR_MV_PAIRS, for tuning).
    pub(crate) mv_pair_cols: usize,
    /// Matvecs of fewer wide-layout workgroups than this take the lean layout (HANGAR_MV_LEAN).
    pub(crate) mv_lean_below: usize,
    /// Q4_0 and Q8_0 decode matvecs from this width take 8-bit inputs (HANGAR_MV_Q8).
    pub(crate) mv_q8_from: usize,
    /// Lean-layout matvecs take 8-bit inputs too (HANGAR_MV_Q8_LEAN).
    pub(crate) mv_q8_lean: bool,
    /// 8-bit-input matvec dispatches recorded (tests check the path was taken).
    pub(crate) q8_dispatches: u64,
    reuse_bytes: u64,
    /// Rope frequency tables uploaded in this step, by their bits (one per layer otherwise).
    freq_cache: HashMap<Vec<u32>, u32>,
}

pub(crate) fn shape(op: &'static str, detail: String) -> BackendError {
    BackendError::Shape { op, detail }
}

pub(crate) fn u(v: usize, what: &str) -> Result<u32, BackendError> {
    u32::try_from(v).map_err(|_| BackendError::OutOfMemory(format!("{what} of {v} exceeds 32 bits")))
}

/// A tuning switch from the environment: "1" on, anything else off, unset none (the
/// options' value or the default then applies).
fn env_switch(name: &str) -> Option<bool> {
    std::env::var(name).ok().map(|v| v == "1")
}

impl GpuBackend {
    pub fn new(gpu: Arc<Gpu>) -> GpuBackend {
        Self::with_options(gpu, BackendOptions::default())
    }

    pub fn with_options(gpu: Arc<Gpu>, opts: BackendOptions) -> GpuBackend {
        let max = opts.max_arena_bytes.map_or(gpu.max_binding, |m| m.min(gpu.max_binding));
        let slots = match gpu.weight_binding {
            crate::device::WeightBinding::BindingArrays { slots } if !opts.no_binding_arrays => Some(slots),
            _ => None,
        };
        let mut rec = Recorder::new(gpu.clone());
        rec.set_binding_arrays(slots.is_some());
        GpuBackend {
            arenas: Arenas::new(max, slots),
            weights: Vec::new(),
            seqs: HashMap::new(),
            next_seq: 0,
            acts: Vec::new(),
            rec,
            group: None,
            lazy_norms: Vec::new(),
            lazy_combines: Vec::new(),
            lazy_ropes: Vec::new(),
            fuse: !opts.no_fusion,
            token_from_device: false,
            mv_threads: std::env::var("HANGAR_MV_THREADS").ok().and_then(|v| v.parse::<usize>().ok()).map(|t| t.next_power_of_two()),
            mv_groups: MvGroups::from_env(),
            mv_pair_cols: std::env::var("HANGAR_MV_PAIRS").ok().and_then(|v| v.parse().ok()).unwrap_or(crate::fuse::MV_PAIR_COLS),
            mv_lean_below: std::env::var("HANGAR_MV_LEAN").ok().and_then(|v| v.parse().ok()).or(opts.mv_lean_below).unwrap_or(
                match gpu.adapter_info.device_type {
                    wgpu::DeviceType::Cpu => 0,
                    _ => crate::fuse::MV_LEAN_BELOW,
                },
            ),
            q8_dispatches: 0,
            mv_q8_lean: env_switch("HANGAR_MV_Q8_LEAN").or(opts.mv_q8_lean).unwrap_or(crate::fuse::MV_Q8_LEAN),
            mv_q8_from: std::env::var("HANGAR_MV_Q8").ok().and_then(|v| v.parse().ok()).or(opts.mv_q8_from).unwrap_or(crate::fuse::MV_Q8_FROM),
            freq_cache: HashMap::new(),
            reuse_bytes: opts.reuse_bytes.unwrap_or(REUSE_BYTES),
            gpu,
        }
    }

    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// Weight arenas created so far, with their sizes in bytes.
    pub fn arena_sizes(&self) -> Vec<u64> {
        self.arenas.arenas.iter().map(|a| a.buffer.size()).collect()
    }

    /// Whether this model's kernels select their arenas in binding arrays (bound once per
    /// submission) rather than binding one arena per dispatch.
    pub fn binding_arrays(&self) -> bool {
        self.rec.binding_arrays()
    }

    /// Weight arena bind groups set so far: one per submission with binding arrays, one per
    /// change of arena between dispatches without.
    pub fn weight_binds(&self) -> u64 {
        self.rec.weight_binds
    }

    /// Bytes of weights planned or uploaded (quantized GPU layout plus f32 vectors).
    pub fn weight_bytes(&self) -> u64 {
        self.arenas.total_bytes()
    }

    /// Switches per-dispatch GPU timing on or off; false when the device cannot time
    /// dispatches (it must be opened with HANGAR_PROFILE set).
    pub fn set_profiling(&mut self, on: bool) -> bool {
        self.rec.profiler = if on { crate::profile::Profiler::new(&self.gpu) } else { None };
        self.rec.profiler.is_some()
    }

    /// GPU time per kernel since profiling was switched on, largest first; resets the totals.
    pub fn take_profile(&mut self) -> Vec<crate::profile::ProfileLine> {
        self.rec.profiler.as_mut().map(|p| p.take()).unwrap_or_default()
    }

    /// Makes the next one-token `embed` take its id from the last `argmax_to_device` on the
    /// device instead of from the host (whose value it ignores).
    pub fn set_token_from_device(&mut self) {
        self.token_from_device = true;
    }

    /// Kernel dispatches recorded so far.
    pub fn dispatches(&self) -> u64 {
        self.rec.dispatched
    }

    /// Decode matvecs dispatched with 8-bit inputs so far.
    pub fn q8_matvecs(&self) -> u64 {
        self.q8_dispatches
    }

    /// Command buffers submitted so far.
    pub fn submissions(&self) -> u64 {
        self.rec.submits
    }

    /// The parts a weight was split into (one unless it exceeds an arena).
    pub fn weight_segments(&self, w: WeightId) -> usize {
        match self.weights.get(w.0 as usize) {
            Some(GpuWeight::Matrix { segs, .. }) => segs.len(),
            Some(GpuWeight::Vector { .. }) => 1,
            None => 0,
        }
    }

    pub(crate) fn act(&self, a: Act) -> Result<ActInfo, BackendError> {
        self.acts.get(a.0 as usize).copied().ok_or_else(|| BackendError::BadHandle(format!("{a:?}")))
    }

    pub(crate) fn new_act(&mut self, rows: usize, cols: usize) -> Result<(Act, u32), BackendError> {
        let off = self.rec.alloc(rows.checked_mul(cols).ok_or_else(|| BackendError::OutOfMemory("activation".into()))?)?;
        self.acts.push(ActInfo { off, rows, cols, st: St::Ready });
        Ok((Act(self.acts.len() as u32 - 1), off))
    }

    /// A matvec per token (`by_rows`, fused into groups where possible) or a tiled matmul.
    fn linear_via(&mut self, x: Act, w: WeightId, bias: Option<WeightId>, by_rows: bool) -> Result<Act, BackendError> {
        let GpuWeight::Matrix { name, ty, rows, cols, row_words, segs } = self.weight(w)?.clone() else {
            return Err(shape("linear", "weight is a vector".into()));
        };
        let b = self.vector(bias)?;
        let xa = self.act(x)?;
        self.check_linear(&name, xa, cols, rows, b.map(|b| b.2))?;
        let bias2 = b.map(|b| (b.0, b.1));
        if by_rows && cols % 4 == 0 {
            if self.fuse && segs.len() == 1 {
                return self.group_linear(x, ty, cols, row_words, segs[0], bias2);
            }
            // One matvec per segment of a weight split over arenas (or unfused): each is a
            // group of one part writing its rows at their offset.
            let (out, off) = self.new_act(xa.rows, rows)?;
            for s in &segs {
                self.flush_group()?;
                let part = Part { w_off: s.word_off, rows: s.rows, out, out_off: off + s.row0, bias: bias2.map(|(a, o)| (a, o + s.row0)) };
                self.group = Some(Group { x, ty, cols, row_words, arena_w: s.arena, parts: vec![part], gated: None, residual: None });
                self.flush_group()?;
            }
            return Ok(out);
        }
        let xa = self.ready(x)?;
        self.flush_group()?;
        let (out, off) = self.new_act(xa.rows, rows)?;
        for s in &segs {
            let tiles_m = s.rows.div_ceil(64);
            let tiles = tiles_m * u(xa.rows.div_ceil(64), "tokens")?;
            let p = [
                s.word_off,
                row_words,
                cols as u32,
                u(cols.div_ceil(32), "row")?,
                rows as u32,
                s.row0,
                s.rows,
                u(xa.rows, "tokens")?,
                xa.off,
                off,
                b.map_or(0, |b| b.1),
                b.is_some() as u32,
                0,
                tiles_m,
            ];
            let (gx, gy) = grid(&self.gpu, tiles);
            let binds = Binds { arena_w: Some(s.arena), arena_v: b.map(|b| b.0), kv: None };
            self.rec.dispatch(Op::Matmul, Some(ty), &p, [gx, gy, 1], binds);
        }
        Ok(out)
    }

    fn weight(&self, w: WeightId) -> Result<&GpuWeight, BackendError> {
        self.weights.get(w.0 as usize).ok_or_else(|| BackendError::BadHandle(format!("{w:?}")))
    }

    /// (arena, f32 offset, length) of a vector weight.
    fn vector(&self, w: Option<WeightId>) -> Result<Option<(u32, u32, usize)>, BackendError> {
        w.map(|w| match self.weight(w)? {
            GpuWeight::Vector { arena, off, len } => Ok((*arena, *off, *len)),
            GpuWeight::Matrix { name, .. } => Err(shape("vector", format!("{name} is a matrix"))),
        })
        .transpose()
    }

    pub(crate) fn threads(&self, total: usize) -> Result<[u32; 3], BackendError> {
        let (x, y) = grid(&self.gpu, u(total.div_ceil(64), "dispatch")?);
        Ok([x, y, 1])
    }

    pub(crate) fn eltwise(&mut self, op: u32, a: ActInfo, b: Option<ActInfo>, s: f32) -> Result<Act, BackendError> {
        let total = a.rows * a.cols;
        let (out, off) = self.new_act(a.rows, a.cols)?;
        let p = [op, u(total, "activation")?, a.off, b.map_or(0, |b| b.off), off, s.to_bits(), 0, 0, 1];
        let wg = self.threads(total)?;
        self.rec.dispatch(Op::Eltwise, None, &p, wg, Binds::default());
        Ok(out)
    }

    /// Copies columns `col0..col0 + width` of every row of `a`.
    pub(crate) fn slice_cols(&mut self, a: ActInfo, col0: usize, width: usize) -> Result<Act, BackendError> {
        let total = a.rows * width;
        let (out, off) = self.new_act(a.rows, width)?;
        let p = [6, u(total, "activation")?, a.off, 0, off, 0, a.cols as u32, col0 as u32, width.max(1) as u32];
        let wg = self.threads(total)?;
        self.rec.dispatch(Op::Eltwise, None, &p, wg, Binds::default());
        Ok(out)
    }

    pub(crate) fn flush(&mut self, read: Option<(u32, usize)>) -> Result<Option<Vec<f32>>, BackendError> {
        self.rec.flush(&self.arenas, read)
    }

    /// Submits recorded work without waiting (the "end of step" hook).
    pub fn submit(&mut self) -> Result<(), BackendError> {
        self.flush(None).map(|_| ())
    }

}

impl Backend for GpuBackend {
    fn name(&self) -> &'static str {
        "gpu"
    }

    fn load_weight(&mut self, file: &Arc<GgufFile>, name: &str) -> Result<WeightId, BackendError> {
        let index = file
            .tensors()
            .iter()
            .position(|t| t.name == name)
            .ok_or_else(|| BackendError::MissingTensor(name.to_string()))?;
        let w = self.arenas.plan(file, index)?;
        self.weights.push(w);
        Ok(WeightId(self.weights.len() as u32 - 1))
    }

    fn new_sequence(&mut self, n_layer: usize, kv_dim: usize, n_ctx: usize, format: KvFormat) -> Result<SeqId, BackendError> {
        self.alloc_sequence(n_layer, kv_dim, n_ctx, format)
    }

    fn free_sequence(&mut self, seq: SeqId) {
        self.seqs.remove(&seq.0);
    }

    fn begin_step(&mut self) {
        // Pending fused ops of the previous step produce nothing anyone can read any more.
        self.group = None;
        self.lazy_norms.clear();
        self.lazy_ropes.clear();
        self.lazy_combines.clear();
        // Work of the previous step (KV writes) must run even if nothing was read back; a
        // failure here resurfaces at the next read.
        if let Err(e) = self.flush(None) {
            tracing::warn!("flushing the previous step failed: {e}");
        }
        if self.arenas.has_pending() {
            if let Err(e) = self.arenas.upload(&self.gpu) {
                tracing::error!("uploading weights failed: {e}");
            }
            // More arenas than binding-array slots turn the model to one arena per dispatch.
            self.rec.set_binding_arrays(self.arenas.slots.is_some());
        }
        self.acts.clear();
        self.freq_cache.clear();
        self.rec.reset();
    }

    fn embed(&mut self, table: WeightId, tokens: &[u32]) -> Result<Act, BackendError> {
        let GpuWeight::Matrix { ty, rows, cols, row_words, segs, .. } = self.weight(table)?.clone() else {
            return Err(shape("embed", "embedding table is a vector".into()));
        };
        if let Some(&id) = tokens.iter().find(|&&t| t as usize >= rows) {
            return Err(BackendError::TokenOutOfRange { id, n_vocab: rows });
        }
        let n = tokens.len();
        let tok_off = if std::mem::take(&mut self.token_from_device) && n == 1 {
            TOKEN_SLOT
        } else {
            let ids: Vec<f32> = tokens.iter().map(|&t| t as f32).collect();
            self.rec.upload(&ids)?
        };
        let (out, off) = self.new_act(n, cols)?;
        let groups = u(cols.div_ceil(32), "row")?;
        for s in &segs {
            let p = [s.word_off, row_words, cols as u32, groups, s.row0, s.rows, u(n, "tokens")?, tok_off, off];
            let wg = [groups.div_ceil(64), u(n, "tokens")?, 1];
            self.rec.dispatch(Op::Embed, Some(ty), &p, wg, Binds { arena_w: Some(s.arena), ..Default::default() });
        }
        Ok(out)
    }

    fn linear(&mut self, x: Act, w: WeightId, bias: Option<WeightId>) -> Result<Act, BackendError> {
        let one = self.act(x)?.rows == 1;
        self.linear_via(x, w, bias, one)
    }

    fn batches_rows(&self) -> bool {
        true
    }

    /// Every row through the matvec kernel, whose per-token arithmetic does not depend on the
    /// other tokens (where the weight's rows allow it; otherwise through the matmul, whose
    /// output elements are each one dot product in a fixed order).
    fn linear_rows(&mut self, x: Act, w: WeightId, bias: Option<WeightId>) -> Result<Act, BackendError> {
        self.linear_via(x, w, bias, true)
    }

    fn copy_kv(&mut self, src: SeqId, dst: SeqId, pos0: usize, n: usize) -> Result<(), BackendError> {
        self.copy_kv_on_device(src, dst, pos0, n)
    }

    fn shift_kv(&mut self, seq: SeqId, n_keep: usize, n_discard: usize, len: usize, ropes: &[&RopeConfig]) -> Result<(), BackendError> {
        self.shift_kv_on_device(seq, n_keep, n_discard, len, ropes)
    }

    fn row_slice(&mut self, x: Act, r0: usize, n: usize) -> Result<Act, BackendError> {
        let a = self.ready(x)?;
        if r0 + n > a.rows {
            return Err(shape("row_slice", format!("rows {r0}..{} of {}", r0 + n, a.rows)));
        }
        // Rows are contiguous, so a run of them is a view.
        self.acts.push(ActInfo { off: a.off + u(r0 * a.cols, "activation")?, rows: n, cols: a.cols, st: St::Ready });
        Ok(Act(self.acts.len() as u32 - 1))
    }

    fn concat_rows(&mut self, parts: &[Act]) -> Result<Act, BackendError> {
        let infos = parts.iter().map(|&a| self.ready(a)).collect::<Result<Vec<_>, _>>()?;
        let Some(first) = infos.first().copied() else {
            return Err(shape("concat_rows", "no parts".into()));
        };
        if infos.iter().any(|a| a.cols != first.cols || a.rows != 1) {
            return Err(shape("concat_rows", "parts of one row and one width expected".into()));
        }
        // One gather dispatch: a table of the parts' offsets (u32 bit patterns in the f32
        // scratch), then out[r, c] = act[table[r] + c].
        let table: Vec<u32> = infos.iter().map(|a| a.off).collect();
        let t_off = self.rec.upload(bytemuck::cast_slice(&table))?;
        let total = infos.len() * first.cols;
        let (out, off) = self.new_act(infos.len(), first.cols)?;
        let p = [7, u(total, "activation")?, 0, t_off, off, 0, 0, 0, first.cols.max(1) as u32];
        let wg = self.threads(total)?;
        self.rec.dispatch(Op::Eltwise, None, &p, wg, Binds::default());
        Ok(out)
    }

    fn norm(&mut self, x: Act, w: Option<WeightId>, b: Option<WeightId>, p: NormParams) -> Result<Act, BackendError> {
        let xa = self.ready(x)?;
        let (wv, bv) = (self.vector(w)?, self.vector(b)?);
        if p.group == 0 || xa.cols % p.group != 0 || wv.is_some_and(|w| w.2 != p.group) || bv.is_some_and(|b| b.2 != p.group) {
            return Err(shape("norm", format!("row {}, group {}", xa.cols, p.group)));
        }
        let (w2, b2) = (wv.map(|w| (w.0, w.1)), bv.map(|b| (b.0, b.1)));
        if self.fuse {
            if let Some(a) = self.lazy_norm(xa, w2, b2, p)? {
                return Ok(a);
            }
        }
        let (out, off) = self.new_act(xa.rows, xa.cols)?;
        self.dispatch_norm(xa, off, w2, b2, p)?;
        Ok(out)
    }

    fn rope(&mut self, x: Act, head_dim: usize, pos0: usize, rope: &RopeConfig) -> Result<Act, BackendError> {
        let xa = self.act(x)?;
        if head_dim == 0 || !xa.cols.is_multiple_of(head_dim) || rope.n_rot > head_dim || !rope.n_rot.is_multiple_of(2) {
            return Err(shape("rope", format!("row {}, head_dim {head_dim}, n_rot {}", xa.cols, rope.n_rot)));
        }
        u(pos0 + xa.rows, "position")?;
        let freqs = hangar_engine::cpu::ops::rope_inv_freq(rope);
        let key: Vec<u32> = freqs.iter().map(|f| f.to_bits()).collect();
        let freq_off = match self.freq_cache.get(&key) {
            Some(&off) => off,
            None => {
                let off = self.rec.upload(&freqs)?;
                self.freq_cache.insert(key, off);
                off
            }
        };
        let r = LazyRope {
            src: x,
            head_dim,
            pos0,
            n_rot: rope.n_rot,
            neox: matches!(rope.style, RopeStyle::Neox),
            freq_off,
            freq_scale: rope.freq_scale,
        };
        let (out, off) = self.new_act(xa.rows, xa.cols)?;
        if self.fuse {
            self.acts[out.0 as usize].st = St::Rope(self.lazy_ropes.len() as u32);
            self.lazy_ropes.push(r);
        } else {
            let src = self.ready(x)?;
            self.dispatch_rope(src, off, &r)?;
        }
        Ok(out)
    }

    fn attention(&mut self, seq: SeqId, layer: usize, pos0: usize, q: Act, k: Act, v: Act, p: &AttnParams) -> Result<Act, BackendError> {
        self.record_attention(seq, layer, pos0, (q, k, v), p)
    }

    fn ffn_act(&mut self, gate: Option<Act>, up: Act, act: Activation) -> Result<Act, BackendError> {
        if let Some(g) = gate {
            if self.fuse {
                if let Some(out) = self.try_fuse_gated(g, up, act)? {
                    return Ok(out);
                }
            }
        }
        let ua = self.ready(up)?;
        let ga = gate.map(|g| self.ready(g)).transpose()?;
        if ga.is_some_and(|g| g.rows * g.cols != ua.rows * ua.cols) {
            return Err(shape("ffn_act", "gate and up differ in size".into()));
        }
        match (ga, act) {
            (Some(g), Activation::SwiGlu) => self.eltwise(3, g, Some(ua), 0.0),
            (Some(g), Activation::GeGlu) => self.eltwise(4, g, Some(ua), 0.0),
            _ => self.eltwise(5, ua, None, 0.0),
        }
    }

    fn add(&mut self, a: Act, b: Act) -> Result<Act, BackendError> {
        if self.fuse {
            if let Some(out) = self.try_fuse_residual(a, b)? {
                return Ok(out);
            }
        }
        let (aa, ba) = (self.ready(a)?, self.ready(b)?);
        if (aa.rows, aa.cols) != (ba.rows, ba.cols) {
            return Err(shape("add", format!("{}x{} + {}x{}", aa.rows, aa.cols, ba.rows, ba.cols)));
        }
        self.eltwise(0, aa, Some(ba), 0.0)
    }

    fn scale(&mut self, x: Act, s: f32) -> Result<Act, BackendError> {
        let a = self.ready(x)?;
        self.eltwise(1, a, None, s)
    }

    fn softcap(&mut self, x: Act, cap: f32) -> Result<Act, BackendError> {
        let a = self.ready(x)?;
        self.eltwise(2, a, None, cap)
    }

    fn split_cols(&mut self, x: Act, widths: &[usize]) -> Result<Vec<Act>, BackendError> {
        let a = self.ready(x)?;
        if widths.iter().sum::<usize>() != a.cols {
            return Err(shape("split_cols", format!("{widths:?} of {}", a.cols)));
        }
        let mut col0 = 0;
        let mut out = Vec::with_capacity(widths.len());
        for &w in widths {
            out.push(self.slice_cols(a, col0, w)?);
            col0 += w;
        }
        Ok(out)
    }

    fn last_row(&mut self, x: Act) -> Result<Act, BackendError> {
        let a = self.ready(x)?;
        if a.rows == 0 {
            return Err(shape("last_row", "no rows".into()));
        }
        if a.rows == 1 {
            return Ok(x);
        }
        // Rows are contiguous, so the last one is a view.
        self.acts.push(ActInfo { off: a.off + ((a.rows - 1) * a.cols) as u32, rows: 1, cols: a.cols, st: St::Ready });
        Ok(Act(self.acts.len() as u32 - 1))
    }

    fn read(&mut self, x: Act) -> Result<Vec<f32>, BackendError> {
        let a = self.ready(x)?;
        Ok(self.flush(Some((a.off, a.rows * a.cols)))?.unwrap_or_default())
    }

    fn retain(&mut self, keep: &[Act]) -> Result<(), BackendError> {
        for &a in keep {
            self.ready(a)?;
        }
        self.flush_group()?;
        // Decode steps are small; reuse pays off for prefill chunks.
        if self.rec.act_bytes() < self.reuse_bytes {
            return Ok(());
        }
        let infos = keep.iter().map(|&a| self.act(a)).collect::<Result<Vec<_>, _>>()?;
        let base = self.rec.act_base();
        let need: usize = infos.iter().map(|a| (a.rows * a.cols).next_multiple_of(64)).sum();
        if infos.iter().any(|a| (a.off as usize) < base as usize + need) || !self.rec.truncate(base) {
            return Ok(());
        }
        // Everything pending refers to memory about to be reused; nothing but `keep` is read again.
        self.lazy_norms.clear();
        self.lazy_ropes.clear();
        self.lazy_combines.clear();
        // Move the survivors to the bottom; copies run in order before anything reuses the space.
        for (&a, info) in keep.iter().zip(infos) {
            let moved = self.slice_cols(info, 0, info.cols)?;
            let new = self.act(moved)?;
            self.acts[a.0 as usize].off = new.off;
        }
        Ok(())
    }

    fn argmax(&mut self, x: Act, cols: usize) -> Result<Vec<u32>, BackendError> {
        self.argmax_rows(x, cols)
    }

    fn mask_logits(&mut self, x: Act, banned: &[u32]) -> Result<Act, BackendError> {
        self.mask(x, banned)
    }

    fn mask_logits_rows(&mut self, x: Act, banned: &[&[u32]]) -> Result<Act, BackendError> {
        self.mask_rows(x, banned)
    }

    fn sample(&mut self, x: Act, p: &DeviceSampling, u01: f32) -> Result<u32, BackendError> {
        self.sample_one(x, p, u01)
    }

    fn sample_rows(&mut self, x: Act, cols: usize, picks: &[(DeviceSampling, f32)]) -> Result<Vec<u32>, BackendError> {
        self.draw_rows(x, cols, picks)
    }

    fn edit_logits(&mut self, x: Act, edits: &[hangar_engine::backend::LogitEdit]) -> Result<Act, BackendError> {
        self.edit(x, edits)
    }
}
