//! The GPU's KV caches: one sequence's layout (records, key center and int4's exact ring per
//! layer, layers packed into few buffers) and the attention op that writes and reads it
//! (kv_write.wgsl, attention.wgsl). Whole-cache copies and shifts are in `kv_ops`.

use hangar_engine::backend::{Act, AttnParams, BackendError, KvFormat, SeqId};
use hangar_engine::kv::{self, KvPolicy};

use crate::backend::{shape, u, GpuBackend, St};
use crate::fuse::{LazyCombine, LazyRope};
use crate::pipelines::Op;
use crate::recorder::{grid, Binds};

pub(crate) struct KvSeq {
    pub n_layer: usize,
    pub kv_dim: usize,
    pub n_ctx: usize,
    pub format: KvFormat,
    /// Bytes between consecutive layers of one buffer (aligned for dynamic offsets).
    slot: u64,
    layers_per_buf: usize,
    pub bufs: Vec<(wgpu::Buffer, wgpu::BindGroup)>,
    /// The host's copy of each layer's int4 ring position tags (`kv::Ring`), so a prefix copy
    /// can check the source still holds its window without reading the device.
    pub ring_tags: Vec<Vec<u32>>,
}

/// Bytes of one position's records (every head of k, or of v) in a cache of `kv_dim` values.
fn kv_row_bytes(kv_dim: usize, format: KvFormat) -> u64 {
    (kv_dim / format.head_dim) as u64 * 4 * format.policy.record_words(format.head_dim) as u64
}

/// A layer holds `n_ctx` positions of k records, then as many of v (engine/src/kv.rs layouts),
/// then the layer's key-centering vector where the policy centers, then int4's ring of exact
/// vectors.
impl KvSeq {
    pub fn row_bytes(&self) -> u64 {
        kv_row_bytes(self.kv_dim, self.format)
    }

    pub fn center_bytes(&self) -> u64 {
        if self.format.policy.centers(None) {
            4 * self.kv_dim as u64
        } else {
            0
        }
    }

    pub fn ring(&self) -> Option<kv::Ring> {
        kv::Ring::of(self.format.policy, self.kv_dim)
    }

    pub fn ring_bytes(&self) -> u64 {
        self.ring().map_or(0, |r| 4 * r.words() as u64)
    }

    /// (buffer index, byte offset) of a layer's records.
    pub fn layer_at(&self, layer: usize) -> (usize, u64) {
        (layer / self.layers_per_buf, (layer % self.layers_per_buf) as u64 * self.slot)
    }

    /// A layer's buffer index and the byte offsets of its k records, v records, center and ring.
    pub fn regions(&self, layer: usize) -> (usize, [u64; 4]) {
        let (buf, base) = self.layer_at(layer);
        let side = self.n_ctx as u64 * self.row_bytes();
        (buf, [base, base + side, base + 2 * side, base + 2 * side + self.center_bytes()])
    }
}

impl GpuBackend {
    pub(crate) fn seq(&self, seq: SeqId) -> Result<&KvSeq, BackendError> {
        self.seqs.get(&seq.0).ok_or_else(|| BackendError::BadHandle(format!("{seq:?}")))
    }

    pub(crate) fn seq_mut(&mut self, seq: SeqId) -> Result<&mut KvSeq, BackendError> {
        self.seqs.get_mut(&seq.0).ok_or_else(|| BackendError::BadHandle(format!("{seq:?}")))
    }

    fn kv_layer(&self, seq: SeqId, layer: usize) -> Result<(wgpu::BindGroup, u32), BackendError> {
        let s = self.seq(seq)?;
        let (buf, off) = s.layer_at(layer);
        let bg = s.bufs.get(buf).ok_or_else(|| BackendError::BadHandle(format!("layer {layer}")))?;
        Ok((bg.1.clone(), off as u32))
    }

