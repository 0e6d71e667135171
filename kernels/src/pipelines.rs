//! Shader sources and compiled pipelines. Every kernel uses the same pipeline layout (see
//! `shaders/common.wgsl`), so bind groups are made once per model and stay bound across
//! dispatches of different kernels. Where the device has binding arrays, a second layout binds
//! all of a model's arenas at once, and each kernel's binding-array variant is made from the
//! same source (`shader_source_for`).

use std::collections::HashMap;
use std::num::{NonZeroU32, NonZeroU64};
use std::sync::Mutex;

use hangar_engine::kv::{self, KvPolicy};
use hangar_engine::quant::GgmlType;

use crate::layout;

/// Bytes of one params slot the shader sees (the largest `Params` struct, rounded up).
pub const PARAM_BYTES: u64 = 128;
/// Bytes of a params slot with binding arrays: the kernel's params, then the dispatch's
/// weight and vector arena indices (`ArenaSel` in common.wgsl) in one more 16-byte row.
pub const SEL_BYTES: u64 = PARAM_BYTES + 16;

pub(crate) const COMMON: &str = include_str!("shaders/common.wgsl");

/// The op kernels, one file each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Decode matvec (one token), optionally fused QKV / gate-up / residual; its input as it
    /// arrives, and whether it is the lean row layout (see mv.wgsl's `lean_body`).
    /// `q8`: the input is quantized to 8-bit blocks as it is staged, and the rows' blocks are
    /// dotted with packed integer dot products (Q4_0 and Q8_0; see mv.wgsl's `stage_q8`).
    Mv { input: MvInput, lean: bool, q8: bool },
    /// Prefill matmul, tiled through workgroup memory.
    Matmul,
    Embed,
    Norm,
    Rope,
    /// KV append and attention, for the cache's policy.
    KvWrite(KvPolicy),
    /// Sets a layer's key-centering vector from a sequence's first write (kv_write.wgsl).
    KvCenter(KvPolicy),
    Attention(KvPolicy),
    AttnCombine,
    Eltwise,
    Argmax,
    /// The general sampler: one workgroup a row (top-k off or above `TOP_K_MAX`).
    Sample,
    /// The two-stage top-k sampler (top-k in 1..=`TOP_K_MAX`).
    SampleTopK,
    /// Banned tokens' logits to -inf (policy masks and output constraints).
    Mask,
}

/// How a decode matvec's input arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MvInput {
    /// As it is in the scratch.
    Plain,
    /// RMS/Layer-normed in the matvec's prologue.
    Norm,
    /// Attention's split-context partials, merged as they are staged.
    Combine,
}

impl Op {
    fn source(self) -> &'static str {
        match self {
            Op::Mv { .. } => include_str!("shaders/mv.wgsl"),
            Op::Matmul => include_str!("shaders/matmul.wgsl"),
            Op::Embed => include_str!("shaders/embed.wgsl"),
            Op::Norm => include_str!("shaders/norm.wgsl"),
            Op::Rope => include_str!("shaders/rope.wgsl"),
            Op::KvWrite(_) | Op::KvCenter(_) => include_str!("shaders/kv_write.wgsl"),
            Op::Attention(_) => include_str!("shaders/attention.wgsl"),
            Op::AttnCombine => include_str!("shaders/attn_combine.wgsl"),
            Op::Eltwise => include_str!("shaders/eltwise.wgsl"),
            Op::Argmax => include_str!("shaders/argmax.wgsl"),
            Op::Sample => include_str!("shaders/sample.wgsl"),
            Op::SampleTopK => include_str!("shaders/sample_topk.wgsl"),
            Op::Mask => include_str!("shaders/mask.wgsl"),
        }
    }
}

/// The decode-matvec unit snippet (8 weights per `udot`, vector loads of x) of the block
/// types that have one; the others go through their `dq32`.
pub fn mv_unit_source(ty: GgmlType) -> Option<&'static str> {
    Some(match ty {
        GgmlType::Q4_0 => include_str!("shaders/mv_q4_0.wgsl"),
        GgmlType::Q4_1 => include_str!("shaders/mv_q4_1.wgsl"),
        GgmlType::Q8_0 => include_str!("shaders/mv_q8_0.wgsl"),
        GgmlType::Q4K => concat!(include_str!("shaders/q4_k_scales.wgsl"), include_str!("shaders/mv_q4_k.wgsl")),
        GgmlType::Q6K => include_str!("shaders/mv_q6_k.wgsl"),
        _ => return None,
    })
}

/// The block types whose matvec snippet has an 8-bit-input `udot` (the `Q8X` variant).
pub fn has_q8_unit(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_0 | GgmlType::Q8_0)
}

