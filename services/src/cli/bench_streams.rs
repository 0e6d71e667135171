//! `hangar bench --streams N`: aggregate decode speed of N sequences generating at once
//! through the engine's batch scheduler, as the server runs concurrent requests.

use std::path::Path;
use std::sync::Barrier;
use std::time::Instant;

use hangar_engine::batch::Scheduler;
use hangar_engine::graph::Logits;

use super::bench::{best, mean, Figures};
use super::load::{load_model, BackendKind};

/// Prefills `prompt_len` tokens on each of `streams` sequences, then decodes `gen` greedy
/// tokens on all of them together, `reps` times after one warm-up. Decode speed is every
/// stream's tokens over the wall time from the common start to the last stream's end.
pub fn run(
    path: &Path,
    backend: Option<BackendKind>,
    kv: hangar_engine::kv::KvPolicy,
    streams: usize,
    (prompt_len, gen, reps): (usize, usize, usize),
    quiet: bool,
) -> anyhow::Result<Figures> {
    let mut model = load_model(path, backend, quiet)?;
    model.set_kv_policy(kv)?;
    let backend_name = model.backend_name();
    let n_vocab = model.spec.hparams.n_vocab as u32;
    let (sched, thread) = Scheduler::spawn("bench", model, None)?;
    let n_ctx = prompt_len + gen + 2;
    let (mut pp, mut tg) = (Vec::new(), Vec::new());
    for rep in 0..=reps {
        let barrier = Barrier::new(streams);
        let t0 = Instant::now();
        let results: Vec<anyhow::Result<(f64, Instant, Instant)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..streams)
                .map(|i| {
                    let (sched, barrier) = (sched.clone(), &barrier);
                    scope.spawn(move || -> anyhow::Result<(f64, Instant, Instant)> {
                        // Distinct deterministic ids per stream, avoiding id 0.
                        let prompt: Vec<u32> = (0..prompt_len.max(1)).map(|j| 1 + ((i * 7919 + j * 104_729) as u32) % (n_vocab - 1).max(1)).collect();
                        let mut s = sched.session(n_ctx)?;
                        let mut logits = s.eval(&prompt, 512, Logits::Last)?;
                        let prefilled = t0.elapsed().as_secs_f64();
                        barrier.wait();
                        let start = Instant::now();
                        for _ in 0..gen {
                            let tok = hangar_engine::sampling::argmax(&logits);
                            logits = s.eval(&[tok], 1, Logits::Last)?;
                        }
                        Ok((prefilled, start, Instant::now()))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a stream panicked")))).collect()
        });
        let results = results.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
        if rep == 0 {
            continue;
        }
        let prefill_s = results.iter().map(|r| r.0).fold(0.0, f64::max);
        let start = results.iter().map(|r| r.1).min().unwrap_or(t0);
        let end = results.iter().map(|r| r.2).max().unwrap_or(t0);
        pp.push((streams * prompt_len.max(1)) as f64 / prefill_s.max(1e-9));
        tg.push((streams * gen) as f64 / end.duration_since(start).as_secs_f64().max(1e-9));
    }
    let counts = sched.counts();
    drop(sched);
    thread.join();
    if !quiet {
        eprintln!("{streams} streams: {} decode steps, mean batch {:.1}", counts.decode_steps, counts.decode_rows as f64 / counts.decode_steps.max(1) as f64);
    }
    Ok(Figures {
        adapter: format!("{streams} streams"),
        backend: backend_name,
        pp_best: best(&pp),
        pp_mean: mean(&pp),
        tg_best: best(&tg),
        tg_mean: mean(&tg),
        bytes_per_token: 0,
        submissions_per_token: None,
        record_us_per_token: None,
        parity: None,
    })
}
