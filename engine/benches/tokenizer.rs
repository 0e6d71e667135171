//! Tokenizer throughput on the three real models: encode (English prose, and the multilingual
//! golden strings with code, emoji and special-token text), decode, streaming decode, and
//! building the tokenizer from the GGUF. Models come from HANGAR_MODEL_DIR like the tests.
//! `cargo bench -p hangar-engine --bench tokenizer -- --quick`.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hangar_engine::gguf::GgufFile;
use hangar_engine::tokenizer::Tokenizer;

const MODELS: [(&str, &str); 3] = [
    ("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    ("gemma3", "gemma-3-270m-q4_k_m.gguf"),
    ("qwen05", "qwen2.5-coder-0.5b-instruct.Q4_K_M-mix.gguf"),
];

const PROSE: &str =
    "The quick brown fox jumps over the lazy dog. It's a sentence that has been used \
for more than a century to show every letter of the alphabet; typists, font designers and \
programmers still reach for it. Numbers like 3.14159, 2024 and 1,000,000 appear too, as do \
contractions (don't, we've, they'll) and punctuation: commas, semicolons -- and dashes!\n";

fn model_file(file: &str) -> GgufFile {
    let dir = std::env::var_os("HANGAR_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/hangar/models")
        });
    let path = dir.join(file);
    GgufFile::open(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (fetch it with scripts/fetch-models.sh {})",
            path.display(),
            dir.display()
        )
    })
}

fn mixed_text() -> String {
    let json: serde_json::Value =
        serde_json::from_str(include_str!("../../tests/golden/tokenizer/strings.json"))
            .expect("strings.json");
    let strings = json["strings"].as_array().expect("strings");
    strings
        .iter()
        .filter_map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn bench(c: &mut Criterion) {
    let prose = PROSE.repeat(16);
    let mixed = mixed_text();
    for (name, file) in MODELS {
        let f = model_file(file);
        let tok = Tokenizer::from_gguf(&f).expect("tokenizer");

        let mut g = c.benchmark_group(format!("tokenizer/{name}"));
        g.measurement_time(Duration::from_secs(3))
            .warm_up_time(Duration::from_millis(500))
            .sample_size(20);
        for (label, text) in [("prose", &prose), ("mixed", &mixed)] {
            g.throughput(Throughput::Bytes(text.len() as u64));
            g.bench_with_input(BenchmarkId::new("encode", label), text, |b, t| {
                b.iter(|| tok.encode(black_box(t), true, true).expect("encode"))
            });
        }
        let ids = tok.encode(&mixed, true, true).expect("encode");
        g.throughput(Throughput::Elements(ids.len() as u64));
        g.bench_function("decode", |b| b.iter(|| tok.decode(black_box(&ids), true)));
        g.bench_function("stream_decode", |b| {
            b.iter(|| {
                let mut d = tok.stream_decoder();
                let mut n = 0;
                for &id in &ids {
                    n += d.push(black_box(id)).len();
                }
                n + d.flush().len()
            })
        });
        g.throughput(Throughput::Elements(tok.n_vocab() as u64));
        g.sample_size(10);
        g.bench_function("build_from_gguf", |b| {
            b.iter(|| Tokenizer::from_gguf(black_box(&f)).expect("build"))
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
