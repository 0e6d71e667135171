//! Subcommands of the `hangar` binary.

mod bench;
mod bench_streams;
mod generate;
mod inspect;
mod load;
mod perplexity;
mod policy;
mod quantize;
mod serve;
mod tokenize;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "hangar", version, about = "Serve and run GGUF language models")]
pub struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt or a chat message.
    Generate(generate::Args),
    /// Print the token ids of a text.
    Tokenize(tokenize::Args),
    /// Perplexity of a text file, computed as llama.cpp's perplexity tool does.
    Perplexity(perplexity::Args),
    /// Print a GGUF's architecture, hparams, tensor types and tokenizer facts.
    Inspect(inspect::Args),
    /// Re-quantize a GGUF's weight matrices to another type.
    Quantize(quantize::Args),
    /// Prompt-processing and decode speed (like llama-bench's pp/tg).
    Bench(bench::Args),
    /// Serve models over gRPC (hangar.v1.Inference).
    Serve(serve::Args),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Command::Generate(a) => generate::run(a),
        Command::Tokenize(a) => tokenize::run(a),
        Command::Perplexity(a) => perplexity::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Quantize(a) => quantize::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Serve(a) => serve::run(a),
    }
}

impl Cli {
    /// `serve` installs its own subscriber (with OpenTelemetry export).
    pub fn installs_own_tracing(&self) -> bool {
        matches!(self.cmd, Command::Serve(_))
    }
}
