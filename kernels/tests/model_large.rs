//! A synthetic llama model whose weights exceed one storage binding (128 MiB on lavapipe): the
//! F32 LM head alone is 143 MB, so it is split by rows over two arenas. GPU logits must match
//! the CPU backend's.

mod common;

use std::sync::Arc;

use common::*;
use hangar_engine::backend::Backend;
use hangar_engine::cpu::CpuBackend;
use hangar_engine::gguf::GgufFile;
use hangar_engine::graph::{forward, Logits, Weights};
use hangar_engine::quant::GgmlType;
use hangar_kernels::{BackendOptions, GpuBackend};

const N_EMBD: usize = 256;
const N_FF: usize = 512;
const N_VOCAB: usize = 140_000;

fn scaled(rng: &mut Rng, name: &str, ty: GgmlType, rows: usize, cols: usize, scale: f32) -> T {
    let v = rng.vec(rows * cols, scale);
    let data = hangar_engine::quant::quantize(ty, &v).expect("quantize");
    T { name: name.into(), ty, dims: vec![cols as u64, rows as u64], data }
}

fn synthetic_llama() -> Arc<GgufFile> {
    let mut rng = Rng::new(42);
    let mut t = vec![
        scaled(&mut rng, "token_embd.weight", GgmlType::Q4_0, N_VOCAB, N_EMBD, 1.0),
        scaled(&mut rng, "output.weight", GgmlType::F32, N_VOCAB, N_EMBD, 0.1),
        vector("output_norm.weight", &[1.0; N_EMBD]),
    ];
    for i in 0..2 {
        let n = |s: &str| format!("blk.{i}.{s}.weight");
        t.push(vector(&n("attn_norm"), &[1.0; N_EMBD]));
        t.push(vector(&n("ffn_norm"), &[1.0; N_EMBD]));
        for (s, rows, cols) in [("attn_q", N_EMBD, N_EMBD), ("attn_k", 128, N_EMBD), ("attn_v", 128, N_EMBD), ("attn_output", N_EMBD, N_EMBD)] {
            t.push(scaled(&mut rng, &n(s), GgmlType::Q8_0, rows, cols, 0.1));
        }
        t.push(scaled(&mut rng, &n("ffn_gate"), GgmlType::Q4_1, N_FF, N_EMBD, 0.1));
        t.push(scaled(&mut rng, &n("ffn_up"), GgmlType::Q4K, N_FF, N_EMBD, 0.1));
        t.push(scaled(&mut rng, &n("ffn_down"), GgmlType::Q6K, N_EMBD, N_FF, 0.1));
    }
    file_with(t, tiny_llama_meta(N_EMBD, N_FF))
}

#[test]
fn model_larger_than_one_storage_binding_matches_cpu_logits() {
    let dev = gpu();
    let file = synthetic_llama();
    let spec = hangar_families::registry().build_spec(&file).expect("spec");
    let tokens = [1u32, 70_000, 139_999, 5];

    let mut cpu = CpuBackend::new();
    let cw = Weights::load(&spec, &file, &mut cpu, |_, _| {}).expect("cpu weights");
    let seq = cpu.new_sequence(2, 128, 64, hangar_engine::backend::KvFormat { policy: Default::default(), head_dim: spec.hparams.head_dim }).expect("seq");
    let want = forward(&spec, &cw, &mut cpu, seq, &tokens, 0, Logits::All).expect("cpu forward");
    let want_next = forward(&spec, &cw, &mut cpu, seq, &[9], tokens.len(), Logits::Last).expect("cpu decode");

    // Reuse of activation memory at layer boundaries is forced on (it normally starts at 8 MiB).
    let mut be = GpuBackend::with_options(dev.clone(), BackendOptions { reuse_bytes: Some(0), ..Default::default() });
    let gw = Weights::load(&spec, &file, &mut be, |_, _| {}).expect("gpu weights");
    let seq = be.new_sequence(2, 128, 64, hangar_engine::backend::KvFormat { policy: Default::default(), head_dim: spec.hparams.head_dim }).expect("seq");
    let got = forward(&spec, &gw, &mut be, seq, &tokens, 0, Logits::All).expect("gpu forward");
    let got_next = forward(&spec, &gw, &mut be, seq, &[9], tokens.len(), Logits::Last).expect("gpu decode");

    let arenas = be.arena_sizes();
    let total: u64 = arenas.iter().sum();
    assert!(total > 128 << 20, "the model should exceed 128 MiB, has {total} bytes");
    assert!(arenas.iter().all(|&a| a <= dev.max_binding), "{arenas:?} vs binding {}", dev.max_binding);
    if dev.max_binding < 143_360_000 {
        assert!(arenas.len() >= 2, "expected several arenas: {arenas:?}");
    }
    // Whole-model tolerance: ten layers of f32 reordering, still far below any real bug (~1e-2).
    for (name, g, w) in [("prefill", &got, &want), ("decode", &got_next, &want_next)] {
        let e = nmse(g, w);
        assert!(e < 1e-6, "{name}: NMSE {e:e}");
    }
}
