//! The real SmolLM2-135M Q4_1 (Q8_0 embeddings, F32 norms) on the GPU backend against the CPU
//! backend: greedy continuations of 20 of the parity goldens' prompts, decoded with argmax on
//! the device (one submission per token), and teacher-forced top-1 agreement over every
//! position of prompt + continuation.
//!
//! Lavapipe decodes this model at ~2-3 tokens/s on a shared 2-core machine (per-dispatch
//! overhead dominates), so continuations are N_GEN = 16 tokens rather than 64; the issue's
//! bars (>= 90% identical, >= 99.5% top-1) are unchanged.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use hangar_engine::backend::Backend;
use hangar_engine::cpu::CpuBackend;
use hangar_engine::gguf::GgufFile;
use hangar_engine::graph::{forward, forward_act, Logits, Weights};
use hangar_engine::spec::ModelSpec;
use hangar_kernels::GpuBackend;

const MIN_GREEDY_MATCH: f64 = 0.90;
const MIN_TOP1_AGREEMENT: f64 = 0.995;
const N_PROMPTS: usize = 20;
const N_GEN: usize = 16;
const N_CTX: usize = 256;

fn model_path(file: &str) -> PathBuf {
    let dir = std::env::var_os("HANGAR_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/hangar/models"));
    let p = dir.join(file);
    assert!(p.exists(), "model {} is missing; set HANGAR_MODEL_DIR or fetch it (CI does)", p.display());
    p
}

fn golden_prompts() -> Vec<(String, Vec<u32>)> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/parity/smollm2.json");
    let text = std::fs::read_to_string(&path).expect("parity golden");
    let g: serde_json::Value = serde_json::from_str(&text).expect("golden json");
    g["prompts"]
        .as_array()
        .expect("prompts")
        .iter()
        .map(|p| {
            let ids = p["prompt_ids"].as_array().expect("prompt_ids").iter().map(|v| v.as_u64().expect("id") as u32).collect();
            (p["name"].as_str().unwrap_or("?").to_string(), ids)
        })
        .collect()
}

fn load(be: &mut dyn Backend) -> (Arc<GgufFile>, ModelSpec, Weights) {
    let file = Arc::new(GgufFile::open(model_path("SmolLM2-135M-Instruct.Q4_1.gguf")).expect("open model"));
    let spec = hangar_families::registry().build_spec(&file).expect("spec");
    let w = Weights::load(&spec, &file, be, |_, _| {}).expect("weights");
    (file, spec, w)
}

/// Greedy decoding where every token is picked by `be.argmax` (on the device for the GPU).
fn greedy(be: &mut dyn Backend, spec: &ModelSpec, w: &Weights, prompt: &[u32], n: usize) -> Vec<u32> {
    let hp = &spec.hparams;
    let seq = be.new_sequence(hp.n_layer, hp.kv_dim(), N_CTX).expect("sequence");
    let mut out = Vec::with_capacity(n);
    let mut pos = 0;
    let mut input = prompt.to_vec();
    while out.len() < n {
        let logits = forward_act(spec, w, be, seq, &input, pos, Logits::Last).expect("forward");
        let tok = be.argmax(logits, hp.n_vocab).expect("argmax")[0];
        pos += input.len();
        out.push(tok);
        input = vec![tok];
    }
    be.free_sequence(seq);
    out
}

