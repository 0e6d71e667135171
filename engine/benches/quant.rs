//! Throughput of the block formats: dequantize, vec_dot (both instruction sets), matvec and
//! matmul per type. Short by default; `cargo bench -p hangar-engine --bench quant -- --quick`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hangar_engine::quant::{self, GgmlType, Isa};

const TYPES: [GgmlType; 13] = [
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

/// The types SmolLM2, Gemma-3 and Qwen2.5 decode spends its time in.
const HOT: [GgmlType; 6] = [
    GgmlType::Q4_1,
    GgmlType::Q8_0,
    GgmlType::Q4K,
    GgmlType::Q6K,
    GgmlType::Q5_0,
    GgmlType::F32,
];

fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32 - 0.5) * 0.1
        })
        .collect()
}

/// Packed data of `ty` for `n` values. Types without a quantizer (Q2_K, Q3_K) reuse the
/// bytes of one that has the same size class; only the bit patterns' throughput matters here.
fn packed(ty: GgmlType, n: usize) -> Vec<u8> {
    if quant::supports_quantize(ty) {
        return quant::quantize(ty, &values(n, 7)).expect("quantize");
    }
    let len = n / ty.block_size() * ty.type_size();
    let mut bytes: Vec<u8> = values(len, 3).iter().map(|v| v.to_bits() as u8).collect();
    // Sane f16 scales so nothing turns into NaN.
    for b in bytes.chunks_exact_mut(ty.type_size()) {
        let d = half::f16::from_f32(0.01).to_bits().to_le_bytes();
        let at = ty.type_size() - 2;
        b[at..].copy_from_slice(&d);
        if ty == GgmlType::Q2K {
            b[at - 2..at].copy_from_slice(&d);
        }
    }
    bytes
}

fn bench_dequantize(c: &mut Criterion) {
    let n = 64 * 4096;
    let mut g = c.benchmark_group("dequantize");
    g.throughput(Throughput::Elements(n as u64));
    let mut out = vec![0.0f32; n];
    for ty in TYPES {
        let src = packed(ty, n);
        g.bench_function(BenchmarkId::from_parameter(ty), |b| {
            b.iter(|| quant::dequantize(ty, black_box(&src), &mut out).expect("dequantize"))
        });
    }
    g.finish();
}

fn bench_vec_dot(c: &mut Criterion) {
    let k = 4096;
    let x = values(k, 1);
    let mut g = c.benchmark_group("vec_dot");
    g.throughput(Throughput::Elements(k as u64));
    for ty in TYPES {
        let row = packed(ty, k);
        for isa in [Isa::Avx2, Isa::Scalar] {
            if !isa.is_available() {
                continue;
            }
            g.bench_function(BenchmarkId::new(format!("{isa:?}"), ty), |b| {
                b.iter(|| quant::vec_dot_with(isa, ty, black_box(&row), black_box(&x)))
            });
        }
    }
    g.finish();
}

fn bench_matvec(c: &mut Criterion) {
    // SmolLM2's FFN up projection, 1536 rows of 576; K-quant rows need a multiple of 256.
    let rows = 1536;
    let mut out = vec![0.0f32; rows];
    let mut g = c.benchmark_group("matvec");
    for ty in TYPES {
        let k = if ty.block_size() == 256 { 768 } else { 576 };
        let x = values(k, 2);
        let w = packed(ty, rows * k);
        g.throughput(Throughput::Bytes(w.len() as u64));
        g.bench_function(BenchmarkId::new(format!("{rows}x{k}"), ty), |b| {
            b.iter(|| quant::matvec(ty, black_box(&w), rows, &x, &mut out).expect("matvec"))
        });
    }
    g.finish();
}

fn bench_matmul(c: &mut Criterion) {
    let (rows, k, n) = (768, 512, 32);
    let xs = values(n * k, 4);
    let mut out = vec![0.0f32; n * rows];
    let mut g = c.benchmark_group("matmul");
    g.throughput(Throughput::Elements((rows * k * n) as u64));
    for ty in HOT {
        let w = packed(ty, rows * k);
        g.bench_function(BenchmarkId::new(format!("{rows}x{k}x{n}"), ty), |b| {
            b.iter(|| quant::matmul(ty, black_box(&w), rows, &xs, n, &mut out).expect("matmul"))
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(10)
}

criterion_group! { name = benches; config = config(); targets = bench_dequantize, bench_vec_dot, bench_matvec, bench_matmul }
criterion_main!(benches);
