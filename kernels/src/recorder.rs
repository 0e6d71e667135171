//! A step's GPU work, recorded on the host and submitted as ONE command buffer when a result
//! is read back: the params of every dispatch go into one uniform ring (written once per
//! submission; each dispatch selects its slot with a dynamic offset), activations are
//! bump-allocated in one scratch buffer, and small host inputs (token ids, rope tables) are
//! queued writes into the scratch. With binding arrays a pass binds the model's arenas once and
//! each params slot ends with the dispatch's arena indices; without, a dispatch binds its
//! arenas when they differ from the previous dispatch's.

use std::sync::Arc;

use hangar_engine::backend::BackendError;
use hangar_engine::quant::GgmlType;

use crate::arena::Arenas;
use crate::device::Gpu;
use crate::pipelines::{Op, PARAM_BYTES, SEL_BYTES};

/// Activations start on 64-element (256-byte) boundaries.
const ACT_ALIGN: u64 = 64;
/// Elements at the start of the scratch reserved for host uploads, which are written before
/// a submission's first dispatch and so must not share memory with reusable activations.
const UPLOAD_ELEMS: u64 = 1 << 16;

/// Token reads that may be in flight at once (decode keeps at most two).
const RING: usize = 4;
/// Element of the scratch where `argmax_to_device` leaves the token id for the next step's
/// embedding (below the upload area proper).
pub const TOKEN_SLOT: u32 = 0;

/// A token id on its way back to the host.
pub struct PendingWord {
    slot: usize,
    index: wgpu::SubmissionIndex,
    rx: std::sync::mpsc::Receiver<Result<(), wgpu::BufferAsyncError>>,
}

/// Which weight/vector arenas and KV layer a dispatch binds.
#[derive(Clone, Default)]
pub struct Binds {
    pub arena_w: Option<u32>,
    pub arena_v: Option<u32>,
    pub kv: Option<(wgpu::BindGroup, u32)>,
}

struct Dispatch {
    op: Op,
    ty: Option<GgmlType>,
    pipeline: wgpu::ComputePipeline,
    wg: [u32; 3],
    slot: u32,
    binds: Binds,
}

struct Scratch {
    buffer: wgpu::Buffer,
    params: wgpu::Buffer,
    bind_group: wgpu::BindGroup,
    /// Capacity in f32 elements.
    cap: u64,
    param_cap: u64,
    /// The bind group has the binding-array layout (params slot bound again as the selection).
    arrays: bool,
}

pub struct Recorder {
    gpu: Arc<Gpu>,
    param_stride: u64,
    params: Vec<u8>,
    dispatches: Vec<Dispatch>,
    uploads: Vec<(u64, Vec<u8>)>,
    /// Elements of scratch allocated in this step.
    top: u64,
    /// Highest `top` of this step: what the scratch must hold (`truncate` lowers `top`).
    peak: u64,
    /// Elements of the upload area used in this step.
    utop: u64,
    /// An upload overflowed into the activation area: no reuse this step.
    pinned: bool,
    /// `top` at the last submission of this step: activations below it hold data.
    flushed_top: u64,
    scratch: Option<Scratch>,
    readback: Option<wgpu::Buffer>,
    dummy_ro: wgpu::BindGroup,
    dummy_kv: wgpu::BindGroup,
    /// Group 1 of the binding-array layout for a model with no arenas yet.
    dummy_arrays: Option<wgpu::BindGroup>,
    /// Dispatches select their arenas by index in binding arrays bound once per pass.
    arrays: bool,
    /// Submissions so far (tests check decode is one per token).
    pub submits: u64,
    /// Weight and vector arena bind groups set so far (tests check binding arrays set one
    /// per pass, never one per dispatch).
    pub weight_binds: u64,
    /// Dispatches recorded so far (tests check fusion removes some).
    pub dispatched: u64,
    /// Per-dispatch timing, when switched on.
    pub profiler: Option<crate::profile::Profiler>,
    ring: Vec<wgpu::Buffer>,
    ring_busy: [bool; RING],
    ring_next: usize,
}

