//! Every kernel against its CPU twin (`quant::dequantize` + dot for matvec/matmul/embed, the
//! engine's `cpu::ops` / `cpu::attend` through `CpuBackend` for the rest), on whatever adapter
//! `Gpu::shared` picks (lavapipe in CI).
//!
//! Tolerance: NMSE 1e-7 unless a test says otherwise. GPU sums run in a different order
//! than the CPU's, which costs about 1e-12 of NMSE, far inside it.

mod common;

use std::sync::Arc;

use common::cases::*;
use common::*;
use hangar_engine::backend::{Act, AttnParams, Backend, NormParams};
use hangar_engine::cpu::CpuBackend;
use hangar_engine::gguf::GgufFile;
use hangar_engine::quant::{self, GgmlType};
use hangar_engine::spec::{Activation, NormKind, RopeConfig, RopeStyle};
use hangar_kernels::{BackendOptions, Gpu, GpuBackend, GpuOptions, MV_Q8_FROM};

fn gpu_backend() -> GpuBackend {
    GpuBackend::new(gpu())
}

/// Runs the same op on the CPU and GPU backends.
fn both(f: &Arc<GgufFile>, names: &[&str], op: impl Fn(&mut dyn Backend, &[hangar_engine::backend::WeightId]) -> Act) -> (Vec<f32>, Vec<f32>) {
    let want = run(&mut CpuBackend::new(), f, names, &op);
    let got = run(&mut gpu_backend(), f, names, &op);
    (got, want)
}

fn linear_case(ty: GgmlType, rows_: usize, cols: usize, n: usize, opts: BackendOptions) -> usize {
    linear_case_on(gpu(), ty, rows_, cols, n, opts).weight_segments(hangar_engine::backend::WeightId(0))
}

#[test]
fn matvec_matches_reference_for_every_type() {
    for ty in ALL_TYPES {
        linear_case(ty, 37, 512, 1, BackendOptions::default());
    }
}

#[test]
fn matvec_matches_reference_for_rows_wide_enough_to_walk_two_blocks_at_a_time() {
    // 4,352 columns: past the width where each step takes two blocks, and over two staged chunks.
    for ty in ALL_TYPES {
        linear_case(ty, 37, 4352, 1, BackendOptions::default());
    }
}

/// The lean matvec layout (one row per invocation), which a GPU gives its small matvecs and a
/// CPU driver only when forced.
fn lean() -> BackendOptions {
    BackendOptions { mv_lean_below: Some(usize::MAX), ..Default::default() }
}

#[test]
fn matvec_matches_reference_in_the_lean_layout_for_every_type() {
    for ty in ALL_TYPES {
        linear_case(ty, 37, 512, 1, lean());
        linear_case(ty, 37, 4352, 1, lean());
        batched_rows_case(ty, 37, 512, 3, lean());
    }
}

#[test]
fn matmul_matches_reference_for_every_type() {
    // 6 tokens: one full tile of 4 and a partial one.
    for ty in ALL_TYPES {
        linear_case(ty, 21, 256, 6, BackendOptions::default());
    }
}

#[test]
fn matvec_and_matmul_match_reference_without_subgroups() {
    // The fallback path (one row per invocation) that adapters without subgroups take.
    let dev = Arc::new(Gpu::new(&GpuOptions { allow_subgroups: false, ..GpuOptions::default() }).expect("device"));
    assert!(!dev.describe().contains("subgroups of"), "{}", dev.describe());
    for ty in ALL_TYPES {
        linear_case_on(dev.clone(), ty, 70, 256, 1, BackendOptions::default());
        linear_case_on(dev.clone(), ty, 9, 256, 5, BackendOptions::default());
        batched_rows_case_on(dev.clone(), ty, 9, 256, 6, BackendOptions::default());
    }
    // The 8-bit input's half-block pairs meet through workgroup memory here.
    assert_eq!(linear_case_on(dev, GgmlType::Q4_0, 37, 4352, 1, BackendOptions::default()).q8_matvecs(), 1);
}

