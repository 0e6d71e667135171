//! Weight arenas bound as binding arrays: the kernel checks of ops.rs and fused.rs, and a tiny
//! model's generation over several arenas, with every arena bound once and each dispatch
//! selecting its arenas by index.
//!
//! Lavapipe has no binding arrays, so the GPU tests here are ignored there, and they fail
//! rather than pass if run on an adapter without them. Run them where the adapter has them
//! (the H100): `cargo test --release -p hangar-kernels --test binding_arrays -- --ignored`.
//! The shader validation and the fallback tests at the end run on any adapter.
//!
//! Tolerance: as in ops.rs and fused.rs against the CPU; 1e-12 of NMSE against the same
//! kernels binding one arena per dispatch (same arithmetic, only the addressing differs).

mod common;

use std::sync::Arc;

use common::block::{block, model, CASES};
use common::cases::*;
use common::*;
use hangar_engine::backend::{Backend, KvFormat, WeightId};
use hangar_engine::cpu::CpuBackend;
use hangar_engine::gguf::GgufFile;
use hangar_engine::graph::{forward, Logits, Weights};
use hangar_engine::kv::KvPolicy;
use hangar_engine::quant::GgmlType;
use hangar_kernels::pipelines::{has_q8_unit, shader_source_for, MvInput, Op, Variant};
use hangar_kernels::{BackendOptions, Gpu, GpuBackend, GpuOptions, WeightBinding};

/// A device with binding arrays switched on (they are off by default), which must bind
/// weights with them: on any other adapter the test fails here instead of passing without
/// having run the path it is for.
fn arrays_gpu() -> (Arc<Gpu>, u32) {
    let dev = Arc::new(Gpu::new(&GpuOptions { allow_binding_arrays: true, ..GpuOptions::default() }).expect("device"));
    match dev.weight_binding {
        WeightBinding::BindingArrays { slots } => (dev, slots),
        ref other => panic!("{} binds weights with {other}; these tests need an adapter with storage binding arrays", dev.describe()),
    }
}

/// The one-arena-per-dispatch path on the same device, for comparison.
fn per_dispatch() -> BackendOptions {
    BackendOptions { no_binding_arrays: true, ..Default::default() }
}

/// `be` ran with binding arrays, binding its arenas once per submission, never per dispatch.
#[track_caller]
fn assert_bound_once(be: &GpuBackend, what: &str) {
    assert!(be.binding_arrays(), "{what}: the backend fell back to one arena per dispatch");
    assert!(be.weight_binds() <= be.submissions(), "{what}: {} weight binds over {} submissions", be.weight_binds(), be.submissions());
}

#[test]
#[ignore = "needs an adapter with storage binding arrays"]
fn matvec_and_matmul_match_reference_for_every_type_with_binding_arrays() {
    let (dev, _) = arrays_gpu();
    let lean = BackendOptions { mv_lean_below: Some(usize::MAX), ..Default::default() };
    for ty in ALL_TYPES {
        for (cols, n, opts) in [(512, 1, BackendOptions::default()), (4352, 1, BackendOptions::default()), (512, 1, lean.clone()), (4352, 1, lean.clone()), (256, 6, BackendOptions::default())] {
            let be = linear_case_on(dev.clone(), ty, 37, cols, n, opts);
            assert_bound_once(&be, &format!("{ty:?} 37x{cols} n={n}"));
        }
        let be = batched_rows_case_on(dev.clone(), ty, 37, 512, 5, BackendOptions::default());
        assert_bound_once(&be, &format!("{ty:?} batched rows"));
    }
}

#[test]
#[ignore = "needs an adapter with storage binding arrays"]
fn matvec_matches_reference_when_the_weight_is_split_across_arenas_with_binding_arrays() {
    let (dev, _) = arrays_gpu();
    // Q8_0 rows of 512 are 576 bytes on the GPU; 4 KiB arenas hold 7 rows, so 37 rows take 6.
    let small = BackendOptions { max_arena_bytes: Some(4096), ..Default::default() };
    let be = linear_case_on(dev.clone(), GgmlType::Q8_0, 37, 512, 2, small.clone());
    let segs = be.weight_segments(WeightId(0));
    assert!(segs >= 5, "expected the weight split over several arenas, got {segs}");
    assert_bound_once(&be, "split matvec");
    let be = batched_rows_case_on(dev.clone(), GgmlType::Q8_0, 37, 512, 3, small.clone());
    assert_bound_once(&be, "split batched rows");
    // The same split binds an arena per segment without binding arrays.
    let fallback = linear_case_on(dev, GgmlType::Q8_0, 37, 512, 2, BackendOptions { no_binding_arrays: true, ..small });
    assert!(fallback.weight_binds() >= segs as u64, "{} weight binds for {segs} segments", fallback.weight_binds());
}

