//! Weight arenas: a model's tensors packed into a few large storage buffers, each no bigger
//! than one storage binding. A tensor is an (arena, word offset, type, shape) handle; one
//! bigger than a binding is split by rows over several arenas. Each arena has its own bind
//! group (the one-arena-per-dispatch path); with binding arrays the model also gets one bind
//! group holding every arena, which kernels index. Loads are only planned when
//! `load_weight` is called; the buffers are created and filled straight from the file mapping
//! (repacking blocks, see `layout`) when the first step needs them, so the model is never
//! copied on the host.

use std::sync::Arc;

use hangar_engine::backend::BackendError;
use hangar_engine::gguf::GgufFile;
use hangar_engine::quant::{self, GgmlType};

use crate::device::Gpu;
use crate::layout;

/// Tensors start on 256-byte boundaries, so wider loads stay aligned.
const ALIGN: u64 = 256;

/// Rows `row0..row0 + rows` of a matrix, stored at `word_off` of `arena`.
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    pub arena: u32,
    pub word_off: u32,
    pub row0: u32,
    pub rows: u32,
}

#[derive(Clone, Debug)]
pub enum GpuWeight {
    /// A matrix in its quantized GPU layout.
    Matrix { name: String, ty: GgmlType, rows: usize, cols: usize, row_words: u32, segs: Vec<Segment> },
    /// A vector (norm weight, bias) expanded to f32.
    Vector { arena: u32, off: u32, len: usize },
}

enum Item {
    Rows { file: Arc<GgufFile>, index: usize, row0: usize, rows: usize, byte_off: u64 },
    Vector { file: Arc<GgufFile>, index: usize, byte_off: u64 },
}

struct Plan {
    size: u64,
    items: Vec<Item>,
}

pub struct Arena {
    pub buffer: wgpu::Buffer,
    pub bind_group: wgpu::BindGroup,
}

pub struct Arenas {
    max_bytes: u64,
    pub arenas: Vec<Arena>,
    /// Planned arenas not yet created; their indices follow `arenas`.
    plans: Vec<Plan>,
    /// Arenas per binding array while this model binds them that way; `None` binds one arena
    /// per dispatch.
    pub slots: Option<u32>,
    /// Every arena in one bind group (binding arrays), made when the arenas are.
    pub arrays: Option<wgpu::BindGroup>,
}

fn err(name: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Shape { op: "load_weight", detail: format!("{name}: {e}") }
}

impl Arenas {
    /// `slots`: bind the arenas as binding arrays of this length.
    pub fn new(max_bytes: u64, slots: Option<u32>) -> Arenas {
        Arenas { max_bytes: max_bytes.max(ALIGN) & !15, arenas: Vec::new(), plans: Vec::new(), slots, arrays: None }
    }

    pub fn has_pending(&self) -> bool {
        !self.plans.is_empty()
    }

    /// Bytes planned or uploaded so far.
    pub fn total_bytes(&self) -> u64 {
        self.arenas.iter().map(|a| a.buffer.size()).sum::<u64>() + self.plans.iter().map(|p| p.size).sum::<u64>()
    }

    /// Room for `bytes` in the open plan (the last one), opening a new plan when it is full.
    /// Returns (arena index, byte offset).
    fn place(&mut self, bytes: u64) -> (u32, u64) {
        let fits = |p: &Plan| p.size.next_multiple_of(ALIGN) + bytes <= self.max_bytes;
        if !self.plans.last().is_some_and(fits) {
            self.plans.push(Plan { size: 0, items: Vec::new() });
        }
        let idx = self.arenas.len() + self.plans.len() - 1;
        let p = self.plans.last_mut().expect("a plan was just ensured");
        let off = p.size.next_multiple_of(ALIGN);
        p.size = off + bytes;
        (idx as u32, off)
    }