/// A placeholder bind group of `layout_entries` bindings for kernels that ignore a group.
fn dummy(gpu: &Gpu, layout: &wgpu::BindGroupLayout, layout_entries: u32, label: &str) -> wgpu::BindGroup {
    let buffer = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: 256,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(label),
        layout,
        entries: &(0..layout_entries)
            .map(|binding| wgpu::BindGroupEntry {
                binding,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding { buffer: &buffer, offset: 0, size: wgpu::BufferSize::new(256) }),
            })
            .collect::<Vec<_>>(),
    })
}

/// Splits `n` workgroups over x and y so neither exceeds the per-dimension limit.
pub fn grid(gpu: &Gpu, n: u32) -> (u32, u32) {
    let max = gpu.limits.max_compute_workgroups_per_dimension.max(1);
    if n <= max {
        (n.max(1), 1)
    } else {
        (max, n.div_ceil(max))
    }
}

/// Binding arrays of one placeholder buffer, for kernels run before a model has arenas.
fn dummy_arrays(gpu: &Gpu) -> Option<wgpu::BindGroup> {
    let layouts = gpu.pipelines.arrays.as_ref()?;
    let buffer = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("dummy arena arrays"),
        size: 256,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let bindings = vec![buffer.as_entire_buffer_binding(); layouts.slots as usize];
    let entries: Vec<_> = (0..crate::device::ARENA_VIEWS)
        .map(|binding| wgpu::BindGroupEntry { binding, resource: wgpu::BindingResource::BufferArray(&bindings) })
        .collect();
    Some(gpu.device.create_bind_group(&wgpu::BindGroupDescriptor { label: Some("dummy arena arrays"), layout: &layouts.arenas_layout, entries: &entries }))
}

/// Bytes between params slots: a slot holds the kernel's params (and with binding arrays the
/// arena selection) and starts at a dynamic-offset boundary.
fn param_stride(gpu: &Gpu, arrays: bool) -> u64 {
    let align = gpu.limits.min_uniform_buffer_offset_alignment as u64;
    (if arrays { SEL_BYTES } else { PARAM_BYTES }).next_multiple_of(align.max(16))
}

impl Recorder {
    pub fn new(gpu: Arc<Gpu>) -> Recorder {
        let param_stride = param_stride(&gpu, false);
        let dummy_ro = dummy(&gpu, &gpu.pipelines.arena_layout, 2, "dummy arena");
        let dummy_kv = dummy(&gpu, &gpu.pipelines.kv_layout, 1, "dummy kv");
        let dummy_arrays = dummy_arrays(&gpu);
        Recorder {
            gpu,
            param_stride,
            params: Vec::new(),
            dispatches: Vec::new(),
            uploads: Vec::new(),
            top: UPLOAD_ELEMS,
            peak: UPLOAD_ELEMS,
            utop: ACT_ALIGN,
            pinned: false,
            flushed_top: UPLOAD_ELEMS,
            scratch: None,
            readback: None,
            dummy_ro,
            dummy_kv,
            dummy_arrays,
            arrays: false,
            submits: 0,
            weight_binds: 0,
            dispatched: 0,
            profiler: None,
            ring: Vec::new(),
            ring_busy: [false; RING],
            ring_next: 0,
        }
    }

    /// Switches between binding arrays and one arena per dispatch (on only where the device has
    /// binding arrays). Pending work must have been flushed: recorded slots have the old size.
    pub fn set_binding_arrays(&mut self, on: bool) {
        debug_assert!(self.dispatches.is_empty());
        self.arrays = on && self.gpu.pipelines.arrays.is_some();
        self.param_stride = param_stride(&self.gpu, self.arrays);
    }

    /// Whether dispatches select their arenas in binding arrays.
    pub fn binding_arrays(&self) -> bool {
        self.arrays
    }

    /// Starts a new step: scratch space is reused. Pending work must have been flushed.
    pub fn reset(&mut self) {
        debug_assert!(self.dispatches.is_empty());
        self.top = UPLOAD_ELEMS;
        self.peak = UPLOAD_ELEMS;
        self.utop = ACT_ALIGN;
        self.pinned = false;
        self.flushed_top = UPLOAD_ELEMS;
    }

    /// Bytes of activations allocated in this step.
    pub fn act_bytes(&self) -> u64 {
        (self.top - UPLOAD_ELEMS) * 4
    }

