//! Whole-cache KV operations between steps: copying a prompt prefix from one sequence's cache
//! to another's (prefix reuse), and context shift. A copy is buffer-to-buffer on the device; a
//! shift reads each layer back, re-rotates the moved keys with the engine's
//! `kv::shift_layer` (the CPU cache's own code, so both backends shift alike) and writes the
//! layer back: it happens once per context fill, where a round trip costs little against
//! recomputing the kept window.

use hangar_engine::backend::{BackendError, SeqId};
use hangar_engine::kv;
use hangar_engine::spec::RopeConfig;

use crate::backend::{GpuBackend, KvSeq};

/// Where a layer's records live: (buffer index, byte offset of the layer, bytes per position).
fn layer_at(s: &KvSeq, layer: usize) -> (usize, u64, u64) {
    let row_bytes = (s.kv_dim / s.format.head_dim) as u64 * 4 * s.format.policy.record_words(s.format.head_dim) as u64;
    (layer / s.layers_per_buf, (layer % s.layers_per_buf) as u64 * s.slot, row_bytes)
}

fn center_bytes(s: &KvSeq) -> u64 {
    kv::kv_bytes_per_sequence(s.format.policy, 1, s.kv_dim) as u64
}

impl GpuBackend {
    fn seq(&self, seq: SeqId) -> Result<&KvSeq, BackendError> {
        self.seqs.get(&seq.0).ok_or_else(|| BackendError::BadHandle(format!("{seq:?}")))
    }

    pub(crate) fn copy_kv_on_device(&mut self, src: SeqId, dst: SeqId, pos0: usize, n: usize) -> Result<(), BackendError> {
        let (a, b) = (self.seq(src)?, self.seq(dst)?);
        if src == dst || (a.n_layer, a.kv_dim, a.format) != (b.n_layer, b.kv_dim, b.format) || pos0 + n > a.n_ctx.min(b.n_ctx) {
            return Err(BackendError::Shape { op: "copy_kv", detail: format!("positions {pos0}..+{n} between caches of other shapes") });
        }
        // Earlier steps' KV writes are submitted before the copy.
        self.submit()?;
        let (a, b) = (self.seq(src)?, self.seq(dst)?);
        let mut enc = self.gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("copy kv") });
        for layer in 0..a.n_layer {
            let ((ia, la, rb), (ib, lb, _)) = (layer_at(a, layer), layer_at(b, layer));
            let (ba, bb) = (&a.bufs[ia].0, &b.bufs[ib].0);
            let (p, len) = (pos0 as u64 * rb, n as u64 * rb);
            if len > 0 {
                enc.copy_buffer_to_buffer(ba, la + p, bb, lb + p, len);
                enc.copy_buffer_to_buffer(ba, la + a.n_ctx as u64 * rb + p, bb, lb + b.n_ctx as u64 * rb + p, len);
            }
            // A prefix from position 0 brings the key center its keys were stored against.
            if pos0 == 0 && center_bytes(a) > 0 {
                enc.copy_buffer_to_buffer(ba, la + 2 * a.n_ctx as u64 * rb, bb, lb + 2 * b.n_ctx as u64 * rb, center_bytes(a));
            }
        }
        self.gpu.queue.submit([enc.finish()]);
        Ok(())
    }

    pub(crate) fn shift_kv_on_device(&mut self, seq: SeqId, n_keep: usize, n_discard: usize, len: usize, ropes: &[&RopeConfig]) -> Result<(), BackendError> {
        let s = self.seq(seq)?;
        if n_keep + n_discard > len || len > s.n_ctx || ropes.len() != s.n_layer {
            return Err(BackendError::Shape { op: "shift_kv", detail: format!("keep {n_keep}, discard {n_discard} of {len} in {}", s.n_ctx) });
        }
        self.submit()?;
        let s = self.seq(seq)?;
        for (layer, rope) in ropes.iter().enumerate() {
            let (i, base, rb) = layer_at(s, layer);
            let buf = &s.bufs[i].0;
            let span = len as u64 * rb;
            let v_at = base + s.n_ctx as u64 * rb;
            let c_at = base + 2 * s.n_ctx as u64 * rb;
            let words = read_back(&self.gpu, &[(buf, base, span), (buf, v_at, span), (buf, c_at, center_bytes(s))])?;
            let (k, rest) = words.split_at((span / 4) as usize);
            let (v, c) = rest.split_at((span / 4) as usize);
            let (mut k, mut v) = (k.to_vec(), v.to_vec());
            let center: &[f32] = bytemuck::cast_slice(c);
            kv::shift_layer(s.format, s.kv_dim, &mut k, &mut v, center, (n_keep, n_discard), rope);
            self.gpu.queue.write_buffer(buf, base, bytemuck::cast_slice(&k));
            self.gpu.queue.write_buffer(buf, v_at, bytemuck::cast_slice(&v));
        }
        self.gpu.queue.submit([]);
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
    let slice = staging.slice(..);
    let (tx, rx) = std::sync::mpsc::channel();
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    let dev = |e: String| BackendError::Device(e);
    gpu.device.poll(wgpu::PollType::Wait { submission_index: Some(index), timeout: None }).map_err(|e| dev(e.to_string()))?;
    rx.recv().map_err(|e| dev(e.to_string()))?.map_err(|e| dev(e.to_string()))?;
    let words = {
        let view = slice.get_mapped_range().map_err(|e| dev(e.to_string()))?;
        bytemuck::cast_slice::<u8, u32>(&view).to_vec()
    };
    staging.unmap();
    Ok(words)
}
