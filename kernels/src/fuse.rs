//! Kernel fusion for decode. Ops that a later op can absorb are not dispatched when the graph
//! calls them; they are recorded and emitted when their result is needed:
//!
//! - a full-row norm becomes the prologue of the matvecs that read it;
//! - consecutive matvecs of the same input (Q, K, V) become one matvec dispatch over their
//!   concatenated rows (a "group"); a group covers every token of its input, one row of a
//!   batched decode step per sequence, each computed as it would be alone;
//! - `ffn_act(gate, up)` of a two-part group turns it into a gate/up matvec producing
//!   `act(gate) * up`; `add(linear, x)` of a one-part group adds the residual in its epilogue;
//! - `rope` of q and k is applied as attention loads q and as k is written to the cache.
//!
//! Anything else that reads a pending result first emits it ([`GpuBackend::ready`]), so every
//! fused path computes exactly what the separate ops would.

use hangar_engine::backend::{Act, BackendError, NormParams};
use hangar_engine::quant::GgmlType;
use hangar_engine::spec::{Activation, NormKind};

use crate::backend::{shape, u, ActInfo, GpuBackend, St};
use crate::pipelines::{has_q8_unit, MvInput, Op};
use crate::recorder::{grid, Binds};

/// About how many workgroups a decode matvec is spread over (see `flush_group`), on a GPU and
/// on a CPU driver, where a few large workgroups measured best.
const MV_WORKGROUPS: usize = 256;
const MV_WORKGROUPS_CPU: usize = 4;

/// Row groups per matvec workgroup set by hand, for tuning (HANGAR_MV_GROUPS: N, or aN for
/// about N workgroups).
#[derive(Clone, Copy, Debug)]
pub(crate) enum MvGroups {
    Fixed(usize),
    Target(usize),
}

impl MvGroups {
    pub(crate) fn from_env() -> Option<MvGroups> {
        let v = std::env::var("HANGAR_MV_GROUPS").ok()?;
        match v.strip_prefix('a') {
            Some(w) => w.parse().ok().map(MvGroups::Target),
            None => v.parse().ok().map(MvGroups::Fixed),
        }
    }
}

const NO_BIAS: u32 = u32::MAX;

/// Rows at least this wide walk two blocks per matvec iteration, so both loads are in flight
/// together; narrower rows do better with one (fewer registers live). H100, Q4_0 tg128 against
/// pairs everywhere: 1.5B-like 450 -> 495 tok/s, 135M 852 -> 861, 8B unchanged at 256.
pub(crate) const MV_PAIR_COLS: usize = 4096;

/// Matvecs that would spread over fewer workgroups than this in the wide layout take the lean
/// one (HANGAR_MV_LEAN overrides it). H100 tg128 against the wide layout everywhere: 135M Q4_0
/// 890 -> 949 tok/s, 1.5B-like Q4_0 502 -> 511-520; lean for every matvec lost on big ones
/// (8B Q4_0 262 -> 215: fewer bytes in flight per invocation), and a bound of 256 gained less.
pub(crate) const MV_LEAN_BELOW: usize = 128;

/// Q4_0 matvecs at least this wide (and Q8_0 ones, when switched on) take their input as 8-bit
/// blocks and dot with packed integer dot products (mv.wgsl's `stage_q8`), four blocks a step
/// (HANGAR_MV_Q8=N overrides it).
/// H200, 8B Q4_0 tg128 in one call: 248 -> 296 tok/s, and 331-333 with the workgroups below;
/// narrower ones stay in floats, where the quantizing costs more than it saves (135M with
/// every matvec 8-bit: 951 -> 840-854).
pub const MV_Q8_FROM: usize = 2048;

/// Whether lean-layout matvecs (too few rows to fill the GPU in the wide layout) take 8-bit
/// inputs. They did not pay: H200 tg128, 1.5B-like Q4_0 (its down projection lean) 503-506
/// tok/s with them, 528-530 without; Q8_0 (switched on) 508-511 against 543; the 8B, whose
/// matvecs are all wide, unchanged (331-332). One block a step leaves the integer dot products
/// little to hide, and each workgroup quantizes the whole input for few rows.
pub(crate) const MV_Q8_LEAN: bool = false;

