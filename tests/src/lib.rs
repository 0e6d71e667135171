//! Shared helpers for the cross-crate tests: locating test models and golden files, loading a
//! model on the CPU backend, and a greedy decode loop.

pub mod families;
pub mod parity;
pub mod plugins;

use std::path::PathBuf;

use hangar_engine::cpu::CpuBackend;
use hangar_engine::graph::Logits;
use hangar_engine::Model;

/// The model cache (`HANGAR_MODEL_DIR`, default `~/.cache/hangar/models`), filled by
/// `scripts/fetch-models.sh`.
pub fn model_dir() -> PathBuf {
    std::env::var_os("HANGAR_MODEL_DIR").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
        home.join(".cache/hangar/models")
    })
}

/// A file in the model cache. A missing file fails the test: skipping would report a check
/// as passed that never ran.
pub fn model_path(name: &str) -> PathBuf {
    let p = model_dir().join(name);
    assert!(p.exists(), "{} is missing: run scripts/fetch-models.sh {} first", p.display(), model_dir().display());
    p
}

/// A golden file under `tests/golden/`.
pub fn golden(rel: &str) -> serde_json::Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden").join(rel);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", p.display()))
}

pub fn load_cpu(name: &str) -> Model {
    load_on(name, Box::new(CpuBackend::new()))
}

/// A cached model on any backend, so one test body serves the CPU and the GPU.
pub fn load_on(name: &str, backend: Box<dyn hangar_engine::backend::Backend>) -> Model {
    let registry = hangar_families::registry();
    Model::load(model_path(name), &registry, backend, |_, _| {}).unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

/// The process's GPU backend (lavapipe in CI, whatever adapter `Gpu::shared` picks elsewhere).
pub fn gpu() -> Box<dyn hangar_engine::backend::Backend> {
    let gpu = hangar_kernels::Gpu::shared().expect("a Vulkan adapter (lavapipe in CI)");
    eprintln!("adapter: {}", gpu.describe());
    Box::new(hangar_kernels::GpuBackend::new(gpu))
}

/// Index of the largest value; ties go to the lowest index, as the oracle's goldens do.
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// `n` greedy tokens after `prompt`, not stopping at end-of-generation tokens (the goldens
/// don't either).
pub fn greedy(model: &mut Model, prompt: &[u32], n: usize, n_ctx: usize) -> Vec<u32> {
    let mut s = model.session(n_ctx).expect("session");
    let mut logits = s.eval(prompt, 512, Logits::Last).expect("prefill");
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = argmax(&logits) as u32;
        out.push(t);
        if out.len() < n {
            logits = s.eval(&[t], 1, Logits::Last).expect("decode");
        }
    }
    out
}

pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().expect("array of ids").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}
