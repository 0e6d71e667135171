//! Whole-cache KV operations between steps: copying a prompt prefix from one sequence's cache
//! to another's (prefix reuse), and context shift. A copy is buffer-to-buffer on the device; a
//! shift reads each layer back, re-rotates the moved keys with the engine's
//! `kv::shift_layer` (the CPU cache's own code, so both backends shift alike) and writes the
//! layer back: it happens once per context fill, where a round trip costs little against
//! recomputing the kept window.

use hangar_engine::backend::{BackendError, SeqId};
use hangar_engine::kv;
use hangar_engine::spec::RopeConfig;

use crate::backend::GpuBackend;

impl GpuBackend {
    pub(crate) fn copy_kv_on_device(&mut self, src: SeqId, dst: SeqId, pos0: usize, n: usize) -> Result<(), BackendError> {
        let (a, b) = (self.seq(src)?, self.seq(dst)?);
        if src == dst || (a.n_layer, a.kv_dim, a.format) != (b.n_layer, b.kv_dim, b.format) || pos0 + n > a.n_ctx.min(b.n_ctx) {
            return Err(BackendError::Shape { op: "copy_kv", detail: format!("positions {pos0}..+{n} between caches of other shapes") });
        }
        // The copy's next query reads the newest positions exactly, from the source's ring
        // (which holds them unless it has gone on past them).
        if let Some(r) = a.ring() {
            r.check_copy(&a.ring_tags, pos0 + n)?;
        }
        // Earlier steps' KV writes are submitted before the copy.
        self.submit()?;
        let (a, b) = (self.seq(src)?, self.seq(dst)?);
        let mut enc = self.gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("copy kv") });
        let rb = a.row_bytes();
        let (p, len) = (pos0 as u64 * rb, n as u64 * rb);
        for layer in 0..a.n_layer {
            let ((ia, [ka, va, ca, ra]), (ib, [kb, vb, cb, rb])) = (a.regions(layer), b.regions(layer));
            let (ba, bb) = (&a.bufs[ia].0, &b.bufs[ib].0);
            if len > 0 {
                enc.copy_buffer_to_buffer(ba, ka + p, bb, kb + p, len);
                enc.copy_buffer_to_buffer(ba, va + p, bb, vb + p, len);
            }
            // A prefix from position 0 brings the key center its keys were stored against.
            if pos0 == 0 && a.center_bytes() > 0 {
                enc.copy_buffer_to_buffer(ba, ca, bb, cb, a.center_bytes());
            }
            if a.ring_bytes() > 0 {
                enc.copy_buffer_to_buffer(ba, ra, bb, rb, a.ring_bytes());
            }
        }
        self.gpu.queue.submit([enc.finish()]);
        let tags = a.ring_tags.clone();
        self.seq_mut(dst)?.ring_tags = tags;
        Ok(())
    }

    pub(crate) fn shift_kv_on_device(&mut self, seq: SeqId, n_keep: usize, n_discard: usize, len: usize, ropes: &[&RopeConfig]) -> Result<(), BackendError> {
        let s = self.seq(seq)?;
        kv::check_shift(n_keep, n_discard, len, s.n_ctx, s.n_layer, ropes.len())?;
        self.submit()?;
        let s = self.seq(seq)?;
        let span = len as u64 * s.row_bytes();
        let mut tags = s.ring_tags.clone();
        for ((layer, rope), tags) in ropes.iter().enumerate().zip(tags.iter_mut()) {
            let (i, [k_at, v_at, c_at, r_at]) = s.regions(layer);
            let buf = &s.bufs[i].0;
            let mut words = read_back(&self.gpu, &[(buf, k_at, span), (buf, v_at, span), (buf, c_at, s.center_bytes()), (buf, r_at, s.ring_bytes())])?;
            let (k, rest) = words.split_at_mut((span / 4) as usize);
            let (v, rest) = rest.split_at_mut((span / 4) as usize);
            let (c, ring) = rest.split_at_mut((s.center_bytes() / 4) as usize);
            kv::shift_layer(s.format, s.kv_dim, k, v, bytemuck::cast_slice(c), ring, (n_keep, n_discard), rope);
            self.gpu.queue.write_buffer(buf, k_at, bytemuck::cast_slice(k));
            self.gpu.queue.write_buffer(buf, v_at, bytemuck::cast_slice(v));
            if !ring.is_empty() {
                self.gpu.queue.write_buffer(buf, r_at, bytemuck::cast_slice(ring));
                let n_tags = tags.len();
                tags.copy_from_slice(&ring[..n_tags]);
            }
        }
        self.seq_mut(seq)?.ring_tags = tags;
        Ok(())
    }
}

/// The given (buffer, offset, bytes) ranges, concatenated, as words.
fn read_back(gpu: &crate::Gpu, ranges: &[(&wgpu::Buffer, u64, u64)]) -> Result<Vec<u32>, BackendError> {
    let total: u64 = ranges.iter().map(|r| r.2).sum();
    if total == 0 {
        return Ok(Vec::new());
    }
    let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("kv read-back"),
        size: total,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut enc = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("kv read-back") });
    let mut at = 0;
    for &(buf, off, len) in ranges {
        if len > 0 {
            enc.copy_buffer_to_buffer(buf, off, &staging, at, len);
        }
        at += len;
    }
    let index = gpu.queue.submit([enc.finish()]);
    gpu.read_mapped(&staging, total, index, |view| bytemuck::cast_slice::<u8, u32>(view).to_vec())
}
