//! Per-token cost of the output filter with 1 rule and with 1,000 rules (half literals, half
//! regexes): the fused DFA makes them the same cost per byte.
//!
//! One rule in ten is case-insensitive: each adds case variants the DFA must tell apart from
//! the case-sensitive rules' prefixes, which is what makes big sets slow to build (not to run).
//!
//! The text is fed in 4-byte pieces, the size of an average token, through the same path the
//! generation loop uses (`StreamFilter::push_bytes` then `finish_bytes`).

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hangar_policy::RuleSet;

const WORDS: &[&str] = &[
    "the", "model", "answers", "questions", "about", "weather", "and", "travel", "with", "short", "clear", "sentences", "while", "keeping",
    "numbers", "like", "42", "or", "2024", "in", "context", "for", "every", "user", "request", "that", "arrives", "today",
];

/// A deterministic pseudo-random lowercase word (rules that mostly do not occur in the text,
/// but share its letters, so the DFA leaves its idle state often).
fn word(seed: &mut u64, len: usize) -> String {
    (0..len)
        .map(|_| {
            *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (b'a' + ((*seed >> 33) % 26) as u8) as char
        })
        .collect()
}

fn rules(n: usize) -> String {
    let mut seed = 7u64;
    let mut toml = String::new();
    for i in 0..n {
        let (pattern, kind) = if i % 2 == 0 {
            (word(&mut seed, 5 + i % 6), "literal")
        } else if i % 4 == 1 {
            (format!("{}[0-9]{{2,4}}", word(&mut seed, 4)), "regex")
        } else {
            (format!("{} +{}", word(&mut seed, 3), word(&mut seed, 4)), "regex")
        };
        let action = ["deny", "redact", "flag", "stop"][i % 4];
        toml.push_str(&format!("[[rule]]\nid = \"r{i}\"\npattern = \"{pattern}\"\nkind = \"{kind}\"\naction = \"{action}\"\ncase_insensitive = {}\n", i % 10 == 0));
    }
    toml
}

fn text(bytes: usize) -> Vec<u8> {
    let mut seed = 3u64;
    let mut t = String::new();
    while t.len() < bytes {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        t.push_str(WORDS[(seed >> 33) as usize % WORDS.len()]);
        t.push(if (seed >> 20) % 11 == 0 { '\n' } else { ' ' });
    }
    t.into_bytes()
}

fn bench_filter(c: &mut Criterion) {
    let text = text(16 << 10);
    let pieces: Vec<&[u8]> = text.chunks(4).collect();
    let mut g = c.benchmark_group("policy_filter");
    g.throughput(Throughput::Bytes(text.len() as u64));
    for n in [1usize, 1000] {
        let t0 = Instant::now();
        let set = RuleSet::from_toml("bench", &rules(n)).expect("bench set compiles");
        eprintln!("{n} rules: compiled in {:.0} ms, DFA {} KiB", t0.elapsed().as_secs_f64() * 1e3, set.memory_usage() >> 10);
        g.bench_function(format!("{n}_rules_{}_tokens", pieces.len()), |b| {
            b.iter(|| {
                let mut f = set.output_filter();
                let mut out = String::with_capacity(text.len());
                for p in &pieces {
                    if !f.push_bytes(black_box(p), &mut out).expect("filter").is_continue() {
                        break;
                    }
                }
                f.finish_bytes(&mut out).expect("filter");
                black_box(out.len())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_filter);
criterion_main!(benches);