    pub(crate) fn alloc_sequence(&mut self, n_layer: usize, kv_dim: usize, n_ctx: usize, format: KvFormat) -> Result<SeqId, BackendError> {
        let hd = format.head_dim;
        format.policy.check(hd).map_err(|e| shape("kv cache", e.to_string()))?;
        if hd > 256 || !kv_dim.is_multiple_of(hd) {
            return Err(shape("kv cache", format!("kv_dim {kv_dim} in heads of {hd} (at most 256)")));
        }
        let lim = &self.gpu.limits;
        // One layer's records (`KvSeq`'s layout).
        let row_bytes = kv_row_bytes(kv_dim, format);
        let center_bytes = hangar_engine::kv::kv_bytes_per_sequence(format.policy, 1, kv_dim) as u64;
        let bind = (n_ctx as u64).saturating_mul(row_bytes).saturating_mul(2).saturating_add(center_bytes);
        if bind == 0 || bind > self.gpu.max_binding {
            return Err(BackendError::OutOfMemory(format!("a KV cache layer of {bind} bytes exceeds a storage binding")));
        }
        let slot = bind.next_multiple_of(lim.min_storage_buffer_offset_alignment as u64);
        let layers_per_buf = ((lim.max_buffer_size / slot) as usize).clamp(1, n_layer.max(1));
        let mut bufs = Vec::new();
        let mut left = n_layer;
        while left > 0 {
            let here = left.min(layers_per_buf);
            let buffer = self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("kv cache"),
                size: slot * (here as u64 - 1) + bind,
                // Copies serve prefix reuse and context shift (kv_ops).
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let bg = self.gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("kv cache"),
                layout: &self.gpu.pipelines.kv_layout,
                entries: &[wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding { buffer: &buffer, offset: 0, size: wgpu::BufferSize::new(bind) }),
                }],
            });
            bufs.push((buffer, bg));
            left -= here;
        }
        let id = self.next_seq;
        self.next_seq += 1;
        let ring_tags = vec![vec![0; kv::Ring::of(format.policy, kv_dim).map_or(0, |_| kv::Ring::SLOTS)]; n_layer];
        self.seqs.insert(id, KvSeq { n_layer, kv_dim, n_ctx, format, slot, layers_per_buf, bufs, ring_tags });
        Ok(SeqId(id))
    }

    pub(crate) fn record_attention(&mut self, seq: SeqId, layer: usize, pos0: usize, (q, k, v): (Act, Act, Act), p: &AttnParams) -> Result<Act, BackendError> {
        // A pending rope of q or k is applied by the kernels that load them.
        let fits = |r: &LazyRope| r.head_dim == p.head_dim && r.pos0 == pos0;
        let (q_rope, k_rope) = (self.pending_rope(q)?.filter(fits), self.pending_rope(k)?.filter(fits));
        let q = q_rope.map_or(q, |r| r.src);
        let k = k_rope.map_or(k, |r| r.src);
        let (qa, ka, va) = (self.ready(q)?, self.ready(k)?, self.ready(v)?);
        let s = self.seq(seq)?;
        let (kv_dim, n_ctx, format) = (s.kv_dim, s.n_ctx, s.format);
        let n = qa.rows;
        let hd = p.head_dim;
        if qa.cols != p.n_head * hd
            || ka.cols != kv_dim
            || va.cols != kv_dim
            || kv_dim != p.n_head_kv * hd
            || p.n_head_kv == 0
            || !p.n_head.is_multiple_of(p.n_head_kv)
            || ka.rows != n
            || va.rows != n
            || layer >= s.n_layer
            || hd > 256
            || !hd.is_multiple_of(4)
            || hd != format.head_dim
        {
            return Err(shape("attention", format!("q {n}x{}, k/v width {} vs cache {kv_dim}, head_dim {hd}", qa.cols, ka.cols)));
        }
        if pos0 + n > n_ctx {
            return Err(BackendError::ContextFull { pos: pos0, n, n_ctx });
        }
        let kv = self.kv_layer(seq, layer)?;
        // f32 writes one element per invocation, the quantized policies one head vector.
        let per_row = if format.policy == KvPolicy::F32 { kv_dim } else { p.n_head_kv };
        let total = n * per_row;
        let kr = k_rope.unwrap_or(LazyRope { src: k, head_dim: hd, pos0, n_rot: 0, neox: false, freq_off: 0, freq_scale: 1.0 });
        let center = format.policy.centers(p.softcap);
        let mut wp = [
            ka.off,
            va.off,
            u(total, "kv rows")?,
            kv_dim as u32,
            pos0 as u32,
            n_ctx as u32,
            k_rope.is_some() as u32,
            hd as u32,
            kr.n_rot as u32,
            kr.neox as u32,
            kr.freq_off,
            kr.freq_scale.to_bits(),
            center as u32,
        ];
        // A one-token step with the f32 cache appends its k and v inside attention (attention.wgsl)
        // when q and k share their rope, which is how kv_write would rotate k.
        let same_rope = match (q_rope, k_rope) {
            (None, None) => true,
            (Some(a), Some(b)) => (a.n_rot, a.neox, a.freq_off, a.freq_scale.to_bits()) == (b.n_rot, b.neox, b.freq_off, b.freq_scale.to_bits()),
            _ => false,
        };
        let fresh = self.fuse && n == 1 && format.policy == KvPolicy::F32 && !center && same_rope;
        if center && pos0 == 0 {
            // The first write sets the centering vector: one invocation per channel, summing
            // over the rows (`total`, params[2], counts rows for this entry point).
            wp[2] = u(n, "kv rows")?;
            self.rec.dispatch(Op::KvCenter(format.policy), None, &wp, self.threads(kv_dim)?, Binds { kv: Some(kv.clone()), ..Default::default() });
            wp[2] = u(total, "kv rows")?;
        }
        // Decode splits the context over workgroups of 64 positions; prefill has enough
        // (token, head) pairs to fill the device without.
        let span = p.window.map_or(pos0 + n, |w| w.min(pos0 + n));
        let n_chunks = if n == 1 { span.div_ceil(64).clamp(1, 64) } else { 1 };
        let (out, off) = self.new_act(n, qa.cols)?;
        let part_off = if n_chunks > 1 { self.new_act(n * p.n_head * n_chunks, hd + 2)?.1 } else { 0 };
        let qr = q_rope.unwrap_or(LazyRope { src: q, head_dim: hd, pos0, n_rot: 0, neox: false, freq_off: 0, freq_scale: 1.0 });
        let mut ap = [
            qa.off,
            off,
            n as u32,
            p.n_head as u32,
            p.n_head_kv as u32,
            hd as u32,
            pos0 as u32,
            n_ctx as u32,
            kv_dim as u32,
            p.window.map_or(0, |w| w.min(u32::MAX as usize) as u32),
            p.scale.to_bits(),
            p.softcap.unwrap_or(0.0).to_bits(),
            n_chunks as u32,
            part_off,
            q_rope.is_some() as u32,
            qr.freq_off,
            qr.n_rot as u32,
            qr.neox as u32,
            qr.freq_scale.to_bits(),
            0,
            ka.off,
            va.off,
            fresh as u32,
        ];
        // int4 writes and attends its rows a bounded group at a time, so its ring still holds
        // every earlier row's window (kv::Ring); the other policies take the step at once.
        let ring = kv::Ring::of(format.policy, kv_dim);
        let group = if ring.is_some() { kv::Ring::STEP_ROWS } else { n };
        for a in (0..n).step_by(group.max(1)) {
            let rows = group.min(n - a);
            let (da, dq) = (u(a * kv_dim, "kv rows")?, u(a * qa.cols, "attention rows")?);
            if !fresh {
                (wp[0], wp[1], wp[2], wp[4]) = (ka.off + da, va.off + da, u(rows * per_row, "kv rows")?, u(pos0 + a, "kv rows")?);
                // int4 codes each k and v head vector in a workgroup of its own (kv_write.wgsl),
                // the others a head vector per invocation.
                let wg = if ring.is_some() {
                    let (x, y) = grid(&self.gpu, u(2 * rows * per_row, "kv rows")?);
                    [x, y, 1]
                } else {
                    self.threads(rows * per_row)?
                };
                self.rec.dispatch(Op::KvWrite(format.policy), None, &wp, wg, Binds { kv: Some(kv.clone()), ..Default::default() });
            }
            (ap[0], ap[1], ap[2], ap[6]) = (qa.off + dq, off + dq, rows as u32, u(pos0 + a, "attention rows")?);
            let (gx, gy) = grid(&self.gpu, u(rows * p.n_head * n_chunks, "attention rows")?);
            self.rec.dispatch(Op::Attention(format.policy), None, &ap, [gx, gy, 1], Binds { kv: Some(kv.clone()), ..Default::default() });
        }
        if ring.is_some() {
            let tags = &mut self.seq_mut(seq)?.ring_tags[layer];
            (pos0..pos0 + n).for_each(|j| tags[j % kv::Ring::SLOTS] = j as u32 + 1);
        }
        if n_chunks > 1 {
            let c = LazyCombine { part_off, n, n_head: p.n_head, head_dim: hd, n_chunks };
            if self.fuse {
                // The next matvec merges the partials as it stages its input.
                self.acts[out.0 as usize].st = St::Combine(self.lazy_combines.len() as u32);
                self.lazy_combines.push(c);
            } else {
                self.dispatch_combine(&c, off)?;
            }
        }
        Ok(out)
    }
}
