//! `cargo run --release -p hangar-kernels --example decode_bench -- MODEL.gguf [n_prompt] [n_gen]`
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        eprintln!("usage: decode_bench MODEL.gguf [n_prompt] [n_gen]");
        std::process::exit(2);
    };
    let n_prompt = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(32);
    let n_gen = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(32);
    match hangar_kernels::bench::decode_tok_s(path.as_ref(), &hangar_families::registry(), n_prompt, n_gen) {
        Ok(r) => println!(
            "{}: load {:.2}s, prefill {} tok at {:.1} tok/s, decode {} tok at {:.1} tok/s ({} submissions)",
            r.adapter,
            r.load_s,
            r.n_prompt,
            r.prefill_tok_s(),
            r.n_gen,
            r.decode_tok_s(),
            r.decode_submissions
        ),
        Err(e) => {
            eprintln!("bench failed: {e}");
            std::process::exit(1);
        }
    }
}
