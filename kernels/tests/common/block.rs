//! One transformer block written the way `engine::graph` calls the backend, for the fused
//! decode checks (fused.rs, and binding_arrays.rs with binding arrays on).

use std::sync::Arc;

use hangar_engine::backend::{Act, AttnParams, Backend, NormParams, WeightId};
use hangar_engine::gguf::GgufFile;
use hangar_engine::quant::GgmlType;
use hangar_engine::spec::{Activation, NormKind, RopeConfig, RopeStyle};

use super::*;

pub const E: usize = 256;
pub const HD: usize = 64;
pub const NH: usize = 4;
pub const NKV: usize = 2;
pub const FF: usize = 512;

pub struct Case {
    pub ty: GgmlType,
    pub norm: NormKind,
    pub act: Activation,
    pub bias: bool,
}

/// The fused decode block's cases: each fast matvec type and F32, both norms, both gated
/// activations, with and without biases.
pub const CASES: [Case; 5] = [
    Case { ty: GgmlType::Q4_0, norm: NormKind::Rms, act: Activation::SwiGlu, bias: false },
    Case { ty: GgmlType::Q8_0, norm: NormKind::Layer, act: Activation::GeGlu, bias: true },
    Case { ty: GgmlType::Q4_1, norm: NormKind::Rms, act: Activation::SwiGlu, bias: true },
    Case { ty: GgmlType::Q6K, norm: NormKind::Layer, act: Activation::SwiGlu, bias: false },
    Case { ty: GgmlType::F32, norm: NormKind::Rms, act: Activation::GeGlu, bias: false },
];

pub fn model(c: &Case) -> Arc<GgufFile> {
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

pub const NAMES: [&str; 15] = ["x", "n1", "n1b", "n2", "n2b", "bq", "bk", "bv", "q", "k", "v", "o", "gate", "up", "down"];

/// Prefill of 130 positions, then 3 decode steps, of one block; returns every step's output.
pub fn block(be: &mut dyn Backend, f: &Arc<GgufFile>, c: &Case) -> Vec<f32> {
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

