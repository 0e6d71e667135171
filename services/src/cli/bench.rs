//! `hangar bench`: prompt-processing and decode speed, measured like llama-bench (pp N, tg N)
//! on synthetic token ids, so any model (random-weight benchmark models included) works.

use std::path::PathBuf;
use std::time::Instant;

use hangar_engine::graph::Logits;
use serde_json::json;

use super::load::{load_model, BackendKind};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    model: PathBuf,
    /// Prompt tokens processed in one prefill (llama-bench's -p).
    #[arg(long, default_value_t = 512)]
    prompt_tokens: usize,
    /// Tokens decoded one at a time (llama-bench's -n).
    #[arg(long, default_value_t = 128)]
    gen_tokens: usize,
    /// Repetitions; the report gives the mean and the best.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    #[arg(long, default_value_t = 512)]
    batch: usize,
    #[arg(long, value_enum, default_value = "cpu")]
    backend: BackendKind,
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let mut model = load_model(&a.model, a.backend, a.json)?;
    let n_vocab = model.spec.hparams.n_vocab as u32;
    // Deterministic ids spread over the vocabulary (an LCG), avoiding id 0's special handling.
    let mut state = 0x2545_f491u32;
    let mut next = move || {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        1 + state % (n_vocab - 1).max(1)
    };
    let prompt: Vec<u32> = (0..a.prompt_tokens).map(|_| next()).collect();
    let n_ctx = (a.prompt_tokens + a.gen_tokens + 1).max(a.gen_tokens + 2);
    let (mut pp, mut tg) = (Vec::new(), Vec::new());
    // One warm-up round so pipeline compilation and page faults don't count.
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
        for _ in 0..a.gen_tokens {
            let logits = s.eval(&[tok], 1, Logits::Last)?;
            tok = hangar_engine::sampling::argmax(&logits);
        }
        let tg_s = a.gen_tokens as f64 / t.elapsed().as_secs_f64();
        if rep > 0 {
            pp.extend(pp_s);
            tg.push(tg_s);
        }
    }
    let stats = |v: &[f64]| -> (f64, f64) {
        if v.is_empty() {
            return (0.0, 0.0);
        }
        (v.iter().sum::<f64>() / v.len() as f64, v.iter().copied().fold(0.0, f64::max))
    };
    let ((pp_mean, pp_best), (tg_mean, tg_best)) = (stats(&pp), stats(&tg));
    let name = a.model.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if a.json {
        println!(
            "{}",
            json!({
                "model": name, "backend": model.backend_name(),
                "pp": {"tokens": a.prompt_tokens, "tok_s_mean": pp_mean, "tok_s_best": pp_best},
                "tg": {"tokens": a.gen_tokens, "tok_s_mean": tg_mean, "tok_s_best": tg_best},
                "reps": a.reps,
            })
        );
    } else {
        println!("| model | backend | test | tok/s (mean) | tok/s (best) |");
        println!("|---|---|---|---|---|");
        if a.prompt_tokens > 0 {
            println!("| {name} | {} | pp{} | {pp_mean:.1} | {pp_best:.1} |", model.backend_name(), a.prompt_tokens);
        }
        println!("| {name} | {} | tg{} | {tg_mean:.1} | {tg_best:.1} |", model.backend_name(), a.gen_tokens);
    }
    Ok(())
}