#[test]
#[ignore = "needs an adapter with storage binding arrays"]
fn fused_decode_block_matches_cpu_and_the_per_dispatch_path_with_binding_arrays() {
    let (dev, _) = arrays_gpu();
    for c in &CASES {
        let f = model(c);
        let what = format!("{:?}/{:?}/{:?}", c.ty, c.norm, c.act);
        let want = block(&mut CpuBackend::new(), &f, c);
        let mut fused = GpuBackend::new(dev.clone());
        let got = block(&mut fused, &f, c);
        let mut lean = GpuBackend::with_options(dev.clone(), BackendOptions { mv_lean_below: Some(usize::MAX), ..Default::default() });
        let got_lean = block(&mut lean, &f, c);
        let mut one = GpuBackend::with_options(dev.clone(), per_dispatch());
        let got_one = block(&mut one, &f, c);
        assert_bound_once(&fused, &what);
        assert_bound_once(&lean, &what);
        let (e_cpu, e_lean, e_one) = (nmse(&got, &want), nmse(&got_lean, &want), nmse(&got, &got_one));
        assert!(e_cpu < 1e-6, "{what}: binding arrays vs CPU NMSE {e_cpu:e}");
        assert!(e_lean < 1e-6, "{what}: lean, binding arrays vs CPU NMSE {e_lean:e}");
        assert!(e_one < 1e-12, "{what}: binding arrays vs one arena per dispatch NMSE {e_one:e}");
        assert_eq!(fused.dispatches(), one.dispatches(), "{what}: binding arrays change no fusion");
    }
}

const N_EMBD: usize = 256;
const N_FF: usize = 256;
const N_VOCAB: usize = 512;

/// A tiny llama of mixed types, about 1 MB of GPU weights.
fn tiny_llama() -> Arc<GgufFile> {
    let mut rng = Rng::new(7);
    let mut t = vec![
        matrix(&mut rng, "token_embd.weight", GgmlType::Q4_0, N_VOCAB, N_EMBD),
        matrix(&mut rng, "output.weight", GgmlType::Q8_0, N_VOCAB, N_EMBD),
        vector("output_norm.weight", &rng.vec(N_EMBD, 1.0)),
    ];
    for i in 0..2 {
        let n = |s: &str| format!("blk.{i}.{s}.weight");
        t.push(vector(&n("attn_norm"), &rng.vec(N_EMBD, 1.0)));
        t.push(vector(&n("ffn_norm"), &rng.vec(N_EMBD, 1.0)));
        for (s, ty, rows, cols) in [
            ("attn_q", GgmlType::Q8_0, N_EMBD, N_EMBD),
            ("attn_k", GgmlType::Q4_1, 128, N_EMBD),
            ("attn_v", GgmlType::Q4_1, 128, N_EMBD),
            ("attn_output", GgmlType::Q6K, N_EMBD, N_EMBD),
            ("ffn_gate", GgmlType::Q4K, N_FF, N_EMBD),
            ("ffn_up", GgmlType::Q4K, N_FF, N_EMBD),
            ("ffn_down", GgmlType::F16, N_EMBD, N_FF),
        ] {
            let mut m = matrix(&mut rng, &n(s), ty, rows, cols);
            if ty == GgmlType::F16 {
                m.data = rng.vec(rows * cols, 0.1).iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect();
            }
            t.push(m);
        }
    }
    file_with(t, tiny_llama_meta(N_EMBD, N_FF))
}

fn argmax(v: &[f32]) -> u32 {
    v.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &x)| if x > b.1 { (i as u32, x) } else { b }).0
}

/// Greedy generation of `n` tokens after `prompt`, following `forced` when given (so other
/// backends see the same inputs); returns the tokens and every step's logits.
fn generate(be: &mut dyn Backend, file: &Arc<GgufFile>, prompt: &[u32], n: usize, forced: Option<&[u32]>) -> (Vec<u32>, Vec<f32>) {
    let spec = hangar_families::registry().build_spec(file).expect("spec");
    let w = Weights::load(&spec, file, be, |_, _| {}).expect("weights");
    let seq = be.new_sequence(2, 128, 64, KvFormat { policy: Default::default(), head_dim: spec.hparams.head_dim }).expect("seq");
    let mut logits = forward(&spec, &w, be, seq, prompt, 0, Logits::Last).expect("prefill");
    let (mut tokens, mut all) = (Vec::new(), logits.clone());
    for i in 0..n {
        let t = forced.map_or_else(|| argmax(&logits), |f| f[i]);
        tokens.push(t);
        logits = forward(&spec, &w, be, seq, &[t], prompt.len() + i, Logits::Last).expect("decode");
        all.extend(&logits);
    }
    (tokens, all)
}