/// Q4_0 rows at least `MV_Q8_FROM` wide take 8-bit inputs (mv.wgsl `stage_q8`), checked against
/// their CPU twin (`quant::Q8Input`) at the kernel tolerance: rows staged in one chunk (up to
/// 16,384 columns, the 8B's down projection among them) and in two, wide, and lean where
/// switched on (by default lean matvecs stay in floats); batched rows each bit-identical to
/// the row alone. Narrower rows and the types without an 8-bit kernel stay in floats.
#[test]
fn wide_q4_0_matvecs_take_8_bit_inputs_and_match_their_twin() {
    for (rows_, cols) in [(37, MV_Q8_FROM), (37, 4352), (19, 14336), (5, 20480)] {
        let be = linear_case_on(gpu(), GgmlType::Q4_0, rows_, cols, 1, BackendOptions::default());
        assert_eq!(be.q8_matvecs(), 1, "{rows_}x{cols} did not take 8-bit inputs");
    }
    let lean_q8 = BackendOptions { mv_q8_lean: Some(true), ..lean() };
    assert_eq!(linear_case_on(gpu(), GgmlType::Q4_0, 37, 4352, 1, lean_q8).q8_matvecs(), 1);
    // Lean matvecs stay in floats unless switched on.
    assert_eq!(linear_case_on(gpu(), GgmlType::Q4_0, 37, 4352, 1, BackendOptions { mv_q8_lean: Some(false), ..lean() }).q8_matvecs(), 0);
    assert!(batched_rows_case_on(gpu(), GgmlType::Q4_0, 37, 4352, 3, BackendOptions::default()).q8_matvecs() > 0);
    assert_eq!(linear_case_on(gpu(), GgmlType::Q4_0, 37, MV_Q8_FROM - 32, 1, BackendOptions::default()).q8_matvecs(), 0);
    assert_eq!(linear_case_on(gpu(), GgmlType::Q4_1, 37, 4352, 1, BackendOptions::default()).q8_matvecs(), 0);
    // Switched off, the wide rows take the float path and meet the float reference.
    let off = BackendOptions { mv_q8_from: Some(usize::MAX), ..Default::default() };
    assert_eq!(linear_case_on(gpu(), GgmlType::Q4_0, 37, 4352, 1, off).q8_matvecs(), 0);
}

/// Wide Q8_0 rows take 8-bit inputs by default: against their twin, in one staged chunk and
/// two, wide, lean where switched on, and batched; switched off, they meet the float reference.
#[test]
fn wide_q8_0_matvecs_take_8_bit_inputs_and_match_their_twin() {
    let on = BackendOptions::default();
    for (rows_, cols) in [(37, MV_Q8_FROM), (19, 14336), (5, 20480)] {
        assert_eq!(linear_case_on(gpu(), GgmlType::Q8_0, rows_, cols, 1, on.clone()).q8_matvecs(), 1, "{rows_}x{cols}");
    }
    let off = BackendOptions { mv_q8_from: Some(usize::MAX), ..Default::default() };
    assert_eq!(linear_case_on(gpu(), GgmlType::Q8_0, 37, 4352, 1, off).q8_matvecs(), 0);
    assert_eq!(linear_case_on(gpu(), GgmlType::Q8_0, 37, 4352, 1, BackendOptions { mv_q8_lean: Some(true), ..lean() }).q8_matvecs(), 1);
    assert!(batched_rows_case_on(gpu(), GgmlType::Q8_0, 37, 4352, 3, on).q8_matvecs() > 0);
}

#[test]
fn matvec_handles_float_rows_that_are_not_whole_groups() {
    for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
        linear_case(ty, 9, 45, 3, BackendOptions::default());
    }
}

#[test]
fn matvec_matches_reference_when_the_weight_is_split_across_arenas() {
    // Q8_0 rows of 512 are 576 bytes on the GPU; 4 KiB arenas hold 7 rows, so 37 rows take 6.
    let segs = linear_case(GgmlType::Q8_0, 37, 512, 2, BackendOptions { max_arena_bytes: Some(4096), ..Default::default() });
    assert!(segs >= 5, "expected the weight split over several arenas, got {segs}");
}

fn batched_rows_case(ty: GgmlType, rows_: usize, cols: usize, n: usize, opts: BackendOptions) -> usize {
    batched_rows_case_on(gpu(), ty, rows_, cols, n, opts).weight_segments(hangar_engine::backend::WeightId(0))
}

#[test]
fn batched_matvec_rows_match_reference_and_each_row_alone_for_every_type() {
    for ty in ALL_TYPES {
        batched_rows_case(ty, 37, 512, 5, BackendOptions::default());
    }
    batched_rows_case(GgmlType::Q4_0, 70, 256, 3, BackendOptions { no_fusion: true, ..Default::default() });
    let segs = batched_rows_case(GgmlType::Q8_0, 37, 512, 3, BackendOptions { max_arena_bytes: Some(4096), ..Default::default() });
    assert!(segs >= 5, "expected the weight split over several arenas, got {segs}");
}

#[test]
fn concatenated_row_slices_are_the_rows_in_the_new_order() {
    let mut rng = Rng::new(5);
    let f = file(vec![matrix(&mut rng, "x", GgmlType::F32, 4, 12)]);
    let op = |be: &mut dyn Backend, id: &[hangar_engine::backend::WeightId]| {
        let x = be.embed(id[0], &rows(4)).expect("embed");
        let parts: Vec<Act> = [2, 0, 3].iter().map(|&r| be.row_slice(x, r, 1).expect("slice")).collect();
        be.concat_rows(&parts).expect("concat")
    };
    let (got, want) = both(&f, &["x"], op);
    assert_eq!(got, want);
    let x: &[f32] = bytemuck::cast_slice(f.tensor("x").expect("x").data);
    assert_eq!(&got[..12], &x[24..36]);
}