    /// Frees every activation allocated at or after element `at` (callers move what they keep
    /// below it first). Refused (false) when uploads live in that range.
    pub fn truncate(&mut self, at: u32) -> bool {
        if self.pinned || (at as u64) < UPLOAD_ELEMS {
            return false;
        }
        self.top = self.top.min(at as u64);
        true
    }

    pub fn act_base(&self) -> u32 {
        UPLOAD_ELEMS as u32
    }

    /// Allocates `n` f32 elements of scratch; returns the element offset.
    pub fn alloc(&mut self, n: usize) -> Result<u32, BackendError> {
        let off = self.top;
        let end = off + (n as u64).max(1).next_multiple_of(ACT_ALIGN);
        if end * 4 > self.gpu.max_binding {
            return Err(BackendError::OutOfMemory(format!("activations of {} bytes exceed a storage binding", end * 4)));
        }
        self.top = end;
        self.peak = self.peak.max(end);
        Ok(off as u32)
    }

    /// Allocates scratch holding `data`, written before the next submission.
    pub fn upload(&mut self, data: &[f32]) -> Result<u32, BackendError> {
        let n = (data.len() as u64).max(1).next_multiple_of(ACT_ALIGN);
        let off = if self.utop + n <= UPLOAD_ELEMS {
            self.utop += n;
            (self.utop - n) as u32
        } else {
            self.pinned = true;
            self.alloc(data.len())?
        };
        self.uploads.push((off as u64 * 4, bytemuck::cast_slice(data).to_vec()));
        Ok(off)
    }

    pub fn dispatch(&mut self, op: Op, ty: Option<GgmlType>, params: &[u32], wg: [u32; 3], binds: Binds) {
        debug_assert!(params.len() * 4 <= PARAM_BYTES as usize);
        let slot = self.params.len() as u64 / self.param_stride;
        let start = self.params.len();
        self.params.resize(start + self.param_stride as usize, 0);
        self.params[start..start + params.len() * 4].copy_from_slice(bytemuck::cast_slice(params));
        if self.arrays {
            // ArenaSel's w and v, after the Params the kernel sees; arenas a kernel does not
            // read stay 0, a slot every binding array fills.
            let sel = [binds.arena_w.unwrap_or(0), binds.arena_v.unwrap_or(0)];
            let at = start + PARAM_BYTES as usize;
            self.params[at..at + 8].copy_from_slice(bytemuck::cast_slice(&sel));
        }
        let pipeline = self.gpu.pipelines.get(&self.gpu.device, op, ty, self.arrays);
        self.dispatched += 1;
        self.dispatches.push(Dispatch { op, ty, pipeline, wg, slot: slot as u32, binds });
    }

