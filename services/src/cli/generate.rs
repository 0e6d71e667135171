use std::io::Write;
use std::path::PathBuf;

use anyhow::bail;
use hangar_engine::chat::ChatMessage;
use hangar_engine::sampling::SamplingParams;
use hangar_engine::GenerateParams;
use serde_json::json;

use super::load::{load_model, BackendKind};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    model: PathBuf,
    /// Raw prompt text (the model's BOS is added as its metadata says).
    #[arg(long, conflicts_with = "chat", required_unless_present = "chat")]
    prompt: Option<String>,
    /// A user message, rendered with the model's chat template.
    #[arg(long)]
    chat: Option<String>,
    /// A system message to put before `--chat`.
    #[arg(long, requires = "chat")]
    system: Option<String>,
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// 0 means greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    #[arg(long)]
    seed: Option<u64>,
    /// Stop strings (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    #[arg(long, default_value_t = 2048)]
    ctx: usize,
    /// Default: the GPU when an adapter exists, else the CPU.
    #[arg(long, value_enum)]
    backend: Option<BackendKind>,
    /// KV-cache policy: f32, f16, q8, int4 (Hadamard-rotated unless the keys have a bias), int4h, int4-plain.
    #[arg(long, default_value = "f32")]
    kv_cache: hangar_engine::kv::KvPolicy,
    /// At the context limit keep generating: keep the first KEEP tokens and drop half of the
    /// rest, re-rotating the cached keys (CPU backend). Without it generation stops there.
    #[arg(long, value_name = "KEEP")]
    context_shift: Option<usize>,
    /// Print one JSON object instead of streaming text.
    #[arg(long)]
    json: bool,
    /// A policy rule set (TOML) to apply to the prompt and the output.
    #[arg(long)]
    policy: Option<PathBuf>,
}

pub fn run(mut a: Args) -> anyhow::Result<()> {
    let policy = super::policy::load(a.policy.as_deref())?;
    super::policy::screen(&policy, [&mut a.prompt, &mut a.chat, &mut a.system])?;
    let mut model = load_model(&a.model, a.backend, a.json)?;
    model.set_kv_policy(a.kv_cache)?;
    let prompt_tokens = match (&a.prompt, &a.chat) {
        (Some(p), None) => model.tokenizer.encode(p, true, false)?,
        (None, Some(c)) => {
            let mut messages = Vec::new();
            if let Some(s) = &a.system {
                messages.push(ChatMessage::new("system", s));
            }
            messages.push(ChatMessage::new("user", c));
            model.encode_chat(&messages)?
        }
        _ => bail!("give exactly one of --prompt and --chat"),
    };
    let params = GenerateParams {
        sampling: SamplingParams {
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
            min_p: a.min_p,
            repetition_penalty: a.repeat_penalty,
            seed: a.seed,
            ..SamplingParams::default()
        },
        max_tokens: a.max_tokens,
        stop: a.stop.clone(),
        context_shift: a.context_shift,
        ..GenerateParams::default()
    };
    let json = a.json;
    let mut stdout = std::io::stdout().lock();
    let out = super::policy::generate(&mut model, a.ctx, &policy, &prompt_tokens, &params, |delta, _| {
        if !json {
            // A closed stdout (a pipe to `head`) ends generation instead of erroring.
            return write!(stdout, "{delta}").and_then(|_| stdout.flush()).is_ok();
        }
        true
    })?;
    if json {
        let t = &out.timings;
        let v = json!({
            "prompt_tokens": prompt_tokens,
            "tokens": out.tokens,
            "text": out.text,
            "stop_reason": out.stop_reason.as_str(),
            "seed": out.seed,
            "timings": {
                "prompt_tokens": t.prompt_tokens,
                "prefill_ms": t.prefill_ms,
                "prefill_tok_s": t.prefill_tok_s(),
                "generated_tokens": t.generated_tokens,
                "decode_ms": t.decode_ms,
                "decode_tok_s": t.decode_tok_s(),
            },
        });
        writeln!(stdout, "{v}")?;
    } else {
        writeln!(stdout)?;
        let t = &out.timings;
        eprintln!(
            "[{} prompt tokens at {:.1} tok/s, {} generated at {:.1} tok/s, stop: {}, seed {}]",
            t.prompt_tokens,
            t.prefill_tok_s(),
            t.generated_tokens,
            t.decode_tok_s(),
            out.stop_reason.as_str(),
            out.seed
        );
    }
    Ok(())
}
