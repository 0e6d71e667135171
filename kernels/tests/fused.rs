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

use std::sync::Arc;

use common::*;
use hangar_engine::backend::{Act, AttnParams, Backend, NormParams, WeightId};
use hangar_engine::cpu::CpuBackend;
use hangar_engine::gguf::GgufFile;
use hangar_engine::quant::GgmlType;
use hangar_engine::spec::{Activation, NormKind, RopeConfig, RopeStyle};
use hangar_kernels::{BackendOptions, GpuBackend};

const E: usize = 256;
const HD: usize = 64;
const NH: usize = 4;
const NKV: usize = 2;
const FF: usize = 512;

struct Case {
    ty: GgmlType,
    norm: NormKind,
    act: Activation,
    bias: bool,
}

fn model(c: &Case) -> Arc<GgufFile> {
    let mut rng = Rng::new(c.ty as u64 * 3 + c.bias as u64);
    let mut t = vec![
        matrix(&mut rng, "x", GgmlType::F32, 8, E),
        vector("n1", &rng.vec(E, 1.0)),
        vector("n1b", &rng.vec(E, 0.2)),
        vector("n2", &rng.vec(E, 1.0)),
        vector("n2b", &rng.vec(E, 0.2)),
        vector("bq", &rng.vec(NH * HD, 0.2)),
        vector("bk", &rng.vec(NKV * HD, 0.2)),
        vector("bv", &rng.vec(NKV * HD, 0.2)),
    ];
    for (name, rows, cols) in [("q", NH * HD, E), ("k", NKV * HD, E), ("v", NKV * HD, E), ("o", E, NH * HD), ("gate", FF, E), ("up", FF, E), ("down", E, FF)] {
        let mut m = matrix(&mut rng, name, c.ty, rows, cols);
        if c.ty == GgmlType::F32 {
            m.data = bytemuck::cast_slice(&rng.vec(rows * cols, 0.1)).to_vec();
        }
        t.push(m);
    }
    file(t)
}

const NAMES: [&str; 15] = ["x", "n1", "n1b", "n2", "n2b", "bq", "bk", "bv", "q", "k", "v", "o", "gate", "up", "down"];

/// Prefill of 130 positions, then 3 decode steps, of one block; returns every step's output.
fn block(be: &mut dyn Backend, f: &Arc<GgufFile>, c: &Case) -> Vec<f32> {
    let id: Vec<WeightId> = NAMES.iter().map(|n| be.load_weight(f, n).expect("load")).collect();
    let w = |n: &str| id[NAMES.iter().position(|m| *m == n).expect("name")];
    let seq = be.new_sequence(1, NKV * HD, 160, hangar_engine::backend::KvFormat { policy: Default::default(), head_dim: HD }).expect("seq");
    let rope = RopeConfig { style: RopeStyle::Neox, n_rot: HD / 2, freq_base: 10000.0, freq_scale: 1.0, llama3: None, freq_factors: None };
    let np = NormParams { kind: c.norm, eps: 1e-5, add_one: false, group: E };
    let nb = |s: &str| (c.norm == NormKind::Layer).then(|| w(s));
    let b = |s: &str| c.bias.then(|| w(s));
    let ap = AttnParams { n_head: NH, n_head_kv: NKV, head_dim: HD, scale: 0.125, softcap: None, window: None };
    let mut out = Vec::new();
    // Decode past 128 positions: attention splits the context over three workgroups, whose
    // partials the O matvec merges when fused.
    for (pos0, n) in [(0usize, 130usize), (130, 1), (131, 1), (132, 1)] {
        be.begin_step();
        let toks: Vec<u32> = (pos0 as u32..(pos0 + n) as u32).map(|t| t % 8).collect();
        let x: Act = be.embed(w("x"), &toks).expect("x");
        let h = be.norm(x, Some(w("n1")), nb("n1b"), np).expect("norm");
        let q = be.linear(h, w("q"), b("bq")).expect("q");
        let k = be.linear(h, w("k"), b("bk")).expect("k");
        let v = be.linear(h, w("v"), b("bv")).expect("v");
        let q = be.rope(q, HD, pos0, &rope).expect("rope q");
        let k = be.rope(k, HD, pos0, &rope).expect("rope k");
        let a = be.attention(seq, 0, pos0, q, k, v, &ap).expect("attention");
        let o = be.linear(a, w("o"), None).expect("o");
        let x = be.add(x, o).expect("add");
        let h2 = be.norm(x, Some(w("n2")), nb("n2b"), np).expect("norm 2");
        let up = be.linear(h2, w("up"), None).expect("up");
        let gate = be.linear(h2, w("gate"), None).expect("gate");
        let g = be.ffn_act(Some(gate), up, c.act).expect("act");
        let d = be.linear(g, w("down"), None).expect("down");
        let y = be.add(d, x).expect("add 2");
        out.extend(be.read(y).expect("read"));
    }
    out
}

#[test]
fn fused_decode_block_matches_unfused_and_cpu() {
    let cases = [
        Case { ty: GgmlType::Q4_0, norm: NormKind::Rms, act: Activation::SwiGlu, bias: false },
        Case { ty: GgmlType::Q8_0, norm: NormKind::Layer, act: Activation::GeGlu, bias: true },
        Case { ty: GgmlType::Q4_1, norm: NormKind::Rms, act: Activation::SwiGlu, bias: true },
        Case { ty: GgmlType::Q6K, norm: NormKind::Layer, act: Activation::SwiGlu, bias: false },
        Case { ty: GgmlType::F32, norm: NormKind::Rms, act: Activation::GeGlu, bias: false },
    ];
    for c in &cases {
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
    }
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