    /// Plans `file`'s tensor `index`. Vectors become f32; matrices keep their blocks.
    pub fn plan(&mut self, file: &Arc<GgufFile>, index: usize) -> Result<GpuWeight, BackendError> {
        let info = &file.tensors()[index];
        let name = info.name.clone();
        if info.dims.iter().skip(1).all(|&d| d == 1) {
            if !quant::supports_dequantize(info.ty) {
                return Err(BackendError::UnsupportedType { name, ty: info.ty, backend: "gpu" });
            }
            let len = info.row_len();
            let bytes = len as u64 * 4;
            if bytes > self.max_bytes {
                return Err(err(&name, "vector larger than a storage binding"));
            }
            let (arena, off) = self.place(bytes);
            let last = self.plans.last_mut().expect("placed");
            last.items.push(Item::Vector { file: file.clone(), index, byte_off: off });
            return Ok(GpuWeight::Vector { arena, off: (off / 4) as u32, len });
        }
        if !layout::supported(info.ty) {
            return Err(BackendError::UnsupportedType { name, ty: info.ty, backend: "gpu" });
        }
        let (rows, cols) = (info.n_rows(), info.row_len());
        let row_bytes = layout::gpu_row_bytes(info.ty, cols) as u64;
        if row_bytes == 0 || row_bytes > self.max_bytes {
            return Err(err(&name, format!("a row of {row_bytes} bytes does not fit one storage binding")));
        }
        let total = row_bytes * rows as u64;
        let mut segs = Vec::new();
        let mut row0 = 0usize;
        while row0 < rows {
            let open_room = self.plans.last().map(|p| self.max_bytes.saturating_sub(p.size.next_multiple_of(ALIGN)));
            // Keep a tensor whole when it fits a fresh arena; split only what cannot fit one.
            let room = match open_room {
                Some(r) if r >= (total - row0 as u64 * row_bytes) || total > self.max_bytes => r,
                _ => self.max_bytes,
            };
            let mut take = ((room / row_bytes) as usize).min(rows - row0);
            if take == 0 {
                self.plans.push(Plan { size: 0, items: Vec::new() });
                take = ((self.max_bytes / row_bytes) as usize).min(rows - row0);
            }
            let (arena, off) = self.place(take as u64 * row_bytes);
            if off / 4 > u32::MAX as u64 {
                return Err(err(&name, "arena offset beyond 16 GiB"));
            }
            let last = self.plans.last_mut().expect("placed");
            last.items.push(Item::Rows { file: file.clone(), index, row0, rows: take, byte_off: off });
            segs.push(Segment { arena, word_off: (off / 4) as u32, row0: row0 as u32, rows: take as u32 });
            row0 += take;
        }
        Ok(GpuWeight::Matrix { name, ty: info.ty, rows, cols, row_words: (row_bytes / 4) as u32, segs })
    }

    /// Creates and fills the planned arenas.
    pub fn upload(&mut self, gpu: &Gpu) -> Result<(), BackendError> {
        for plan in std::mem::take(&mut self.plans) {
            // Whole 16-byte words, for the vec4 view of the arena.
            let size = plan.size.max(16).next_multiple_of(16);
            let buffer = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("weight arena"),
                size,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: true,
            });
            {
                let mut view = buffer.slice(..).get_mapped_range_mut().map_err(|e| BackendError::Device(e.to_string()))?;
                let mut staging = Vec::new();
                for item in &plan.items {
                    match item {
                        Item::Vector { file, index, byte_off } => {
                            let info = &file.tensors()[*index];
                            let v = quant::dequantize_to_vec(info.ty, file.view(info).data).map_err(|e| err(&info.name, e))?;
                            let bytes: &[u8] = bytemuck::cast_slice(&v);
                            view.slice(*byte_off as usize..*byte_off as usize + bytes.len()).copy_from_slice(bytes);
                        }
                        Item::Rows { file, index, row0, rows, byte_off } => {
                            let info = &file.tensors()[*index];
                            let tv = file.view(info);
                            let rb = layout::gpu_row_bytes(info.ty, info.row_len());
                            staging.resize(rb * rows, 0u8);
                            for (r, dst) in staging.chunks_exact_mut(rb).enumerate() {
                                let src = tv.row(row0 + r).ok_or_else(|| err(&info.name, "row past the end of the data"))?;
                                layout::repack_row(info.ty, src, dst);
                            }
                            let at = *byte_off as usize;
                            view.slice(at..at + staging.len()).copy_from_slice(&staging);
                        }
                    }
                }
            }
            buffer.unmap();
            let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("weight arena"),
                layout: &gpu.pipelines.arena_layout,
                entries: &[
                    wgpu::BindGroupEntry { binding: 0, resource: buffer.as_entire_binding() },
                    wgpu::BindGroupEntry { binding: 1, resource: buffer.as_entire_binding() },
                ],
            });
            self.arenas.push(Arena { buffer, bind_group });
        }
        if let Some(slots) = self.slots {
            if self.arenas.len() > slots as usize {
                // Kept correct rather than refused: the per-dispatch bind groups exist anyway.
                tracing::warn!(arenas = self.arenas.len(), slots, "more weight arenas than binding-array slots; binding one arena per dispatch");
                self.slots = None;
                self.arrays = None;
            } else {
                self.arrays = Some(arrays_bind_group(gpu, &self.arenas, slots)?);
            }
        }
        Ok(())
    }
}

/// Every arena in each view of group 1's binding arrays. Slots past the last arena repeat the
/// first (a binding array must be full, and no dispatch selects them).
fn arrays_bind_group(gpu: &Gpu, arenas: &[Arena], slots: u32) -> Result<wgpu::BindGroup, BackendError> {
    let layout = gpu.pipelines.arrays.as_ref().ok_or_else(|| BackendError::Device("binding arrays without their layout".into()))?;
    let Some(first) = arenas.first() else {
        return Err(BackendError::Device("binding arrays of no arenas".into()));
    };
    let bindings: Vec<wgpu::BufferBinding> = (0..slots as usize)
        .map(|i| arenas.get(i).unwrap_or(first).buffer.as_entire_buffer_binding())
        .collect();
    let entries: Vec<wgpu::BindGroupEntry> = (0..crate::device::ARENA_VIEWS)
        .map(|binding| wgpu::BindGroupEntry { binding, resource: wgpu::BindingResource::BufferArray(&bindings) })
        .collect();
    Ok(gpu.device.create_bind_group(&wgpu::BindGroupDescriptor { label: Some("weight arena arrays"), layout: &layout.arenas_layout, entries: &entries }))
}
