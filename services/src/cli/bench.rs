//! `hangar bench`: prompt-processing and decode speed, measured like llama-bench (pp N, tg N)
//! on synthetic token ids, so any model (random-weight benchmark models included) works.
//! On the GPU, decode is greedy with argmax on the device (one submission and one token id
//! read back per token); on the CPU, through the engine's session.

use std::path::PathBuf;
use std::time::Instant;

use hangar_engine::graph::Logits;
use serde_json::json;

use super::load::{load_model, resolve_backend, BackendKind};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    model: PathBuf,
    /// Prompt tokens to prefill (llama-bench's -p).
    #[arg(long, alias = "prompt-tokens", default_value_t = 512)]
    prompt_len: usize,
    /// Tokens decoded one at a time (llama-bench's -n).
    #[arg(long, alias = "gen-tokens", default_value_t = 128)]
    gen: usize,
    /// Measured repetitions after one warm-up; the report gives the best and the mean.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Prefill chunk in tokens.
    #[arg(long, default_value_t = 512)]
    batch: usize,
    /// Default: the GPU when an adapter exists, else the CPU.
    #[arg(long, value_enum)]
    backend: Option<BackendKind>,
    /// Also print GPU time per kernel (needs HANGAR_PROFILE=1 in the environment).
    #[arg(long)]
    profile: bool,
    /// Also compare the GPU with the CPU backend on this many pseudo-random prompts: greedy
    /// continuations of 64 tokens and teacher-forced top-1 agreement.
    #[arg(long, default_value_t = 0)]
    check_cpu: usize,
    /// KV-cache policy: f32, f16, q8, int4 (Hadamard-rotated unless the keys have a bias), int4h, int4-plain.
    #[arg(long, default_value = "f32")]
    kv_cache: hangar_engine::kv::KvPolicy,
    /// Concurrent sequences decoding through the batch scheduler (as the server runs them);
    /// reports aggregate decode tok/s. 0: one sequence on a plain session.
    #[arg(long, default_value_t = 0)]
    streams: usize,
    #[arg(long)]
    json: bool,
}

pub(super) struct Figures {
    pub(super) adapter: String,
    pub(super) backend: &'static str,
    pub(super) pp_best: f64,
    pub(super) pp_mean: f64,
    pub(super) tg_best: f64,
    pub(super) tg_mean: f64,
    pub(super) bytes_per_token: u64,
    pub(super) submissions_per_token: Option<f64>,
    pub(super) record_us_per_token: Option<f64>,
    pub(super) parity: Option<hangar_kernels::parity::ParityReport>,
}

fn run_gpu(a: &Args) -> anyhow::Result<Figures> {
    let o = hangar_kernels::bench::BenchOptions {
        n_prompt: a.prompt_len,
        n_gen: a.gen,
        chunk: a.batch,
        reps: a.reps,
        profile: a.profile,
        kv: a.kv_cache,
    };
    let r = hangar_kernels::bench::run(&a.model, &hangar_families::registry(), &o)?;
    let parity = (a.check_cpu > 0)
        .then(|| hangar_kernels::bench::parity_check(&a.model, &hangar_families::registry(), a.check_cpu, 64))
        .transpose()?;
    for (what, lines) in [("prefill", &r.profile_prefill), ("decode", &r.profile_decode)] {
        if lines.is_empty() {
            continue;
        }
        let total: f64 = lines.iter().map(|l| l.total_us).sum();
        eprintln!("GPU time per kernel, {what} ({total:.0} us in all):");
        for l in lines.iter().take(25) {
            eprintln!("  {:>10.1} us {:>5.1}% {:>6} x  {}", l.total_us, 100.0 * l.total_us / total, l.dispatches, l.label);
        }
    }
    Ok(Figures {
        adapter: r.adapter.clone(),
        backend: "gpu",
        pp_best: r.prefill_tok_s(),
        pp_mean: r.prefill_tok_s_mean(),
        tg_best: r.decode_tok_s(),
        tg_mean: r.decode_tok_s_mean(),
        bytes_per_token: r.weight_bytes_per_token,
        submissions_per_token: Some(r.submissions_per_token),
        record_us_per_token: Some(r.record_us_per_token),
        parity,
    })
}