/// About how many workgroups an 8-bit-input matvec is spread over on a GPU: about one per SM
/// of an H100 or H200 (132), each staging its input once for more rows. H200, 8B Q4_0: 64 ->
/// 241 tok/s, 96 -> 290, 128 -> 331-333, 132 -> 331-333, 256 -> 296, 512 -> 273.
const MV_WORKGROUPS_Q8: usize = 128;

/// Most bytes of attention partials the workgroups of one matvec may re-read between them to
/// merge the partials themselves instead of waiting on a merge dispatch.
const COMBINE_FOLD_BYTES: usize = 8 << 20;

/// A norm not yet dispatched: its input, weights (arena, offset) and parameters.
#[derive(Clone, Copy, Debug)]
pub struct LazyNorm {
    pub src: ActInfo,
    pub w: Option<(u32, u32)>,
    pub b: Option<(u32, u32)>,
    pub p: NormParams,
}

/// A rope not yet dispatched.
#[derive(Clone, Copy, Debug)]
pub struct LazyRope {
    pub src: Act,
    pub head_dim: usize,
    pub pos0: usize,
    pub n_rot: usize,
    pub neox: bool,
    pub freq_off: u32,
    pub freq_scale: f32,
}

/// Attention's split-context merge not yet dispatched: where the per-slice partials are.
#[derive(Clone, Copy, Debug)]
pub struct LazyCombine {
    pub part_off: u32,
    pub n: usize,
    pub n_head: usize,
    pub head_dim: usize,
    pub n_chunks: usize,
}

#[derive(Clone, Copy, Debug)]
pub struct Part {
    pub w_off: u32,
    pub rows: u32,
    pub out: Act,
    pub out_off: u32,
    /// (arena, offset) of the bias.
    pub bias: Option<(u32, u32)>,
}

/// Matvecs of one input (every token of it) waiting to be dispatched together.
#[derive(Clone, Debug)]
pub struct Group {
    pub x: Act,
    pub ty: GgmlType,
    pub cols: usize,
    pub row_words: u32,
    pub arena_w: u32,
    pub parts: Vec<Part>,
    /// (activation, output act, its offset): the parts are gate and up.
    pub gated: Option<(Activation, Act, u32)>,
    /// (residual offset, sum act, its offset).
    pub residual: Option<(u32, Act, u32)>,
}

impl GpuBackend {
    /// The activation's data, dispatching whatever pending op produces it.
    pub(crate) fn ready(&mut self, a: Act) -> Result<ActInfo, BackendError> {
        let info = self.act(a)?;
        match info.st {
            St::Ready => {}
            St::Group => self.flush_group()?,
            St::Norm(i) => {
                let n = *self.lazy_norms.get(i as usize).ok_or_else(|| BackendError::BadHandle(format!("{a:?} (dead)")))?;
                self.dispatch_norm(n.src, info.off, n.w, n.b, n.p)?;
            }
            St::Rope(i) => {
                let r = *self.lazy_ropes.get(i as usize).ok_or_else(|| BackendError::BadHandle(format!("{a:?} (dead)")))?;
                let src = self.ready(r.src)?;
                self.dispatch_rope(src, info.off, &r)?;
            }
            St::Combine(i) => {
                let c = *self.lazy_combines.get(i as usize).ok_or_else(|| BackendError::BadHandle(format!("{a:?} (dead)")))?;
                self.dispatch_combine(&c, info.off)?;
            }
        }
        self.set_ready(a);
        self.act(a)
    }

    pub(crate) fn set_ready(&mut self, a: Act) {
        if let Some(i) = self.acts.get_mut(a.0 as usize) {
            i.st = St::Ready;
        }
    }

