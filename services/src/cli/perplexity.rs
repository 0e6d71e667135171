use std::path::PathBuf;

use anyhow::Context;
use indicatif::ProgressBar;
use serde_json::json;

use super::load::{load_model, BackendKind};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    file: PathBuf,
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Tokens per forward pass within a window.
    #[arg(long, default_value_t = 512)]
    batch: usize,
    /// Default: the GPU when an adapter exists, else the CPU.
    #[arg(long, value_enum)]
    backend: Option<BackendKind>,
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let mut model = load_model(&a.model, a.backend, a.json)?;
    let tokens = model.tokenizer.encode(&text, true, false)?;
    let bar = if a.json { ProgressBar::hidden() } else { ProgressBar::new(0) };
    let out = hangar_engine::perplexity::perplexity(&mut model, &tokens, a.ctx, a.batch, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    if a.json {
        println!("{}", json!({ "ppl": out.ppl, "nll": out.nll, "n_tokens": out.n_tokens }));
    } else {
        println!("perplexity {:.4} over {} scored tokens ({} in the text, ctx {})", out.ppl, out.n_tokens, tokens.len(), a.ctx);
    }
    Ok(())
}