/// The dequantization snippet providing `dq32(row, group, k)` for a weight type.
pub fn dequant_source(ty: GgmlType) -> Option<&'static str> {
    use GgmlType::*;
    Some(match ty {
        F32 => include_str!("shaders/dq_f32.wgsl"),
        F16 => include_str!("shaders/dq_f16.wgsl"),
        BF16 => include_str!("shaders/dq_bf16.wgsl"),
        Q4_0 => include_str!("shaders/dq_q4_0.wgsl"),
        Q4_1 => include_str!("shaders/dq_q4_1.wgsl"),
        Q5_0 => include_str!("shaders/dq_q5_0.wgsl"),
        Q5_1 => include_str!("shaders/dq_q5_1.wgsl"),
        Q8_0 => include_str!("shaders/dq_q8_0.wgsl"),
        Q2K => include_str!("shaders/dq_q2_k.wgsl"),
        Q3K => include_str!("shaders/dq_q3_k.wgsl"),
        Q4K => concat!(include_str!("shaders/q4_k_scales.wgsl"), include_str!("shaders/dq_q4_k.wgsl")),
        Q5K => include_str!("shaders/dq_q5_k.wgsl"),
        Q6K => include_str!("shaders/dq_q6_k.wgsl"),
        _ => return None,
    })
}

/// Keeps the `//#if NAME` part of `src` when NAME is in `defines`, else its `//#else` part
/// (blocks do not nest).
fn select_variant(src: &str, defines: &[&str]) -> String {
    let mut out = String::with_capacity(src.len());
    let mut keep = true;
    for line in src.lines() {
        let l = line.trim();
        if let Some(name) = l.strip_prefix("//#if ") {
            keep = defines.contains(&name.trim());
        } else if l == "//#else" {
            keep = !keep;
        } else if l == "//#endif" {
            keep = true;
        } else if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The `//#if` names selecting a KV policy's record code (kv_common.wgsl).
fn kv_defines(p: KvPolicy) -> &'static [&'static str] {
    match p {
        KvPolicy::F32 => &[],
        KvPolicy::F16 => &["KVQ", "KV_F16"],
        KvPolicy::Q8 => &["KVQ", "KV_Q8"],
        KvPolicy::Int4Plain => &["KVQ", "KV_INT4", "KV_WINDOW"],
        KvPolicy::Int4Hadamard | KvPolicy::Int4 => &["KVQ", "KV_INT4", "KV_HADAMARD", "KV_WINDOW"],
    }
}

/// Which variant of a kernel to build.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Variant {
    /// Subgroup operations (else the workgroup-memory fallback).
    pub subgroups: bool,
    /// Weight views as binding arrays of this many arenas (else one arena per dispatch).
    pub arena_slots: Option<u32>,
}

/// Full WGSL of `op` (specialized to `ty` for the ops that read weight matrices, and to the
/// subgroup or fallback variant), with one arena bound per dispatch.
pub fn shader_source(op: Op, ty: Option<GgmlType>, subgroups: bool) -> String {
    shader_source_for(op, ty, Variant { subgroups, arena_slots: None })
}

/// Reads of the one-arena views, and where the binding-array variant sends them: the arena the
/// dispatch selected, read from a uniform, so the index is the same for every invocation and
/// the driver fetches each descriptor once per dispatch rather than per load.
const ARENA_ROUTES: [(&str, &str); 3] =
    [("wq4[", "wq4_arenas[SEL.w].v["), ("wq[", "wq_arenas[SEL.w].v["), ("wvec[", "wvec_arenas[SEL.v].v[")];

