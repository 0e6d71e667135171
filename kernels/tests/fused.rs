//! Fused decode kernels (norm in the matvec prologue, QKV in one matvec, gate/up with the
//! activation, residual add in the epilogue, rope applied by kv-write and attention, the KV
//! append done by attention, attention's merge done by the O matvec) against
//! the same ops unfused on the GPU and against the CPU backend, over a transformer block
//! written the way `engine::graph` calls the backend.
//!
//! Tolerance: NMSE 1e-6 against the CPU (rope's sin/cos on the GPU lose a few ulps at large
//! angles, as in ops.rs), 1e-9 between fused and unfused GPU runs (same arithmetic, other
//! summation order).

mod common;

use common::block::*;
use common::cases::Q8_TOL;
use common::*;
use hangar_engine::backend::{Backend, NormParams, WeightId};
use hangar_engine::cpu::CpuBackend;
use hangar_engine::quant::GgmlType;
use hangar_engine::spec::{Activation, NormKind, RopeConfig, RopeStyle};
use hangar_kernels::{BackendOptions, GpuBackend};

#[test]
fn fused_decode_block_matches_unfused_and_cpu() {
    for c in &CASES {
        let f = model(c);
        let want = block(&mut CpuBackend::new(), &f, c);
        let mut fused = GpuBackend::new(gpu());
        let got = block(&mut fused, &f, c);
        let mut plain = GpuBackend::with_options(gpu(), BackendOptions { no_fusion: true, ..Default::default() });
        let unfused = block(&mut plain, &f, c);
        // The lean matvec layout, which a GPU gives its small matvecs (lavapipe only when forced).
        let mut lean = GpuBackend::with_options(gpu(), BackendOptions { mv_lean_below: Some(usize::MAX), ..Default::default() });
        let got_lean = block(&mut lean, &f, c);
        let (e_cpu, e_gpu, e_lean) = (nmse(&got, &want), nmse(&got, &unfused), nmse(&got_lean, &want));
        assert!(e_cpu < 1e-6, "{:?}/{:?}/{:?}: fused vs CPU NMSE {e_cpu:e}", c.ty, c.norm, c.act);
        assert!(e_lean < 1e-6, "{:?}/{:?}/{:?}: lean fused vs CPU NMSE {e_lean:e}", c.ty, c.norm, c.act);
        assert_eq!(lean.dispatches(), fused.dispatches(), "the lean layout fuses as the wide one does");
        assert!(e_gpu < 1e-9, "{:?}/{:?}/{:?}: fused vs unfused NMSE {e_gpu:e}", c.ty, c.norm, c.act);
        // Decode steps: embed, QKV (norm fused), attention (appending this step's k and v),
        // O (merging attention's partials) + residual, gate/up (norm fused), down + residual =
        // 6 dispatches against 15 or more unfused.
        assert!(fused.dispatches() * 3 < plain.dispatches() * 2, "fused {} vs unfused {} dispatches", fused.dispatches(), plain.dispatches());
        if c.ty == GgmlType::Q4_0 {
            q8_legs(&f, c, &want);
        }
    }
}

/// Every Q4_0 matvec of the block with 8-bit inputs (the normed QKV and gate/up, the O
/// projection merging attention's partials, the down projection): fused against unfused, both
/// 8-bit (1e-6: the deferred norm quantizes the input before its 1/rms scale, the unfused
/// after, which can move a rounding tie), and against the float CPU backend at the 8-bit
/// inputs' own tolerance.
fn q8_legs(f: &std::sync::Arc<hangar_engine::gguf::GgufFile>, c: &Case, want: &[f32]) {
    let q8 = BackendOptions { mv_q8_from: Some(0), ..Default::default() };
    let mut fused = GpuBackend::with_options(gpu(), q8.clone());
    let got = block(&mut fused, f, c);
    let mut plain = GpuBackend::with_options(gpu(), BackendOptions { no_fusion: true, ..q8 });
    let unfused = block(&mut plain, f, c);
    assert!(fused.q8_matvecs() >= 4 && plain.q8_matvecs() >= 4, "{} / {} 8-bit matvecs", fused.q8_matvecs(), plain.q8_matvecs());
    let (e_gpu, e_cpu) = (nmse(&got, &unfused), nmse(&got, want));
    assert!(e_gpu < 1e-6, "8-bit fused vs unfused NMSE {e_gpu:e}");
    assert!(e_cpu < Q8_TOL, "8-bit fused vs CPU NMSE {e_cpu:e}");
}

#[test]
fn a_pending_fused_result_read_directly_is_materialized() {
    // Reading a norm, a rope or a grouped linear output by itself still gives its value.
    let c = Case { ty: GgmlType::Q8_0, norm: NormKind::Rms, act: Activation::SwiGlu, bias: true };
    let f = model(&c);
    let run = |be: &mut dyn Backend| -> Vec<f32> {
        let id: Vec<WeightId> = NAMES.iter().map(|n| be.load_weight(&f, n).expect("load")).collect();
        let rope = RopeConfig { style: RopeStyle::Normal, n_rot: HD, freq_base: 10000.0, freq_scale: 1.0, llama3: None, freq_factors: None };
        be.begin_step();
        let x = be.embed(id[0], &[3]).expect("x");
        let h = be.norm(x, Some(id[1]), None, NormParams { kind: NormKind::Rms, eps: 1e-6, add_one: true, group: E }).expect("norm");
        let q = be.linear(h, id[8], Some(id[5])).expect("q");
        let k = be.linear(h, id[9], Some(id[6])).expect("k");
        let qr = be.rope(q, HD, 9, &rope).expect("rope");
        let mut out = be.read(k).expect("k");
        out.extend(be.read(qr).expect("rope"));
        out.extend(be.read(h).expect("norm"));
        out
    };
    let want = run(&mut CpuBackend::new());
    let got = run(&mut GpuBackend::new(gpu()));
    let e = nmse(&got, &want);
    assert!(e < 1e-6, "NMSE {e:e}");
}
