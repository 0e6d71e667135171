use std::path::PathBuf;

use anyhow::Context;
use hangar_engine::gguf::GgufFile;
use hangar_engine::tokenizer::Tokenizer;
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    json: bool,
    /// Do not add BOS/EOS even when the model's metadata asks for them.
    #[arg(long)]
    no_special: bool,
    /// Treat special-token text (e.g. `<|im_start|>`) as plain text.
    #[arg(long)]
    no_parse_special: bool,
    text: String,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    // Only the vocabulary is needed, so no weights are loaded.
    let file = GgufFile::open(&a.model).with_context(|| format!("opening {}", a.model.display()))?;
    let tok = Tokenizer::from_gguf(&file)?;
    let ids = tok.encode(&a.text, !a.no_special, !a.no_parse_special)?;
    if a.json {
        println!("{}", json!({ "tokens": ids }));
    } else {
        for id in ids {
            let piece = tok.token_bytes(id).map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
            println!("{id:>8} {piece:?}");
        }
    }
    Ok(())
}