    pub(crate) fn dispatch_norm(
        &mut self,
        x: ActInfo,
        off: u32,
        w: Option<(u32, u32)>,
        b: Option<(u32, u32)>,
        p: NormParams,
    ) -> Result<(), BackendError> {
        let runs = x.rows * x.cols / p.group;
        let flags = w.is_some() as u32 | (b.is_some() as u32) << 1 | (p.add_one as u32) << 2;
        let kind = matches!(p.kind, NormKind::Layer) as u32;
        let params = [
            x.off,
            off,
            p.group as u32,
            u(runs, "norm runs")?,
            w.map_or(0, |w| w.1),
            b.map_or(0, |b| b.1),
            flags,
            kind,
            p.eps.to_bits(),
        ];
        let (gx, gy) = grid(&self.gpu, u(runs, "norm runs")?);
        // The bias is read through the matrix binding, so weight and bias may sit in different arenas.
        let binds = Binds { arena_w: b.map(|b| b.0), arena_v: w.map(|w| w.0), kv: None };
        self.rec.dispatch(Op::Norm, None, &params, [gx, gy, 1], binds);
        Ok(())
    }

    pub(crate) fn dispatch_rope(&mut self, x: ActInfo, off: u32, r: &LazyRope) -> Result<(), BackendError> {
        let total = x.rows * x.cols;
        let p = [
            x.off,
            off,
            x.cols as u32,
            r.head_dim as u32,
            r.n_rot as u32,
            u(r.pos0, "position")?,
            r.neox as u32,
            u(total, "activation")?,
            r.freq_off,
            r.freq_scale.to_bits(),
        ];
        let wg = self.threads(total)?;
        self.rec.dispatch(Op::Rope, None, &p, wg, Binds::default());
        Ok(())
    }

    pub(crate) fn dispatch_combine(&mut self, c: &LazyCombine, off: u32) -> Result<(), BackendError> {
        let p = [c.part_off, off, c.n as u32, c.n_head as u32, c.head_dim as u32, c.n_chunks as u32];
        let (gx, gy) = grid(&self.gpu, u(c.n * c.n_head, "attention rows")?);
        self.rec.dispatch(Op::AttnCombine, None, &p, [gx, gy, 1], Binds::default());
        Ok(())
    }

    /// The pending merge of `x`, if the matvec reading it can take it on: its workgroup memory
    /// holds one weight per (head, slice), and every workgroup re-reads all the partials, which
    /// pays against a dispatch only while their total stays small.
    fn foldable_combine(&self, x: &ActInfo, n_wg: usize) -> Option<LazyCombine> {
        let St::Combine(i) = x.st else { return None };
        let c = *self.lazy_combines.get(i as usize)?;
        let reads = n_wg * c.n_head * c.n_chunks * c.head_dim * 4;
        // The plain matvec's 20 KiB of workgroup memory, plus two floats per (head, slice).
        let room = self.gpu.limits.max_compute_workgroup_storage_size >= (20 + 4) << 10;
        (c.n_head * c.n_chunks <= 512 && room && reads <= COMBINE_FOLD_BYTES).then_some(c)
    }

