//! The tiny-fixture check shared by every backend: a fixture under `tests/data/families/` runs
//! on the given backend and its logits are compared with llama.cpp's at every position
//! (goldens from `scripts/gen_family_goldens.py`). The CPU tests call it now; a GPU test calls
//! it with the wgpu backend.

use std::path::PathBuf;

use hangar_engine::backend::Backend;
use hangar_engine::graph::Logits;
use hangar_engine::Model;

/// The bar: normalized mean squared error of each position's logits.
pub const MAX_NMSE: f64 = 1e-4;

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data").join("families")
}

/// `tests/golden/families/index.json`.
pub fn index() -> serde_json::Value {
    crate::golden("families/index.json")
}

/// The index entries of one family (`llama`, `mistral`, `phi2`, ...).
pub fn entries(index: &serde_json::Value, family: &str) -> Vec<serde_json::Value> {
    index["fixtures"].as_array().expect("fixtures").iter().filter(|e| e["family"] == family).cloned().collect()
}

/// Σ(got - want)² / Σ want²
pub fn nmse(got: &[f32], want: &[f32]) -> f64 {
    let (mut err, mut norm) = (0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        err += (g as f64 - w as f64).powi(2);
        norm += (w as f64).powi(2);
    }
    err / norm.max(f64::MIN_POSITIVE)
}

/// llama.cpp's logits for a fixture: `[rows * cols]`.
pub fn golden_logits(entry: &serde_json::Value) -> (Vec<f32>, usize, usize) {
    let l = &entry["logits"];
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden/families").join(l["file"].as_str().expect("logits.file"));
    let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
    let (rows, cols) = (l["rows"].as_u64().expect("rows") as usize, l["cols"].as_u64().expect("cols") as usize);
    assert_eq!(bytes.len(), rows * cols * 4, "{} has the wrong size", p.display());
    let v = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    (v, rows, cols)
}

/// How one fixture compared.
#[derive(Debug)]
pub struct FixtureReport {
    pub file: String,
    /// Worst position's NMSE over the batched and the chunked evaluation.
    pub worst_nmse: f64,
    pub worst_pos: usize,
    pub top1_agree: usize,
    pub rows: usize,
}

impl FixtureReport {
    pub fn passed(&self) -> bool {
        self.worst_nmse <= MAX_NMSE
    }
}

/// Loads the fixture onto `backend` and evaluates `tokens` twice: as one batch, and in chunks of
/// three through the KV cache (so sliding windows are crossed by cached keys too).
pub fn check_fixture(entry: &serde_json::Value, tokens: &[u32], backend: Box<dyn Backend>) -> FixtureReport {
    let file = entry["file"].as_str().expect("file").to_string();
    let registry = hangar_families::registry();
    let mut model = Model::load(fixture_dir().join(&file), &registry, backend, |_, _| {}).unwrap_or_else(|e| panic!("loading {file}: {e}"));
    let (want, rows, cols) = golden_logits(entry);
    assert_eq!(rows, tokens.len(), "{file}: golden rows");
    assert_eq!(cols, model.spec.hparams.n_vocab, "{file}: golden columns");
    let mut report = FixtureReport { file: file.clone(), worst_nmse: 0.0, worst_pos: 0, top1_agree: 0, rows };
    for chunk in [tokens.len(), 3] {
        let got = model.session(tokens.len()).expect("session").eval(tokens, chunk, Logits::All).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(got.len(), want.len(), "{file}: logits length");
        for (pos, (g, w)) in got.chunks(cols).zip(want.chunks(cols)).enumerate() {
            let e = nmse(g, w);
            if e > report.worst_nmse || e.is_nan() {
                report.worst_nmse = if e.is_nan() { f64::INFINITY } else { e };
                report.worst_pos = pos;
            }
            if chunk == tokens.len() {
                report.top1_agree += (crate::argmax(g) == crate::argmax(w)) as usize;
            }
        }
    }
    report
}

/// A copy of `src` with metadata `set` (added or replaced) and the tensors in `drop` left out,
/// for tests of how families read keys and refuse malformed files.
pub fn edited_copy(src: &hangar_engine::gguf::GgufFile, set: &[(&str, hangar_engine::gguf::MetaValue)], drop: &[&str]) -> hangar_engine::gguf::GgufFile {
    use hangar_engine::gguf::{GgufError, GgufFile, GgufWriter, TensorDesc};
    let mut w = GgufWriter::new();
    for (k, v) in src.metadata() {
        w.set(k, v.clone());
    }
    for (k, v) in set {
        w.set(k, v.clone());
    }
    let kept: Vec<_> = src.tensors().iter().filter(|t| !drop.contains(&t.name.as_str())).collect();
    for t in &kept {
        w.add_tensor(TensorDesc { name: t.name.clone(), ty: t.ty, dims: t.dims.clone() }).expect("tensor desc");
    }
    let mut bytes = Vec::new();
    w.write::<_, GgufError>(&mut bytes, |i, _| Ok(src.view(kept[i]).data.to_vec())).expect("write gguf");
    GgufFile::from_bytes(bytes).expect("reparse gguf")
}