#[test]
#[ignore = "needs an adapter with storage binding arrays"]
fn tiny_model_generation_over_several_arenas_matches_with_binding_arrays() {
    let (dev, slots) = arrays_gpu();
    let file = tiny_llama();
    let prompt = [1u32, 300, 17, 511];
    // 48 KiB arenas: the model spans about 20, and the LM head (139 KB) is split over three.
    let small = |no_binding_arrays| BackendOptions { max_arena_bytes: Some(48 << 10), no_binding_arrays, ..Default::default() };
    let mut be = GpuBackend::with_options(dev.clone(), small(false));
    let (tokens, got) = generate(&mut be, &file, &prompt, 8, None);
    let arenas = be.arena_sizes().len();
    assert!(arenas >= 4 && arenas <= slots as usize, "{arenas} arenas for {slots} slots");
    assert_bound_once(&be, "generation");
    let mut one = GpuBackend::with_options(dev, small(true));
    let (tokens_one, got_one) = generate(&mut one, &file, &prompt, 8, None);
    assert_eq!(tokens, tokens_one, "binding arrays and one arena per dispatch generate the same tokens");
    let (_, want) = generate(&mut CpuBackend::new(), &file, &prompt, 8, Some(&tokens));
    let (e_cpu, e_one) = (nmse(&got, &want), nmse(&got, &got_one));
    assert!(e_cpu < 1e-6, "logits vs CPU NMSE {e_cpu:e}");
    assert!(e_one < 1e-12, "logits vs one arena per dispatch NMSE {e_one:e}");
}

#[test]
#[ignore = "needs an adapter with storage binding arrays"]
fn more_arenas_than_slots_bind_one_arena_per_dispatch_and_stay_correct() {
    let (dev, slots) = arrays_gpu();
    // 2 KiB arenas (the input's f32 rows) hold 3 Q8_0 rows of 512: over `slots` arenas.
    let rows = 3 * (slots as usize + 2);
    let be = linear_case_on(dev, GgmlType::Q8_0, rows, 512, 1, BackendOptions { max_arena_bytes: Some(2048), ..Default::default() });
    assert!(be.arena_sizes().len() > slots as usize, "{} arenas", be.arena_sizes().len());
    assert!(!be.binding_arrays(), "more arenas than slots must fall back");
}

#[test]
#[ignore = "needs an adapter with storage binding arrays"]
fn the_switch_forces_one_arena_per_dispatch_on_an_adapter_with_binding_arrays() {
    let (dev, _) = arrays_gpu();
    let be = linear_case_on(dev.clone(), GgmlType::Q4_0, 37, 512, 1, per_dispatch());
    assert!(!be.binding_arrays());
    let off = Gpu::new(&GpuOptions { allow_binding_arrays: false, ..GpuOptions::default() }).expect("device");
    assert!(matches!(off.weight_binding, WeightBinding::PerDispatch { .. }), "{}", off.weight_binding);
    let be = linear_case_on(Arc::new(off), GgmlType::Q4_0, 37, 512, 1, BackendOptions::default());
    assert!(!be.binding_arrays());
}

/// Every kernel variant a device with binding arrays may compile.
fn every_variant() -> Vec<(Op, Option<GgmlType>)> {
    let mut out = Vec::new();
    for ty in ALL_TYPES {
        for input in [MvInput::Plain, MvInput::Norm, MvInput::Combine] {
            for lean in [false, true] {
                out.push((Op::Mv { input, lean, q8: false }, Some(ty)));
                if has_q8_unit(ty) {
                    out.push((Op::Mv { input, lean, q8: true }, Some(ty)));
                }
            }
        }
        out.push((Op::Matmul, Some(ty)));
        out.push((Op::Embed, Some(ty)));
    }
    for p in [KvPolicy::F32, KvPolicy::F16, KvPolicy::Q8, KvPolicy::Int4Plain, KvPolicy::Int4Hadamard, KvPolicy::Int4] {
        out.extend([(Op::KvWrite(p), None), (Op::Attention(p), None)]);
        if p.centers(None) {
            out.push((Op::KvCenter(p), None));
        }
    }
    for op in [Op::Norm, Op::Rope, Op::AttnCombine, Op::Eltwise, Op::Argmax, Op::Sample, Op::Mask] {
        out.push((op, None));
    }
    out
}