    /// Emits the open group, if any.
    pub(crate) fn flush_group(&mut self) -> Result<(), BackendError> {
        let Some(g) = self.group.take() else { return Ok(()) };
        let xi = self.act(g.x)?;
        // The norm prologue needs its weights in the vector arena the biases use.
        let mut norm = match xi.st {
            St::Norm(i) => self.lazy_norms.get(i as usize).copied(),
            _ => None,
        };
        let vec_arena = g.parts.iter().find_map(|p| p.bias.map(|b| b.0));
        if let Some(n) = norm {
            let arenas = [n.w.map(|w| w.0), n.b.map(|b| b.0), vec_arena];
            let mut it = arenas.iter().flatten();
            let first = it.next().copied();
            if it.any(|&a| Some(a) != first) {
                norm = None;
            }
        }
        let units = g.cols.div_ceil(32);
        let ss = self.gpu.pipelines.subgroup_size.unwrap_or(1) as usize;
        let rows: u32 = if g.gated.is_some() { g.parts[0].rows } else { g.parts.iter().map(|p| p.rows).sum() };
        // About sixteen blocks per invocation (one warp per row for 4096-wide rows, which
        // measured fastest on the H100): enough loads in flight per invocation, and the
        // workgroup's fixed costs spread over many rows. The norm prologue costs a read of the whole input
        // per workgroup, so with plenty of rows a workgroup takes more of them.
        let cpu = self.gpu.adapter_info.device_type == wgpu::DeviceType::Cpu;
        let mut t = match self.mv_threads {
            Some(t) => t.clamp(ss.max(1), 256),
            // A CPU driver (lavapipe) runs a workgroup as SIMD batches of one subgroup, and its
            // barriers are what cost: one subgroup per row reduces without any (SmolLM2 decode on
            // lavapipe 1.5 -> 6 tok/s with the row groups below).
            None if cpu => ss.max(8).min(256),
            None => (units / 16).next_power_of_two().clamp(32.max(ss), 256),
        };
        if norm.is_some() && t > 32.max(ss) && rows as usize / (256 / t) > 4096 {
            t /= 2;
        }
        let gated = g.gated.is_some();
        // Rows per workgroup of `t` invocations a slot: wide, an invocation takes two rows (a
        // gated pair counts as one); lean, one row a slot, and a gated pair takes two slots.
        let per_wg_of = |t: usize, lean: bool| {
            let slots = (256 / t) as u32;
            match (lean, gated) {
                (false, false) => 2 * slots,
                (true, true) => slots / 2,
                _ => slots,
            }
        };
        // Matvecs too small to fill the GPU in the wide layout (two rows, two blocks per
        // invocation) take the lean one, twice the workgroups of fewer registers each.
        let lean = self.gpu.pipelines.subgroup_size.is_some() && (rows.div_ceil(per_wg_of(t, false)) as usize) < self.mv_lean_below;
        if lean && gated {
            t = t.min(128);
        }
        let r_per_wg = 256 / t;
        let per_wg = per_wg_of(t, lean);
        let n_wg = rows.div_ceil(per_wg) as usize;
        let combine = if norm.is_none() { self.foldable_combine(&xi, n_wg) } else { None };
        let x = match norm {
            Some(n) => n.src,
            None if combine.is_some() => xi,
            None => self.ready(g.x)?,
        };
        // The input is staged with vector loads.
        let x = if combine.is_none() && x.off % 4 != 0 { self.aligned_copy(x)? } else { x };
        let mut p = [0u32; 32];
        p[0] = g.cols as u32;
        p[1] = g.row_words;
        p[2] = x.off;
        p[3] = g.parts.len() as u32;
        p[4] = g.residual.is_some() as u32 | (g.gated.is_some() as u32) << 1 | ((g.cols >= self.mv_pair_cols) as u32) << 2;
        p[5] = rows;
        p[6] = r_per_wg as u32;
        p[7] = matches!(g.gated, Some((Activation::GeGlu, _, _))) as u32;
        for (i, part) in g.parts.iter().enumerate() {
            p[8 + i] = part.w_off;
            p[12 + i] = part.rows;
            p[16 + i] = part.out_off;
            p[20 + i] = part.bias.map_or(NO_BIAS, |b| b.1);
        }
        for i in g.parts.len()..4 {
            p[20 + i] = NO_BIAS;
        }
        if let Some((res, _, sum)) = g.residual {
            p[24] = res;
            p[25] = sum;
        }
        if let Some((_, _, out)) = g.gated {
            p[25] = out;
        }
        let mut arena_v = vec_arena;
        if let Some(n) = norm {
            p[26] = n.w.map_or(0, |w| w.1);
            p[27] = n.b.map_or(0, |b| b.1);
            p[28] = n.p.eps.to_bits();
            p[29] = matches!(n.p.kind, NormKind::Layer) as u32;
            p[30] = n.w.is_some() as u32 | (n.b.is_some() as u32) << 1 | (n.p.add_one as u32) << 2;
            arena_v = arena_v.or(n.w.map(|w| w.0)).or(n.b.map(|b| b.0));
        }
        if let Some(c) = combine {
            p[26] = c.part_off;
            p[27] = c.n_chunks as u32;
            p[29] = c.head_dim as u32;
        }
        // Tokens: the input's rows; a one-part group's output rows may be wider than the part.
        p[31] = u(xi.rows, "tokens")?;
        if g.parts.len() == 1 {
            p[13] = u(self.act(g.parts[0].out)?.cols, "row")?;
        }
        let input = match (norm, combine) {
            (Some(_), _) => MvInput::Norm,
            (None, Some(_)) => MvInput::Combine,
            (None, None) => MvInput::Plain,
        };
        let q8 = (!lean || self.mv_q8_lean) && g.cols >= self.mv_q8_from && has_q8_unit(g.ty);
        self.q8_dispatches += q8 as u64;
        // Large matrices give each workgroup several sets of rows, so the norm statistics
        // and the staged input serve more of them: about 256 workgroups measured best on
        // the H100 for float inputs (8B Q4_0 decode 202 -> 226-233 tok/s; 128 or fewer
        // serialize too much per workgroup), about 128 for 8-bit ones (MV_WORKGROUPS_Q8);
        // lavapipe runs a few workgroups on its threads, so there each takes a quarter of the rows.
        let groups = match self.mv_groups {
            Some(MvGroups::Fixed(g)) => g,
            Some(MvGroups::Target(w)) => n_wg.div_ceil(w.max(1)),
            None if cpu => n_wg.div_ceil(MV_WORKGROUPS_CPU),
            None => n_wg.div_ceil(if q8 { MV_WORKGROUPS_Q8 } else { MV_WORKGROUPS }),
        }
        .clamp(1, 64) as u32;
        p[7] |= groups << 8;
        let (op, n_wg) = (Op::Mv { input, lean, q8 }, rows.div_ceil(per_wg * groups));
        let (gx, gy) = grid(&self.gpu, n_wg * p[31]);
        self.rec.dispatch(op, Some(g.ty), &p, [gx, gy, 1], Binds { arena_w: Some(g.arena_w), arena_v, kv: None });
        for part in &g.parts {
            self.set_ready(part.out);
        }
        if let Some((_, a, _)) = g.gated {
            self.set_ready(a);
        }
        if let Some((_, a, _)) = g.residual {
            self.set_ready(a);
        }
        Ok(())
    }