#[test]
fn embed_matches_reference_for_every_type() {
    for ty in ALL_TYPES {
        let mut rng = Rng::new(ty as u64 + 7);
        let (vocab, dim) = (50, 256);
        let f = file(vec![matrix(&mut rng, "e", ty, vocab, dim)]);
        let table = quant::dequantize_to_vec(ty, f.tensor("e").expect("e").data).expect("dequantize");
        let toks = [3u32, 49, 0, 3, 17];
        let want: Vec<f32> = toks.iter().flat_map(|&t| table[t as usize * dim..][..dim].to_vec()).collect();
        let got = run(&mut gpu_backend(), &f, &["e"], |be, id| be.embed(id[0], &toks).expect("embed"));
        // Dequantization is the same arithmetic as the CPU's: exact.
        assert_eq!(got, want, "{ty:?}");
    }
}

#[test]
fn embed_rejects_out_of_range_tokens() {
    let mut rng = Rng::new(1);
    let f = file(vec![matrix(&mut rng, "e", GgmlType::F32, 4, 32)]);
    let mut be = gpu_backend();
    let id = be.load_weight(&f, "e").expect("load");
    be.begin_step();
    assert!(be.embed(id, &[4]).is_err());
}

fn norm_case(kind: NormKind, group: usize, add_one: bool, with_bias: bool) {
    let mut rng = Rng::new(group as u64);
    let (n, cols) = (3, 192);
    let (w, b) = (rng.vec(group, 1.0), rng.vec(group, 0.3));
    let f = file(vec![matrix(&mut rng, "x", GgmlType::F32, n, cols), vector("w", &w), vector("b", &b)]);
    let p = NormParams { kind, eps: 1e-5, add_one, group };
    let (got, want) = both(&f, &["x", "w", "b"], |be, id| {
        let x = be.embed(id[0], &rows(n)).expect("embed");
        be.norm(x, Some(id[1]), with_bias.then_some(id[2]), p).expect("norm")
    });
    let e = nmse(&got, &want);
    assert!(e < TOL, "{kind:?} group {group}: NMSE {e:e}");
    // Arenas of one vector each, so the weight and the bias sit in different arenas.
    let op = |be: &mut dyn Backend, id: &[hangar_engine::backend::WeightId]| {
        let x = be.embed(id[0], &rows(n)).expect("embed");
        be.norm(x, Some(id[1]), with_bias.then_some(id[2]), p).expect("norm")
    };
    let mut be = GpuBackend::with_options(gpu(), BackendOptions { max_arena_bytes: Some((4 * cols.max(group)) as u64), ..Default::default() });
    let split = run(&mut be, &f, &["x", "w", "b"], &op);
    assert!(be.arena_sizes().len() >= 3, "{} arenas", be.arena_sizes().len());
    let e = nmse(&split, &want);
    assert!(e < TOL, "{kind:?} group {group}, weight and bias in separate arenas: NMSE {e:e}");
}

#[test]
fn rms_norm_matches_reference() {
    norm_case(NormKind::Rms, 192, false, false);
    norm_case(NormKind::Rms, 64, true, false);
}

#[test]
fn layer_norm_matches_reference() {
    norm_case(NormKind::Layer, 192, false, true);
    norm_case(NormKind::Layer, 48, false, true);
}

fn rope_case(style: RopeStyle, n_rot: usize, pos0: usize) {
    let mut rng = Rng::new(n_rot as u64);
    let (n, head_dim, heads) = (4, 64, 3);
    let f = file(vec![matrix(&mut rng, "x", GgmlType::F32, n, heads * head_dim)]);
    let rope = RopeConfig { style, n_rot, freq_base: 10000.0, freq_scale: 0.5, llama3: None, freq_factors: None };
    let (got, want) = both(&f, &["x"], |be, id| {
        let x = be.embed(id[0], &rows(n)).expect("embed");
        be.rope(x, head_dim, pos0, &rope).expect("rope")
    });
    let e = nmse(&got, &want);
    // GPU sin/cos of angles up to a few hundred radians lose a few more ulps than libm.
    assert!(e < 1e-6, "{style:?} n_rot {n_rot}: NMSE {e:e}");
}

#[test]
fn rope_matches_reference_normal_neox_and_partial() {
    rope_case(RopeStyle::Normal, 64, 0);
    rope_case(RopeStyle::Normal, 64, 300);
    rope_case(RopeStyle::Neox, 64, 17);
    rope_case(RopeStyle::Neox, 32, 17);
}

