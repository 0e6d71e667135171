//! Load a GGUF and generate, in a few lines: `cargo run --release --example quickstart -- MODEL.gguf`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = std::env::args().nth(1).ok_or_else(|| anyhow::anyhow!("usage: quickstart MODEL.gguf"))?;
    let model = hangar::Hangar::load(path).await?;
    let params = hangar::GenerateParams { max_tokens: 48, ..Default::default() };
    let messages = vec![hangar_engine::chat::ChatMessage::new("user", "What is the capital of France?")];
    let out = model.chat(messages, params).await?;
    println!("{}", out.text);
    Ok(())
}
