use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use hangar_engine::gguf::GgufFile;
use hangar_engine::quant::GgmlType;

#[derive(clap::Args)]
pub struct Args {
    path: PathBuf,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let file = GgufFile::open(&a.path).with_context(|| format!("opening {}", a.path.display()))?;
    println!("file:          {} (GGUF v{})", a.path.display(), file.version());
    println!("architecture:  {}", file.architecture().unwrap_or("<none>"));
    match hangar_families::registry().build_spec(&file) {
        Ok(spec) => println!("hparams:       {:#?}", spec.hparams),
        Err(e) => println!("hparams:       not servable: {e}"),
    }
    let mut types: BTreeMap<GgmlType, (usize, u64)> = BTreeMap::new();
    let mut params = 0u64;
    for t in file.tensors() {
        let e = types.entry(t.ty).or_default();
        e.0 += 1;
        e.1 += t.size;
        params += t.n_elements();
    }
    println!("parameters:    {params} ({:.1} M)", params as f64 / 1e6);
    println!("tensor types:");
    for (ty, (n, bytes)) in types {
        println!("  {ty:>6}: {n:>4} tensors, {:.1} MiB", bytes as f64 / (1 << 20) as f64);
    }
    match hangar_engine::tokenizer::Tokenizer::from_gguf(&file) {
        Ok(t) => println!(
            "tokenizer:     {} (pre {:?}), {} tokens, bos {:?}, eos {:?}, add_bos {}, add_eos {}",
            t.model_kind(),
            t.pre(),
            t.n_vocab(),
            t.bos(),
            t.eos(),
            t.add_bos(),
            t.add_eos()
        ),
        Err(e) => println!("tokenizer:     unusable: {e}"),
    }
    println!("chat template: {}", if file.get_str("tokenizer.chat_template").is_some() { "yes" } else { "no" });
    println!("metadata:");
    for (k, v) in file.metadata() {
        println!("  {k}: {}", v.summary());
    }
    Ok(())
}