fn attention_case(n_head: usize, n_head_kv: usize, window: Option<usize>, softcap: Option<f32>) {
    let head_dim = 64;
    let mut rng = Rng::new(n_head as u64 * 5 + n_head_kv as u64);
    let (qd, kvd) = (n_head * head_dim, n_head_kv * head_dim);
    // A prefill of 70 tokens (more than one 64-position tile), then two decode steps.
    let total = 72;
    let f = qkv_file(&mut rng, total, qd, kvd);
    let p = AttnParams { n_head, n_head_kv, head_dim, scale: 0.125, softcap, window };
    let go = |be: &mut dyn Backend| -> Vec<f32> {
        let ids: Vec<_> = ["q", "k", "v"].iter().map(|n| be.load_weight(&f, n).expect("load")).collect();
        let seq = be.new_sequence(2, kvd, 96, hangar_engine::backend::KvFormat { policy: Default::default(), head_dim }).expect("seq");
        let mut out = Vec::new();
        for (pos0, n) in [(0usize, 70usize), (70, 1), (71, 1)] {
            be.begin_step();
            let toks: Vec<u32> = (pos0 as u32..(pos0 + n) as u32).collect();
            let q = be.embed(ids[0], &toks).expect("q");
            let k = be.embed(ids[1], &toks).expect("k");
            let v = be.embed(ids[2], &toks).expect("v");
            let a = be.attention(seq, 1, pos0, q, k, v, &p).expect("attention");
            out.extend(be.read(a).expect("read"));
        }
        out
    };
    let want = go(&mut CpuBackend::new());
    let got = go(&mut gpu_backend());
    let e = nmse(&got, &want);
    assert!(e < TOL, "heads {n_head}/{n_head_kv} window {window:?} softcap {softcap:?}: NMSE {e:e}");
}

#[test]
fn attention_matches_reference_causal_gqa() {
    attention_case(4, 4, None, None);
    attention_case(6, 2, None, None);
}

#[test]
fn attention_matches_reference_with_sliding_window_and_softcap() {
    attention_case(4, 2, Some(16), None);
    attention_case(4, 1, None, Some(1.5));
}

#[test]
fn attention_refuses_positions_past_the_cache() {
    let mut rng = Rng::new(3);
    let f = file(vec![matrix(&mut rng, "q", GgmlType::F32, 4, 64)]);
    let mut be = gpu_backend();
    let id = be.load_weight(&f, "q").expect("load");
    let seq = be.new_sequence(1, 64, 2, hangar_engine::backend::KvFormat { policy: Default::default(), head_dim: 64 }).expect("seq");
    be.begin_step();
    let x = be.embed(id, &[0, 1, 2]).expect("embed");
    let p = AttnParams { n_head: 1, n_head_kv: 1, head_dim: 64, scale: 1.0, softcap: None, window: None };
    assert!(be.attention(seq, 0, 0, x, x, x, &p).is_err());
}

#[test]
fn activations_and_elementwise_ops_match_reference() {
    let mut rng = Rng::new(11);
    let (n, cols) = (3, 100);
    let f = file(vec![matrix(&mut rng, "a", GgmlType::F32, n, cols), matrix(&mut rng, "b", GgmlType::F32, n, cols)]);
    type Op = Box<dyn Fn(&mut dyn Backend, Act, Act) -> Act>;
    let cases: Vec<(&str, Op)> = vec![
        ("swiglu", Box::new(|be, a, b| be.ffn_act(Some(a), b, Activation::SwiGlu).expect("op"))),
        ("geglu", Box::new(|be, a, b| be.ffn_act(Some(a), b, Activation::GeGlu).expect("op"))),
        ("gelu", Box::new(|be, _a, b| be.ffn_act(None, b, Activation::Gelu).expect("op"))),
        ("add", Box::new(|be, a, b| be.add(a, b).expect("op"))),
        ("scale", Box::new(|be, a, _b| be.scale(a, -3.5).expect("op"))),
        ("softcap", Box::new(|be, a, _b| be.softcap(a, 0.3).expect("op"))),
        ("last_row", Box::new(|be, a, _b| be.last_row(a).expect("op"))),
        ("split_cols", Box::new(|be, a, _b| be.split_cols(a, &[30, 50, 20]).expect("op")[1])),
    ];
    for (name, op) in cases {
        let (got, want) = both(&f, &["a", "b"], |be, id| {
            let a = be.embed(id[0], &rows(n)).expect("a");
            let b = be.embed(id[1], &rows(n)).expect("b");
            let a = be.scale(a, 8.0).expect("spread the inputs over the nonlinear range");
            op(be, a, b)
        });
        let e = nmse(&got, &want);
        assert!(e < TOL, "{name}: NMSE {e:e}");
    }
}