/// Binding-array indices in `module` whose value naga's uniformity analysis cannot prove the
/// same for every invocation (naga itself checks this for texture arrays only).
fn non_uniform_arena_indices(module: &naga::Module, info: &naga::valid::ModuleInfo) -> Vec<String> {
    let is_array = |e: &naga::Expression| match *e {
        naga::Expression::GlobalVariable(g) => matches!(module.types[module.global_variables[g].ty].inner, naga::TypeInner::BindingArray { .. }),
        _ => false,
    };
    let mut bad = Vec::new();
    let functions = module.functions.iter().map(|(h, f)| (f, &info[h]));
    let entries = module.entry_points.iter().enumerate().map(|(i, e)| (&e.function, info.get_entry_point(i)));
    for (f, fi) in functions.chain(entries) {
        for (_, e) in f.expressions.iter() {
            if let naga::Expression::Access { base, index } = *e {
                if is_array(&f.expressions[base]) && fi[index].uniformity.non_uniform_result.is_some() {
                    bad.push(format!("{:?}: {:?}", f.name, f.expressions[index]));
                }
            }
        }
    }
    bad
}

#[test]
fn binding_array_shaders_validate_with_dynamically_uniform_arena_indices() {
    // Validated without the non-uniform indexing capabilities the device is not asked for, and
    // every arena index checked uniform: the driver then picks each arena once per dispatch.
    let non_uniform = naga::valid::Capabilities::STORAGE_BUFFER_BINDING_ARRAY_NON_UNIFORM_INDEXING
        | naga::valid::Capabilities::BUFFER_BINDING_ARRAY_NON_UNIFORM_INDEXING;
    let caps = naga::valid::Capabilities::all() - non_uniform;
    let mut indexed = 0;
    for subgroups in [false, true] {
        for (op, ty) in every_variant() {
            let what = format!("{op:?}/{ty:?} subgroups={subgroups}");
            let src = shader_source_for(op, ty, Variant { subgroups, arena_slots: Some(64) });
            let module = naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(&src)));
            let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
                .validate(&module)
                .unwrap_or_else(|e| panic!("{what}: {e:?}"));
            let bad = non_uniform_arena_indices(&module, &info);
            assert!(bad.is_empty(), "{what}: non-uniform arena indices {bad:?}");
            indexed += src.matches("_arenas[SEL.").count();
            let opts = naga::back::spv::Options { lang_version: (1, 3), ..Default::default() };
            naga::back::spv::write_vec(&module, &info, &opts, None).unwrap_or_else(|e| panic!("{what}: SPIR-V: {e:?}"));
        }
    }
    assert!(indexed > 0, "no kernel reads an arena through the binding arrays");
}

#[test]
fn per_dispatch_shaders_are_the_sources_without_binding_arrays() {
    for (op, ty) in every_variant() {
        let src = shader_source_for(op, ty, Variant { subgroups: true, arena_slots: None });
        assert!(!src.contains("binding_array") && !src.contains("SEL."), "{op:?}/{ty:?}");
    }
}

#[test]
fn an_adapter_without_binding_arrays_binds_one_arena_per_dispatch() {
    let dev = gpu();
    let has = dev.adapter_features.contains(hangar_kernels::BINDING_ARRAY_FEATURES);
    let be = linear_case_on(dev.clone(), GgmlType::Q4_0, 37, 512, 1, BackendOptions::default());
    // The shared device keeps the default (off) unless HANGAR_BINDING_ARRAYS=1 asks for them.
    let asked = std::env::var("HANGAR_BINDING_ARRAYS").as_deref() == Ok("1");
    match &dev.weight_binding {
        WeightBinding::PerDispatch { why } => {
            assert!(!has || !asked, "{} has binding arrays but {why}", dev.describe());
            assert!(!be.binding_arrays());
        }
        WeightBinding::BindingArrays { .. } => {
            assert!(has, "binding arrays chosen on {} without the features", dev.describe());
            assert!(be.binding_arrays());
        }
    }
    // Switched off, any adapter binds one arena per dispatch.
    let off = Gpu::new(&GpuOptions { allow_binding_arrays: false, ..GpuOptions::default() }).expect("device");
    assert!(matches!(&off.weight_binding, WeightBinding::PerDispatch { why } if why.contains("switched off")), "{}", off.weight_binding);
    assert!(!linear_case_on(Arc::new(off), GgmlType::Q4_0, 37, 512, 1, BackendOptions::default()).binding_arrays());
}
