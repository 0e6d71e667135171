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
    /// Score only the first N windows of `ctx` tokens (llama.cpp's --chunks); 0 means all.
    #[arg(long, default_value_t = 0)]
    chunks: usize,
    /// Tokens per forward pass within a window.
    #[arg(long, default_value_t = 512)]
    batch: usize,
    /// Default: the GPU when an adapter exists, else the CPU.
    #[arg(long, value_enum)]
    backend: Option<BackendKind>,
    /// KV-cache policy: f32, f16, q8, int4 (Hadamard-rotated unless the keys have a bias), int4h, int4-plain.
    #[arg(long, default_value = "f32")]
    kv_cache: hangar_engine::kv::KvPolicy,
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let mut model = load_model(&a.model, a.backend, a.json)?;
    model.set_kv_policy(a.kv_cache)?;
    let mut tokens = model.tokenizer.encode(&text, true, false)?;
    if a.chunks > 0 {
        tokens.truncate(a.chunks.saturating_mul(a.ctx));
    }
    let bar = if a.json { ProgressBar::hidden() } else { ProgressBar::new(0) };
    let out = hangar_engine::perplexity::perplexity(&mut model, &tokens, a.ctx, a.batch, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    if a.json {
        println!(
            "{}",
            json!({
                "ppl": out.ppl, "nll": out.nll, "n_tokens": out.n_tokens, "text_tokens": tokens.len(),
                "kv_cache": a.kv_cache.name(), "kv_bytes_per_token": model.kv_bytes_per_token(),
            })
        );
    } else {
        println!(
            "perplexity {:.4} over {} scored tokens ({} in the text, ctx {}, kv {} at {} bytes/token)",
            out.ppl,
            out.n_tokens,
            tokens.len(),
            a.ctx,
            a.kv_cache,
            model.kv_bytes_per_token()
        );
    }
    Ok(())
}