/// `src` with every read of `wq`, `wq4` and `wvec` routed through the selected arena.
fn route_arena_reads(src: &str) -> String {
    let mut out = String::with_capacity(src.len() + src.len() / 4);
    let mut rest = src;
    let mut prev_ident = false;
    'scan: while let Some(c) = rest.chars().next() {
        if !prev_ident {
            for (from, to) in ARENA_ROUTES {
                if let Some(r) = rest.strip_prefix(from) {
                    out.push_str(to);
                    rest = r;
                    prev_ident = false;
                    continue 'scan;
                }
            }
        }
        out.push(c);
        prev_ident = c.is_ascii_alphanumeric() || c == '_';
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Full WGSL of `op` for `ty`, in variant `v`.
pub fn shader_source_for(op: Op, ty: Option<GgmlType>, v: Variant) -> String {
    let subgroups = v.subgroups;
    let unit = match op {
        Op::Mv { .. } => ty.and_then(mv_unit_source),
        _ => None,
    };
    let mut defines = Vec::new();
    if subgroups {
        defines.push("subgroups");
    }
    defines.push(match op {
        Op::Mv { input: MvInput::Norm, .. } => "NORM",
        Op::Mv { input: MvInput::Combine, .. } => "COMBINE",
        _ => "PLAIN_X",
    });
    if unit.is_some() {
        defines.push("FAST");
    }
    if let Op::Mv { q8: true, .. } = op {
        defines.push("Q8X");
    }
    let kv = match op {
        Op::KvWrite(p) | Op::KvCenter(p) | Op::Attention(p) => p,
        _ => KvPolicy::F32,
    };
    defines.extend(kv_defines(kv));
    defines.push(match op {
        Op::KvCenter(_) => "KV_CENTER",
        Op::KvWrite(KvPolicy::F32) => "KV_STORE_F32",
        Op::KvWrite(KvPolicy::Int4Plain | KvPolicy::Int4Hadamard | KvPolicy::Int4) => "KV_STORE_Q4",
        _ => "KV_STORE_Q",
    });
    if v.arena_slots.is_some() {
        defines.push("BINDING_ARRAYS");
    }
    let mut s = String::new();
    if v.arena_slots.is_some() {
        // naga gates binding arrays behind this directive, which must open the module.
        s.push_str("enable wgpu_binding_array;\n");
    }
    s.push_str(&select_variant(op.source(), &defines));
    s.push('\n');
    s.push_str(&select_variant(COMMON, &defines));
    if let Some(slots) = v.arena_slots {
        s.push_str(&format!("const ARENA_SLOTS: u32 = {slots}u;\nconst PARAM_ROWS: u32 = {}u;\n", PARAM_BYTES / 16));
    }
    if matches!(op, Op::Rope | Op::KvWrite(_) | Op::KvCenter(_) | Op::Attention(_)) {
        s.push('\n');
        s.push_str(include_str!("shaders/rope_common.wgsl"));
    }
    if kv != KvPolicy::F32 {
        s.push('\n');
        s.push_str(&select_variant(include_str!("shaders/kv_common.wgsl"), &defines));
        // The exact window's shape, from the engine's one definition (kv::Ring).
        s.push_str(&format!("const KV_RING: u32 = {}u;\nconst KV_WINDOW: u32 = {}u;\n", kv::Ring::SLOTS, kv::Ring::WINDOW));
    }
    if matches!(op, Op::Mv { .. }) {
        s.push('\n');
        s.push_str(include_str!("shaders/mv_out.wgsl"));
    }
    if let Op::Mv { lean, .. } = op {
        // The lean layout reduces a row with subgroup operations only.
        s.push_str(&format!("const LEAN: bool = {};\n", subgroups && lean));
    }
    // The kernels that read a weight matrix through `dq32` (the split-K matvec decodes its one
    // type itself).
    let snippet = match op {
        Op::Mv { .. } => unit.or_else(|| ty.and_then(dequant_source)),
        Op::Matmul | Op::Embed => ty.and_then(dequant_source),
        _ => None,
    };
    if let Some(src) = snippet {
        s.push('\n');
        s.push_str(&select_variant(src, &defines));
    }
    match v.arena_slots {
        Some(_) => route_arena_reads(&s),
        None => s,
    }
}

pub(crate) struct Pipelines {
    pub scratch_layout: wgpu::BindGroupLayout,
    pub arena_layout: wgpu::BindGroupLayout,
    pub kv_layout: wgpu::BindGroupLayout,
    layout: wgpu::PipelineLayout,
    /// The binding-array layouts, where the device has binding arrays.
    pub arrays: Option<ArrayLayouts>,
    /// Subgroup variants are used (SUBGROUP granted and a fixed subgroup size dividing 64).
    pub subgroup_size: Option<u32>,
    cache: Mutex<HashMap<(Op, Option<GgmlType>, bool), wgpu::ComputePipeline>>,
}

/// The layout of the binding-array variants: group 0 gains the arena selection, group 1 binds
/// every arena of a model, group 2 is the one-arena layout left unused, group 3 is unchanged.
pub(crate) struct ArrayLayouts {
    /// Arenas per binding array.
    pub slots: u32,
    pub scratch_layout: wgpu::BindGroupLayout,
    pub arenas_layout: wgpu::BindGroupLayout,
    layout: wgpu::PipelineLayout,
}

/// One buffer binding of the layout every kernel shares (see `shaders/common.wgsl`).
#[derive(Clone, Copy, Debug)]
pub struct Slot {
    pub binding: u32,
    /// The params ring (a uniform buffer); every other slot is a storage buffer.
    pub uniform: bool,
    pub read_only: bool,
    pub dynamic: bool,
}

const fn slot(binding: u32, uniform: bool, read_only: bool, dynamic: bool) -> Slot {
    Slot { binding, uniform, read_only, dynamic }
}

/// Group 0: the step's params slot and the activation scratch (as f32 and as vec4).
const SCRATCH: [Slot; 3] = [slot(0, true, true, true), slot(1, false, false, false), slot(2, false, false, false)];
/// Groups 1 and 2: a weight arena (as u32 words and as vec4<u32>).
const ARENA: [Slot; 2] = [slot(0, false, true, false), slot(1, false, true, false)];
/// Group 3: one layer's KV cache, at a dynamic offset.
const KV: [Slot; 1] = [slot(0, false, false, true)];
/// The pipeline layout, group by group: the one definition the backend and its diagnostics
/// (`examples/kernel_stats.rs`) build theirs from.
pub const LAYOUT: [&[Slot]; 4] = [&SCRATCH, &ARENA, &ARENA, &KV];

fn entry(s: &Slot) -> wgpu::BindGroupLayoutEntry {
    let ty = match s.uniform {
        true => wgpu::BufferBindingType::Uniform,
        false => wgpu::BufferBindingType::Storage { read_only: s.read_only },
    };
    wgpu::BindGroupLayoutEntry {
        binding: s.binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty,
            has_dynamic_offset: s.dynamic,
            min_binding_size: if s.uniform { NonZeroU64::new(PARAM_BYTES) } else { None },
        },
        count: None,
    }
}