    /// A copy of `x` at a 4-element boundary (vector loads need one).
    fn aligned_copy(&mut self, x: ActInfo) -> Result<ActInfo, BackendError> {
        let a = self.slice_cols(x, 0, x.cols)?;
        self.act(a)
    }

    /// Whether a matvec of `x` can join or start a group, and which.
    pub(crate) fn group_linear(
        &mut self,
        x: Act,
        ty: GgmlType,
        cols: usize,
        row_words: u32,
        seg: crate::arena::Segment,
        bias: Option<(u32, u32)>,
    ) -> Result<Act, BackendError> {
        let joins = self.group.as_ref().is_some_and(|g| {
            g.x == x
                && g.ty == ty
                && g.cols == cols
                && g.row_words == row_words
                && g.arena_w == seg.arena
                && g.parts.len() < 3
                && g.gated.is_none()
                && g.residual.is_none()
                && match (bias, g.parts.iter().find_map(|p| p.bias)) {
                    (Some(b), Some(o)) => b.0 == o.0,
                    _ => true,
                }
        });
        if !joins {
            self.flush_group()?;
        }
        let n = self.act(x)?.rows;
        let (out, out_off) = self.new_act(n, seg.rows as usize)?;
        self.acts[out.0 as usize].st = St::Group;
        let part = Part { w_off: seg.word_off, rows: seg.rows, out, out_off, bias };
        match self.group.as_mut() {
            Some(g) if joins => g.parts.push(part),
            _ => {
                self.group =
                    Some(Group { x, ty, cols, row_words, arena_w: seg.arena, parts: vec![part], gated: None, residual: None })
            }
        }
        Ok(out)
    }