#[test]
fn smollm2_gpu_matches_cpu_greedy_and_teacher_forced() {
    let t0 = Instant::now();
    let mut gpu_be = GpuBackend::new(common::gpu());
    eprintln!("adapter: {}", gpu_be.gpu().describe());
    let (_f, spec, gw) = load(&mut gpu_be);
    let mut cpu_be = CpuBackend::new();
    let (_f2, _, cw) = load(&mut cpu_be);
    let n_vocab = spec.hparams.n_vocab;

    // The last-position logits of a prompt agree closely, not just their argmax.
    let (_, first) = &golden_prompts()[0];
    let seq_c = cpu_be.new_sequence(spec.hparams.n_layer, spec.hparams.kv_dim(), N_CTX).expect("seq");
    let seq_g = gpu_be.new_sequence(spec.hparams.n_layer, spec.hparams.kv_dim(), N_CTX).expect("seq");
    let lc = forward(&spec, &cw, &mut cpu_be, seq_c, first, 0, Logits::Last).expect("cpu forward");
    let lg = forward(&spec, &gw, &mut gpu_be, seq_g, first, 0, Logits::Last).expect("gpu forward");
    let e = common::nmse(&lg, &lc);
    assert!(e < 1e-6, "last-position logits NMSE {e:e}");
    cpu_be.free_sequence(seq_c);
    gpu_be.free_sequence(seq_g);

    let (mut same, mut agree, mut total) = (0usize, 0usize, 0usize);
    let (mut t_gpu, mut t_cpu) = (0f64, 0f64);
    let prompts = golden_prompts();
    for (name, prompt) in prompts.iter().take(N_PROMPTS) {
        let s = Instant::now();
        let submits = gpu_be.submissions();
        let g = greedy(&mut gpu_be, &spec, &gw, prompt, N_GEN);
        // The prompt is one submission and so is each of the N_GEN - 1 decode steps.
        assert_eq!(gpu_be.submissions() - submits, N_GEN as u64, "{name}: submissions per token");
        t_gpu += s.elapsed().as_secs_f64();
        let s = Instant::now();
        let c = greedy(&mut cpu_be, &spec, &cw, prompt, N_GEN);
        t_cpu += s.elapsed().as_secs_f64();
        if g == c {
            same += 1;
        } else {
            let at = g.iter().zip(&c).position(|(a, b)| a != b).unwrap_or(0);
            eprintln!("{name}: GPU greedy diverges from CPU at step {at}");
        }
        // Teacher forcing over prompt + the CPU's continuation, one batch per backend; the
        // GPU picks its top-1 on the device.
        let all: Vec<u32> = prompt.iter().chain(&c[..N_GEN - 1]).copied().collect();
        let hp = &spec.hparams;
        let seq = cpu_be.new_sequence(hp.n_layer, hp.kv_dim(), N_CTX).expect("seq");
        let want: Vec<u32> = forward(&spec, &cw, &mut cpu_be, seq, &all, 0, Logits::All)
            .expect("cpu tf forward")
            .chunks(n_vocab)
            .map(hangar_engine::cpu::ops::argmax)
            .collect();
        cpu_be.free_sequence(seq);
        let seq = gpu_be.new_sequence(hp.n_layer, hp.kv_dim(), N_CTX).expect("seq");
        let logits = forward_act(&spec, &gw, &mut gpu_be, seq, &all, 0, Logits::All).expect("gpu tf forward");
        let got = gpu_be.argmax(logits, n_vocab).expect("argmax");
        gpu_be.free_sequence(seq);
        total += want.len();
        agree += got.iter().zip(&want).filter(|(a, b)| a == b).count();
    }
    let n = prompts.len().min(N_PROMPTS);
    let greedy_rate = same as f64 / n as f64;
    let top1 = agree as f64 / total as f64;
    eprintln!(
        "SmolLM2 GPU vs CPU: greedy {same}/{n}, teacher-forced top-1 {agree}/{total} = {top1:.4}; GPU decode {:.1} tok/s, CPU {:.1} tok/s, total {:.1}s",
        (n * N_GEN) as f64 / t_gpu,
        (n * N_GEN) as f64 / t_cpu,
        t0.elapsed().as_secs_f64()
    );
    assert!(greedy_rate >= MIN_GREEDY_MATCH, "greedy continuations identical for {same}/{n}");
    assert!(top1 >= MIN_TOP1_AGREEMENT, "teacher-forced top-1 agreement {top1:.4}");
}