fn run_cpu(a: &Args) -> anyhow::Result<Figures> {
    let mut model = load_model(&a.model, Some(BackendKind::Cpu), a.json)?;
    model.set_kv_policy(a.kv_cache)?;
    let spec = &model.spec;
    let bytes_per_token: u64 = spec
        .tensor_names()
        .iter()
        .filter(|n| **n != spec.token_embd.as_str() || spec.output == spec.token_embd)
        .filter_map(|n| model.file.tensor(n).map(|t| t.data.len() as u64))
        .sum();
    let n_vocab = spec.hparams.n_vocab as u32;
    // Deterministic ids spread over the vocabulary (an LCG), avoiding id 0's special handling.
    let mut state = 0x2545_f491u32;
    let mut next = move || {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        1 + state % (n_vocab - 1).max(1)
    };
    let prompt: Vec<u32> = (0..a.prompt_len).map(|_| next()).collect();
    let n_ctx = (a.prompt_len + a.gen + 1).max(a.gen + 2);
    let (mut pp, mut tg) = (Vec::new(), Vec::new());
    // One warm-up round so page faults don't count.
    for rep in 0..=a.reps {
        let mut s = model.session(n_ctx)?;
        let mut pp_s = None;
        if !prompt.is_empty() {
            let t = Instant::now();
            s.eval(&prompt, a.batch, Logits::Last)?;
            pp_s = Some(prompt.len() as f64 / t.elapsed().as_secs_f64());
        }
        drop(s);
        let mut s = model.session(n_ctx)?;
        let mut tok = next();
        let t = Instant::now();
        for _ in 0..a.gen {
            let logits = s.eval(&[tok], 1, Logits::Last)?;
            tok = hangar_engine::sampling::argmax(&logits);
        }
        if rep > 0 {
            pp.extend(pp_s);
            tg.push(a.gen as f64 / t.elapsed().as_secs_f64());
        }
    }
    Ok(Figures {
        adapter: "cpu".into(),
        backend: "cpu",
        pp_best: best(&pp),
        pp_mean: mean(&pp),
        tg_best: best(&tg),
        tg_mean: mean(&tg),
        bytes_per_token,
        submissions_per_token: None,
        record_us_per_token: None,
        parity: None,
    })
}

/// The best of repeated tok/s figures.
pub(super) fn best(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

pub(super) fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let f = match resolve_backend(a.backend)? {
        _ if a.streams > 0 => super::bench_streams::run(&a.model, a.backend, a.kv_cache, a.streams, (a.prompt_len, a.gen, a.reps), a.json)?,
        BackendKind::Gpu => run_gpu(&a)?,
        BackendKind::Cpu => run_cpu(&a)?,
    };
    let gb_s = f.bytes_per_token as f64 * f.tg_best / 1e9;
    let name = a.model.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let parity = f.parity.as_ref().map(|p| {
        json!({
            "prompts": p.prompts, "greedy_identical": p.identical, "greedy_rate": p.greedy_rate(),
            "top1_agree": p.top1_agree, "top1_total": p.top1_total, "top1_rate": p.top1_rate(),
            "divergences": p.divergences, "submissions_per_step": p.submissions_per_step,
        })
    });
    if a.json {
        println!(
            "{}",
            json!({
                "parity_vs_cpu": parity,
                "model": name, "backend": f.backend, "adapter": f.adapter,
                "prefill_tok_s": f.pp_best, "decode_tok_s": f.tg_best, "decode_gb_s": gb_s,
                "prefill_tok_s_mean": f.pp_mean, "decode_tok_s_mean": f.tg_mean,
                "prompt_len": a.prompt_len, "gen": a.gen, "reps": a.reps,
                "weight_bytes_per_token": f.bytes_per_token,
                "submissions_per_token": f.submissions_per_token,
                "record_us_per_token": f.record_us_per_token,
            })
        );
    } else {
        println!("{name} on {} ({})", f.backend, f.adapter);
        println!("| test | tok/s (best) | tok/s (mean) |");
        println!("|---|---|---|");
        if a.prompt_len > 0 {
            println!("| pp{} | {:.1} | {:.1} |", a.prompt_len, f.pp_best, f.pp_mean);
        }
        println!("| tg{} | {:.1} | {:.1} |", a.gen, f.tg_best, f.tg_mean);
        println!("decode reads {:.3} GB of weights per token: {gb_s:.1} GB/s", f.bytes_per_token as f64 / 1e9);
        if let Some(p) = &f.parity {
            println!(
                "GPU vs CPU: greedy 64-token continuations identical for {}/{}, teacher-forced top-1 {}/{} = {:.4}",
                p.identical,
                p.prompts,
                p.top1_agree,
                p.top1_total,
                p.top1_rate()
            );
        }
    }
    Ok(())
}
