//! Kernel-vs-CPU checks that run on any backend configuration: ops.rs runs them on the
//! default one, binding_arrays.rs with binding arrays on.

use std::sync::Arc;

use hangar_engine::backend::{Act, Backend, NormParams};
use hangar_engine::cpu::CpuBackend;
use hangar_engine::gguf::GgufFile;
use hangar_engine::quant::{self, GgmlType};
use hangar_engine::spec::NormKind;
use hangar_kernels::{BackendOptions, Gpu, GpuBackend};

use super::*;

/// NMSE tolerance of the kernel checks. GPU sums run in a different order than the CPU's,
/// which costs about 1e-12 of NMSE, far inside it.
pub const TOL: f64 = 1e-7;

/// NMSE tolerance of a matvec with 8-bit inputs against the float CPU backend: the rounding
/// of the input costs about 1e-4 (`quant::Q8Input`); the kernel itself is checked against
/// that twin at `TOL`.
pub const Q8_TOL: f64 = 1e-3;

/// Loads `names` of `f` on `be`, starts a step and runs `op` with the weight ids.
pub fn run(be: &mut dyn Backend, f: &Arc<GgufFile>, names: &[&str], op: impl FnOnce(&mut dyn Backend, &[hangar_engine::backend::WeightId]) -> Act) -> Vec<f32> {
    let ids: Vec<_> = names.iter().map(|n| be.load_weight(f, n).expect("load")).collect();
    be.begin_step();
    let out = op(be, &ids);
    be.read(out).expect("read")
}

pub fn rows(n: usize) -> Vec<u32> {
    (0..n as u32).collect()
}

/// out[t, r] = dequant(W)[r] · x[t] + b[r], in f64; with `q8`, through the 8-bit input's CPU
/// twin (`quant::Q8Input`, Q4_0 and Q8_0) instead.
pub fn reference_linear(f: &GgufFile, ty: GgmlType, rows_: usize, cols: usize, n: usize, bias: &[f32], q8: bool) -> Vec<f32> {
    let wq = f.tensor("w").expect("w").data;
    let w = if q8 { Vec::new() } else { quant::dequantize_to_vec(ty, wq).expect("dequantize") };
    let x: &[f32] = bytemuck::cast_slice(f.tensor("x").expect("x").data);
    let row_bytes = wq.len() / rows_;
    let mut out = vec![0.0; n * rows_];
    for t in 0..n {
        let xt = &x[t * cols..(t + 1) * cols];
        let xq = q8.then(|| quant::Q8Input::new(xt).expect("whole blocks"));
        for r in 0..rows_ {
            let s: f64 = match &xq {
                Some(xq) => xq.dot(ty, &wq[r * row_bytes..(r + 1) * row_bytes]).expect("8-bit input row"),
                None => (0..cols).map(|i| w[r * cols + i] as f64 * xt[i] as f64).sum(),
            };
            out[t * rows_ + r] = (s + bias[r] as f64) as f32;
        }
    }
    out
}

/// `linear` of `n` embedded rows through a `rows_ x cols` weight of `ty` plus a bias, against
/// the f64 reference (its 8-bit-input twin where the backend took that path); returns the
/// backend for its counters.
pub fn linear_case_on(dev: Arc<Gpu>, ty: GgmlType, rows_: usize, cols: usize, n: usize, opts: BackendOptions) -> GpuBackend {
    let mut rng = Rng::new(ty as u64 * 31 + n as u64);
    let bias = rng.vec(rows_, 0.5);
    let f = file(vec![matrix(&mut rng, "w", ty, rows_, cols), matrix(&mut rng, "x", GgmlType::F32, n + 1, cols), vector("b", &bias)]);
    let mut be = GpuBackend::with_options(dev, opts);
    let got = run(&mut be, &f, &["w", "x", "b"], |be, id| {
        let x = be.embed(id[1], &rows(n)).expect("embed");
        be.linear(x, id[0], Some(id[2])).expect("linear")
    });
    let want = reference_linear(&f, ty, rows_, cols, n, &bias, be.q8_matvecs() > 0);
    let e = nmse(&got, &want);
    assert!(e < TOL, "{ty:?} {rows_}x{cols} n={n}: NMSE {e:e}");
    be
}

/// `linear_rows` of `n` tokens (after an RMS norm, which the matvec folds in): every row
/// matches the reference, and is bit-identical to the same row run alone, as batched decoding
/// needs. Returns the backend for its counters.
pub fn batched_rows_case_on(dev: Arc<Gpu>, ty: GgmlType, rows_: usize, cols: usize, n: usize, opts: BackendOptions) -> GpuBackend {
    let mut rng = Rng::new(ty as u64 * 17 + n as u64);
    let bias = rng.vec(rows_, 0.5);
    let f = file(vec![matrix(&mut rng, "w", ty, rows_, cols), matrix(&mut rng, "x", GgmlType::F32, n, cols), vector("b", &bias)]);
    let p = NormParams { kind: NormKind::Rms, eps: 1e-5, add_one: false, group: cols };
    let op = |tokens: Vec<u32>| {
        move |be: &mut dyn Backend, id: &[hangar_engine::backend::WeightId]| {
            let x = be.embed(id[1], &tokens).expect("embed");
            let h = be.norm(x, None, None, p).expect("norm");
            be.linear_rows(h, id[0], Some(id[2])).expect("linear_rows")
        }
    };
    let want = run(&mut CpuBackend::new(), &f, &["w", "x", "b"], op(rows(n)));
    let mut be = GpuBackend::with_options(dev.clone(), opts.clone());
    let got = run(&mut be, &f, &["w", "x", "b"], op(rows(n)));
    let e = nmse(&got, &want);
    let tol = if be.q8_matvecs() > 0 { Q8_TOL } else { TOL };
    assert!(e < tol, "{ty:?} {rows_}x{cols} n={n}: NMSE {e:e}");
    for r in 0..n {
        let alone = run(&mut GpuBackend::with_options(dev.clone(), opts.clone()), &f, &["w", "x", "b"], op(vec![r as u32]));
        assert!(alone.iter().zip(&got[r * rows_..(r + 1) * rows_]).all(|(a, b)| a.to_bits() == b.to_bits()), "{ty:?} row {r}: batched differs from alone");
    }
    be
}

