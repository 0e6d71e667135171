//! Helpers shared by the kernel tests: the device (a missing adapter fails the test), small
//! in-memory GGUF files, random data and the NMSE measure.
#![allow(dead_code)]

pub mod block;
pub mod cases;

use std::sync::Arc;

use hangar_engine::gguf::{GgufFile, GgufWriter, MetaValue, TensorDesc};
use hangar_engine::quant::{self, GgmlType};
use hangar_kernels::Gpu;

pub fn gpu() -> Arc<Gpu> {
    match Gpu::shared() {
        Ok(g) => g,
        Err(e) => panic!("these tests need a Vulkan adapter (CI uses Mesa lavapipe: apt install mesa-vulkan-drivers libvulkan1): {e}"),
    }
}

/// Normalized mean squared error of `got` against `want`.
pub fn nmse(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let err: f64 = got.iter().zip(want).map(|(a, b)| ((*a as f64) - (*b as f64)).powi(2)).sum();
    let norm: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
    err / norm.max(1e-30)
}

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [-1, 1).
    pub fn f(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.f() * scale).collect()
    }
}

/// Bytes of a `rows x cols` tensor of `ty` with plausible values. Types without a quantizer
/// (Q2_K, Q3_K) get random quants with small, finite scales.
pub fn tensor_bytes(rng: &mut Rng, ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    if quant::supports_quantize(ty) {
        return quant::quantize(ty, &rng.vec(rows * cols, 1.0)).expect("quantize");
    }
    let blocks = rows * cols / ty.block_size();
    let mut out: Vec<u8> = (0..blocks * ty.type_size()).map(|_| rng.next_u64() as u8).collect();
    let small = |rng: &mut Rng| half::f16::from_f32(0.01 + 0.05 * rng.f().abs()).to_le_bytes();
    for b in out.chunks_exact_mut(ty.type_size()) {
        match ty {
            GgmlType::Q2K => {
                let (d, m) = (small(rng), small(rng));
                b[80..82].copy_from_slice(&d);
                b[82..84].copy_from_slice(&m);
            }
            GgmlType::Q3K => {
                let d = small(rng);
                b[108..110].copy_from_slice(&d);
            }
            _ => panic!("no generator for {ty:?}"),
        }
    }
    out
}

pub struct T {
    pub name: String,
    pub ty: GgmlType,
    pub dims: Vec<u64>,
    pub data: Vec<u8>,
}

/// The metadata of the two-layer synthetic llama the large-model tests build (4 heads, 2 KV
/// heads, a 64-position context).
#[allow(dead_code)] // not every test binary builds a model
pub fn tiny_llama_meta(n_embd: usize, n_ff: usize) -> Vec<(&'static str, MetaValue)> {
    vec![
        ("general.architecture", MetaValue::String("llama".into())),
        ("llama.embedding_length", MetaValue::U32(n_embd as u32)),
        ("llama.block_count", MetaValue::U32(2)),
        ("llama.attention.head_count", MetaValue::U32(4)),
        ("llama.attention.head_count_kv", MetaValue::U32(2)),
        ("llama.feed_forward_length", MetaValue::U32(n_ff as u32)),
        ("llama.context_length", MetaValue::U32(64)),
    ]
}

/// A GGUF file in memory holding `tensors` (and `meta`).
pub fn file_with(tensors: Vec<T>, meta: Vec<(&str, MetaValue)>) -> Arc<GgufFile> {
    let mut w = GgufWriter::new();
    for (k, v) in meta {
        w.set(k, v);
    }
    for t in &tensors {
        w.add_tensor(TensorDesc { name: t.name.clone(), ty: t.ty, dims: t.dims.clone() }).expect("tensor");
    }
    let mut bytes = Vec::new();
    w.write::<_, hangar_engine::gguf::GgufError>(&mut bytes, |i, _| Ok(tensors[i].data.clone())).expect("write");
    Arc::new(GgufFile::from_bytes(bytes).expect("read back"))
}

pub fn file(tensors: Vec<T>) -> Arc<GgufFile> {
    file_with(tensors, Vec::new())
}

pub fn matrix(rng: &mut Rng, name: &str, ty: GgmlType, rows: usize, cols: usize) -> T {
    T { name: name.into(), ty, dims: vec![cols as u64, rows as u64], data: tensor_bytes(rng, ty, rows, cols) }
}

/// Random f32 tables "q", "k" and "v" of `rows` rows, read through `embed` as one step's
/// attention inputs (row i is token id i).
pub fn qkv_file(rng: &mut Rng, rows: usize, q_dim: usize, kv_dim: usize) -> Arc<GgufFile> {
    file(vec![
        matrix(rng, "q", GgmlType::F32, rows, q_dim),
        matrix(rng, "k", GgmlType::F32, rows, kv_dim),
        matrix(rng, "v", GgmlType::F32, rows, kv_dim),
    ])
}

pub fn vector(name: &str, v: &[f32]) -> T {
    T { name: name.into(), ty: GgmlType::F32, dims: vec![v.len() as u64], data: bytemuck::cast_slice(v).to_vec() }
}

pub const ALL_TYPES: [GgmlType; 13] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
];