/// Group 0 with binding arrays: `SCRATCH`, then the params slot again as the arena selection.
fn scratch_sel_entries() -> Vec<wgpu::BindGroupLayoutEntry> {
    let mut entries: Vec<_> = SCRATCH.iter().map(entry).collect();
    let mut sel = entry(&slot(3, true, true, true));
    sel.ty = wgpu::BindingType::Buffer {
        ty: wgpu::BufferBindingType::Uniform,
        has_dynamic_offset: true,
        min_binding_size: NonZeroU64::new(SEL_BYTES),
    };
    entries.push(sel);
    entries
}

/// Group 1 with binding arrays: the `ARENA` views and the vector view, `slots` arenas each.
fn arena_array_entries(slots: u32) -> Vec<wgpu::BindGroupLayoutEntry> {
    (0..crate::device::ARENA_VIEWS)
        .map(|binding| wgpu::BindGroupLayoutEntry { count: NonZeroU32::new(slots), ..entry(&slot(binding, false, true, false)) })
        .collect()
}

impl Pipelines {
    /// `arena_slots`: the binding arrays' length, where the device was granted binding arrays.
    pub fn new(device: &wgpu::Device, subgroup_size: Option<u32>, arena_slots: Option<u32>) -> Pipelines {
        let make = |label: &str, entries: &[wgpu::BindGroupLayoutEntry]| {
            device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(label), entries })
        };
        let entries = |slots: &[Slot]| slots.iter().map(entry).collect::<Vec<_>>();
        let scratch_layout = make("params+scratch", &entries(&SCRATCH));
        let arena_layout = make("arena", &entries(&ARENA));
        let kv_layout = make("kv", &entries(&KV));
        let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("hangar"),
            bind_group_layouts: &[Some(&scratch_layout), Some(&arena_layout), Some(&arena_layout), Some(&kv_layout)],
            immediate_size: 0,
        });
        let arrays = arena_slots.map(|slots| {
            let scratch_layout = make("params+scratch+arena selection", &scratch_sel_entries());
            let arenas_layout = make("arena arrays", &arena_array_entries(slots));
            let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some("hangar (binding arrays)"),
                bind_group_layouts: &[Some(&scratch_layout), Some(&arenas_layout), Some(&arena_layout), Some(&kv_layout)],
                immediate_size: 0,
            });
            ArrayLayouts { slots, scratch_layout, arenas_layout, layout }
        });
        Pipelines { scratch_layout, arena_layout, kv_layout, layout, arrays, subgroup_size, cache: Mutex::new(HashMap::new()) }
    }

    /// The pipeline of `op` for `ty`, compiled on first use; the binding-array variant when
    /// `arrays` and the device has them.
    pub fn get(&self, device: &wgpu::Device, op: Op, ty: Option<GgmlType>, arrays: bool) -> wgpu::ComputePipeline {
        let arrays = self.arrays.as_ref().filter(|_| arrays);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry((op, ty, arrays.is_some()))
            .or_insert_with(|| {
                let label = format!("{op:?}/{}{}", ty.map(layout::shader_name).unwrap_or("-"), if arrays.is_some() { "/arrays" } else { "" });
                let v = Variant { subgroups: self.subgroup_size.is_some(), arena_slots: arrays.map(|a| a.slots) };
                let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(&label),
                    source: wgpu::ShaderSource::Wgsl(shader_source_for(op, ty, v).into()),
                });
                device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(&label),
                    layout: Some(arrays.map_or(&self.layout, |a| &a.layout)),
                    module: &module,
                    entry_point: Some("main"),
                    compilation_options: Default::default(),
                    cache: None,
                })
            })
            .clone()
    }
}
