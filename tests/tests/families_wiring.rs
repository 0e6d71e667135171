//! How families read what the llama.cpp goldens cannot reach: Mistral's sliding window (which
//! llama.cpp's llama graph ignores) and malformed files, which must give typed errors.

use std::sync::Arc;

use hangar_engine::cpu::CpuBackend;
use hangar_engine::family::FamilyError;
use hangar_engine::gguf::{GgufFile, MetaValue};
use hangar_engine::graph::Logits;
use hangar_engine::Model;
use hangar_tests::families::{edited_copy, entries, fixture_dir, golden_logits, index, nmse};
use hangar_tests::ids;

fn fixture(family: &str, ty: &str) -> (serde_json::Value, GgufFile) {
    let e = entries(&index(), family).into_iter().find(|e| e["type"] == ty).expect("fixture");
    let f = GgufFile::open(fixture_dir().join(e["file"].as_str().expect("file"))).expect("open fixture");
    (e, f)
}

/// With `llama.attention.sliding_window = 8`, the first 8 positions see every key anyway and
/// keep llama.cpp's logits exactly; later positions lose the oldest keys and must change. The
/// windowed attention itself is checked against llama.cpp by the Gemma 2/3 fixtures, which run
/// the same engine path.
#[test]
fn mistral_sliding_window_applies_from_the_window_on() {
    const WINDOW: usize = 8;
    let (e, f) = fixture("mistral", "F32");
    let windowed = edited_copy(&f, &[("llama.attention.sliding_window", MetaValue::U32(WINDOW as u32))], &[]);
    let registry = hangar_families::registry();
    let mut model = Model::from_file(Arc::new(windowed), &registry, Box::new(CpuBackend::new()), |_, _| {}).expect("load");
    assert!(model.spec.layers.iter().all(|l| l.attention.window == Some(WINDOW)));
    let tokens = ids(&index()["tokens"]);
    let got = model.session(tokens.len()).expect("session").eval(&tokens, 5, Logits::All).expect("eval");
    let (want, _, cols) = golden_logits(&e);
    for (pos, (g, w)) in got.chunks(cols).zip(want.chunks(cols)).enumerate() {
        let err = nmse(g, w);
        if pos < WINDOW {
            assert!(err < 1e-10, "position {pos} sees every key yet differs: NMSE {err:e}");
        } else {
            assert!(err > 1e-4, "position {pos} ignored the window: NMSE {err:e}");
        }
    }
}

#[test]
fn a_missing_tensor_is_a_typed_error_for_every_family() {
    let registry = hangar_families::registry();
    for family in ["llama", "phi2", "phi3", "qwen2", "falcon", "gptneox", "stablelm", "gemma", "gemma2", "gemma3"] {
        let (_, f) = fixture(family, "F32");
        let broken = edited_copy(&f, &[], &["blk.1.ffn_down.weight"]);
        match registry.build_spec(&broken) {
            Err(FamilyError::MissingTensor(name)) => assert_eq!(name, "blk.1.ffn_down.weight"),
            other => panic!("{family}: expected a missing-tensor error, got {other:?}"),
        }
    }
}

#[test]
fn inconsistent_hparams_are_refused_not_run() {
    let registry = hangar_families::registry();
    let (_, f) = fixture("qwen2", "F32");
    let cases: [(&str, MetaValue); 4] = [
        ("qwen2.attention.head_count_kv", MetaValue::U32(3)),
        ("qwen2.embedding_length", MetaValue::U32(65)),
        ("qwen2.rope.dimension_count", MetaValue::U32(7)),
        ("qwen2.rope.scaling.type", MetaValue::String("yarn".into())),
    ];
    for (key, value) in cases {
        let mut set = vec![(key, value)];
        if key.ends_with("scaling.type") {
            set.push(("qwen2.rope.scaling.factor", MetaValue::F32(4.0)));
        }
        let broken = edited_copy(&f, &set, &[]);
        let err = registry.build_spec(&broken).expect_err(key);
        assert!(matches!(err, FamilyError::BadValue { .. } | FamilyError::BadTensorShape { .. }), "{key}: {err}");
    }
}

#[test]
fn gemma3_layers_alternate_five_local_to_one_global() {
    let (_, f) = fixture("gemma3", "F32");
    let spec = hangar_families::registry().build_spec(&f).expect("spec");
    let windows: Vec<Option<usize>> = spec.layers.iter().map(|l| l.attention.window).collect();
    assert_eq!(windows, [Some(8), Some(8), Some(8), Some(8), Some(8), None]);
    let bases: Vec<f32> = spec.layers.iter().map(|l| l.attention.rope.freq_base).collect();
    assert_eq!(bases, [10000.0, 10000.0, 10000.0, 10000.0, 10000.0, 1e6]);
    assert!(spec.layers.iter().all(|l| l.attention.q_norm.is_some() && l.post_ffn_norm.is_some()));
}

/// `int4` picks its rotation per family: Qwen2's k bias makes it plain, Llama's unbiased keys
/// rotated; the names that ask for one rotation keep it.
#[test]
fn int4_kv_cache_resolves_by_whether_the_family_biases_its_keys() {
    use hangar_engine::kv::KvPolicy;
    let registry = hangar_families::registry();
    for (family, want) in [("qwen2", KvPolicy::Int4Plain), ("llama", KvPolicy::Int4Hadamard)] {
        let (_, f) = fixture(family, "F32");
        let mut model = Model::from_file(Arc::new(f), &registry, Box::new(CpuBackend::new()), |_, _| {}).expect("load");
        model.set_kv_policy(KvPolicy::Int4).expect("int4");
        assert_eq!(model.kv_policy(), want, "{family}");
        model.set_kv_policy(KvPolicy::Int4Hadamard).expect("int4h");
        assert_eq!(model.kv_policy(), KvPolicy::Int4Hadamard, "{family}: an explicit int4h stays");
        let mut s = model.session(16).expect("session");
        s.eval(&[1, 2, 3], 8, Logits::Last).expect("eval under int4h");
    }
}