    /// `act(gate) * up` folded into the open group when it holds exactly gate and up.
    pub(crate) fn try_fuse_gated(&mut self, gate: Act, up: Act, act: Activation) -> Result<Option<Act>, BackendError> {
        if !matches!(act, Activation::SwiGlu | Activation::GeGlu) {
            return Ok(None);
        }
        let ok = self.group.as_ref().is_some_and(|g| {
            g.parts.len() == 2
                && g.gated.is_none()
                && g.residual.is_none()
                && g.parts[0].rows == g.parts[1].rows
                && ((g.parts[0].out == gate && g.parts[1].out == up) || (g.parts[0].out == up && g.parts[1].out == gate))
        });
        if !ok {
            return Ok(None);
        }
        let (rows, x) = self.group.as_ref().map_or((0, gate), |g| (g.parts[0].rows as usize, g.x));
        let n = self.act(x)?.rows;
        let (out, off) = self.new_act(n, rows)?;
        self.acts[out.0 as usize].st = St::Group;
        if let Some(g) = self.group.as_mut() {
            if g.parts[0].out != gate {
                g.parts.swap(0, 1);
            }
            g.gated = Some((act, out, off));
        }
        Ok(Some(out))
    }

    /// `a + b` folded into the open one-part group when one side is its output.
    pub(crate) fn try_fuse_residual(&mut self, a: Act, b: Act) -> Result<Option<Act>, BackendError> {
        let Some(g) = self.group.as_ref() else { return Ok(None) };
        if g.parts.len() != 1 || g.gated.is_some() || g.residual.is_some() {
            return Ok(None);
        }
        let out = g.parts[0].out;
        let other = if a == out {
            b
        } else if b == out {
            a
        } else {
            return Ok(None);
        };
        let (oi, li) = (self.act(other)?, self.act(out)?);
        if !matches!(oi.st, St::Ready) || (oi.rows, oi.cols) != (li.rows, li.cols) {
            return Ok(None);
        }
        let (sum, off) = self.new_act(li.rows, li.cols)?;
        self.acts[sum.0 as usize].st = St::Group;
        if let Some(g) = self.group.as_mut() {
            g.residual = Some((oi.off, sum, off));
        }
        Ok(Some(sum))
    }

    /// A full-row norm the next matvecs can compute in their prologue (anything else that
    /// reads it dispatches it first).
    pub(crate) fn lazy_norm(&mut self, x: ActInfo, w: Option<(u32, u32)>, b: Option<(u32, u32)>, p: NormParams) -> Result<Option<Act>, BackendError> {
        if x.rows == 0 || p.group != x.cols || !x.cols.is_multiple_of(4) || !matches!(x.st, St::Ready) {
            return Ok(None);
        }
        let (out, _) = self.new_act(x.rows, x.cols)?;
        self.acts[out.0 as usize].st = St::Norm(self.lazy_norms.len() as u32);
        self.lazy_norms.push(LazyNorm { src: x, w, b, p });
        Ok(Some(out))
    }

    /// The rope of `a`, if `a` is a pending rope: (its input, the rope).
    pub(crate) fn pending_rope(&self, a: Act) -> Result<Option<LazyRope>, BackendError> {
        Ok(match self.act(a)?.st {
            St::Rope(i) => self.lazy_ropes.get(i as usize).copied(),
            _ => None,
        })
    }

    /// Shape checks shared by the group paths.
    pub(crate) fn check_linear(&self, name: &str, xa: ActInfo, cols: usize, rows: usize, bias_len: Option<usize>) -> Result<(), BackendError> {
        if xa.cols != cols {
            return Err(shape("linear", format!("{name}: input width {} vs weight rows of {cols}", xa.cols)));
        }
        if bias_len.is_some_and(|l| l != rows) {
            return Err(shape("linear", format!("{name}: bias length differs from {rows} outputs")));
        }
        Ok(())
    }
}
