//! Decode matvec (one token) per weight type on the shared device: a 2048 x 2048 weight,
//! recorded and submitted as one step with a one-word read-back, like a decode step.
//! `cargo bench -p hangar-kernels --bench matvec`.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hangar_engine::backend::Backend;
use hangar_engine::gguf::{GgufFile, GgufWriter, TensorDesc};
use hangar_engine::quant::{self, GgmlType};
use hangar_kernels::{Gpu, GpuBackend};

const N: usize = 2048;

fn file(ty: GgmlType) -> Arc<GgufFile> {
    let w: Vec<f32> = (0..N * N).map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 0.1).collect();
    let x: Vec<f32> = (0..2 * N).map(|i| (i % 13) as f32 / 13.0 - 0.5).collect();
    let wb = quant::quantize(ty, &w).expect("quantize");
    let mut g = GgufWriter::new();
    g.add_tensor(TensorDesc { name: "w".into(), ty, dims: vec![N as u64, N as u64] }).expect("w");
    g.add_tensor(TensorDesc { name: "x".into(), ty: GgmlType::F32, dims: vec![N as u64, 2] }).expect("x");
    let mut bytes = Vec::new();
    let data = [wb, bytemuck::cast_slice(&x).to_vec()];
    g.write::<_, hangar_engine::gguf::GgufError>(&mut bytes, |i, _| Ok(data[i].clone())).expect("write");
    Arc::new(GgufFile::from_bytes(bytes).expect("read"))
}

fn bench(c: &mut Criterion) {
    let gpu = Gpu::shared().expect("a Vulkan adapter");
    let mut group = c.benchmark_group(format!("matvec {N}x{N} on {}", gpu.describe()));
    group.sample_size(10);
    for ty in [GgmlType::F32, GgmlType::F16, GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q4K, GgmlType::Q5K, GgmlType::Q6K] {
        let f = file(ty);
        let mut be = GpuBackend::new(gpu.clone());
        let w = be.load_weight(&f, "w").expect("w");
        let x = be.load_weight(&f, "x").expect("x");
        let bytes = f.tensor("w").expect("w").data.len() as u64;
        group.throughput(Throughput::Bytes(bytes));
        group.bench_function(format!("{ty}"), |b| {
            b.iter(|| {
                be.begin_step();
                let xa = be.embed(x, &[0]).expect("embed");
                let y = be.linear(xa, w, None).expect("linear");
                be.argmax(y, N).expect("argmax")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