    fn ensure_scratch(&mut self, encoder: &mut wgpu::CommandEncoder) {
        let need = self.peak.max(ACT_ALIGN);
        let need_params = (self.params.len() as u64).max(self.param_stride);
        let ok = self.scratch.as_ref().is_some_and(|s| s.cap >= need && s.param_cap >= need_params && s.arrays == self.arrays);
        if ok {
            return;
        }
        let dev = &self.gpu.device;
        let old = self.scratch.take();
        let max_elems = self.gpu.max_binding / 4;
        let cap = old.as_ref().map_or(need, |s| if s.cap >= need { s.cap } else { (s.cap * 2).max(need).min(max_elems) });
        let param_cap = old.as_ref().map_or(need_params, |s| s.param_cap.max(need_params * 2)).max(need_params);
        let buffer = match &old {
            Some(s) if s.cap == cap => s.buffer.clone(),
            _ => dev.create_buffer(&wgpu::BufferDescriptor {
                label: Some("scratch"),
                size: cap * 4,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
        };
        if let Some(s) = &old {
            let keep = self.flushed_top.min(s.cap);
            if s.cap != cap {
                // The device-side token id lives below the upload area.
                encoder.copy_buffer_to_buffer(&s.buffer, 0, &buffer, 0, ACT_ALIGN * 4);
            }
            if s.cap != cap && keep > UPLOAD_ELEMS {
                // Activations of earlier submissions in this step stay valid. Only those: this
                // submission's uploads are written before the copy runs and must survive it.
                encoder.copy_buffer_to_buffer(&s.buffer, UPLOAD_ELEMS * 4, &buffer, UPLOAD_ELEMS * 4, (keep - UPLOAD_ELEMS) * 4);
            }
        }
        let params = match &old {
            Some(s) if s.param_cap == param_cap => s.params.clone(),
            _ => dev.create_buffer(&wgpu::BufferDescriptor {
                label: Some("params ring"),
                size: param_cap,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
        };
        let param_view = |binding: u32, size: u64| wgpu::BindGroupEntry {
            binding,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding { buffer: &params, offset: 0, size: wgpu::BufferSize::new(size) }),
        };
        let mut entries = vec![
            param_view(0, PARAM_BYTES),
            wgpu::BindGroupEntry { binding: 1, resource: buffer.as_entire_binding() },
            wgpu::BindGroupEntry { binding: 2, resource: buffer.as_entire_binding() },
        ];
        let layout = match self.gpu.pipelines.arrays.as_ref().filter(|_| self.arrays) {
            Some(a) => {
                entries.push(param_view(3, SEL_BYTES));
                &a.scratch_layout
            }
            None => &self.gpu.pipelines.scratch_layout,
        };
        let bind_group = dev.create_bind_group(&wgpu::BindGroupDescriptor { label: Some("params+scratch"), layout, entries: &entries });
        self.scratch = Some(Scratch { buffer, params, bind_group, cap, param_cap, arrays: self.arrays });
    }

    /// Submits everything recorded since the last flush as one command buffer. With `read`
    /// (element offset, count), waits and returns those scratch elements.
    pub fn flush(&mut self, arenas: &Arenas, read: Option<(u32, usize)>) -> Result<Option<Vec<f32>>, BackendError> {
        if self.dispatches.is_empty() && self.uploads.is_empty() && read.is_none() {
            return Ok(None);
        }
        let gpu = self.gpu.clone();
        let encoder = self.encode(arenas)?;
        let out = match read {
            None => {
                gpu.queue.submit([encoder.finish()]);
                None
            }
            Some((off, n)) => Some(self.submit_and_read(encoder, off, n)?),
        };
        self.submits += 1;
        if let Some(p) = self.profiler.as_mut() {
            p.collect(&gpu)?;
        }
        Ok(out)
    }

    /// Submits everything recorded and starts copying one word of the scratch (a token id)
    /// back without waiting; [`Recorder::wait_word`] collects it.
    pub fn flush_async(&mut self, arenas: &Arenas, off: u32) -> Result<PendingWord, BackendError> {
        let gpu = self.gpu.clone();
        let slot = self.ring_next % RING;
        if self.ring_busy[slot] {
            return Err(BackendError::Device("too many token reads in flight".into()));
        }
        if self.ring.len() <= slot {
            self.ring.push(gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("token readback"),
                size: 256,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
        }
        let mut encoder = self.encode(arenas)?;
        let scratch = self.scratch.as_ref().expect("encode ensures the scratch");
        encoder.copy_buffer_to_buffer(&scratch.buffer, off as u64 * 4, &self.ring[slot], 0, 4);
        let index = gpu.queue.submit([encoder.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        self.ring[slot].slice(0..4).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.ring_busy[slot] = true;
        self.ring_next += 1;
        self.submits += 1;
        if let Some(p) = self.profiler.as_mut() {
            p.collect(&gpu)?;
        }
        Ok(PendingWord { slot, index, rx })
    }

    /// Waits for a word started by [`Recorder::flush_async`].
    pub fn wait_word(&mut self, p: PendingWord) -> Result<f32, BackendError> {
        let gpu = self.gpu.clone();
        let r = match p.rx.try_recv() {
            Ok(r) => r,
            Err(_) => {
                gpu.device
                    .poll(wgpu::PollType::Wait { submission_index: Some(p.index), timeout: None })
                    .map_err(|e| BackendError::Device(e.to_string()))?;
                p.rx.recv().map_err(|e| BackendError::Device(e.to_string()))?
            }
        };
        r.map_err(|e| BackendError::Device(e.to_string()))?;
        let buf = &self.ring[p.slot];
        let v = {
            let view = buf.slice(0..4).get_mapped_range().map_err(|e| BackendError::Device(e.to_string()))?;
            f32::from_le_bytes([view[0], view[1], view[2], view[3]])
        };
        buf.unmap();
        self.ring_busy[p.slot] = false;
        Ok(v)
    }

    /// Records the pending dispatches (and queues the params and uploads) into an encoder.
    fn encode(&mut self, arenas: &Arenas) -> Result<wgpu::CommandEncoder, BackendError> {
        let gpu = self.gpu.clone();
        let mut encoder = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("step") });
        self.ensure_scratch(&mut encoder);
        let scratch = self.scratch.as_ref().expect("ensured");
        if !self.params.is_empty() {
            gpu.queue.write_buffer(&scratch.params, 0, &self.params);
        }
        for (off, bytes) in self.uploads.drain(..) {
            gpu.queue.write_buffer(&scratch.buffer, off, &bytes);
        }
        if !self.dispatches.is_empty() {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("step"), timestamp_writes: None });
            let mut cur: [Option<u32>; 2] = [None, None];
            pass.set_bind_group(1, &self.dummy_ro, &[]);
            pass.set_bind_group(2, &self.dummy_ro, &[]);
            pass.set_bind_group(3, &self.dummy_kv, &[0]);
            if self.arrays {
                let all = if arenas.arenas.is_empty() { self.dummy_arrays.as_ref() } else { arenas.arrays.as_ref() };
                let all = all.ok_or_else(|| BackendError::Device("binding arrays without a bind group".into()))?;
                pass.set_bind_group(1, all, &[]);
                self.weight_binds += 1;
            }
            if let Some(p) = self.profiler.as_mut() {
                p.begin(&mut pass);
            }
            for d in &self.dispatches {
                pass.set_pipeline(&d.pipeline);
                let off = (d.slot as u64 * self.param_stride) as u32;
                // The arena selection is the same slot seen through a second binding.
                let offsets = [off, off];
                pass.set_bind_group(0, &scratch.bind_group, &offsets[..if self.arrays { 2 } else { 1 }]);
                for (i, want) in [d.binds.arena_w, d.binds.arena_v].into_iter().enumerate() {
                    if let Some(a) = want {
                        let arena = arenas.arenas.get(a as usize).ok_or_else(|| BackendError::BadHandle(format!("arena {a}")))?;
                        if !self.arrays && cur[i] != Some(a) {
                            pass.set_bind_group(i as u32 + 1, &arena.bind_group, &[]);
                            self.weight_binds += 1;
                            cur[i] = Some(a);
                        }
                    }
                }
                if let Some((bg, off)) = &d.binds.kv {
                    pass.set_bind_group(3, bg, &[*off]);
                }
                pass.dispatch_workgroups(d.wg[0], d.wg[1], d.wg[2]);
                if let Some(p) = self.profiler.as_mut() {
                    let ty = d.ty.map(crate::layout::shader_name).unwrap_or("-");
                    p.after(&mut pass, format!("{:?}/{ty} {}x{}x{}", d.op, d.wg[0], d.wg[1], d.wg[2]));
                }
            }
        }
        if let Some(p) = self.profiler.as_ref() {
            p.resolve(&mut encoder);
        }
        self.dispatches.clear();
        self.params.clear();
        self.flushed_top = self.peak;
        Ok(encoder)
    }

    fn submit_and_read(&mut self, mut encoder: wgpu::CommandEncoder, off: u32, n: usize) -> Result<Vec<f32>, BackendError> {
        let gpu = self.gpu.clone();
        let bytes = (n as u64 * 4).max(4);
        if self.readback.as_ref().is_none_or(|b| b.size() < bytes) {
            self.readback = Some(gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size: bytes.next_multiple_of(256),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
        }
        let rb = self.readback.as_ref().expect("ensured");
        let scratch = self.scratch.as_ref().expect("ensured");
        if n > 0 {
            encoder.copy_buffer_to_buffer(&scratch.buffer, off as u64 * 4, rb, 0, n as u64 * 4);
        }
        let _lock = gpu.submit_lock.lock().unwrap_or_else(|e| e.into_inner());
        let index = gpu.queue.submit([encoder.finish()]);
        if n == 0 {
            return Ok(Vec::new());
        }
        gpu.read_mapped(rb, n as u64 * 4, index, |view| view.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }
}
