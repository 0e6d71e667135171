//! A fixed team of spinning worker threads for the CPU backend's data-parallel loops.
//!
//! Decode issues a couple of hundred small parallel loops per token (each matvec takes tens
//! of microseconds), so the cost of waking threads dominates a general-purpose pool: with
//! rayon a third of decode time went to `sched_yield` and futex wake-ups. The team keeps its
//! workers spinning for a short while after each loop, and the calling thread works too,
//! which is how llama.cpp's CPU backend keeps its threads hot.
//!
//! Protocol: the caller puts a job (closure, task count, claim and completion counters) on
//! its stack, publishes a pointer to it and bumps `generation`. Whoever is awake claims task
//! indices until they run out; the caller waits for the tasks to complete, not for the
//! workers, so a descheduled worker costs nothing unless it holds a task. A worker
//! announces itself in `active` before it reads the job pointer, and the caller, after
//! clearing the pointer, waits for `active` to drain: so no worker can hold the pointer
//! once the call returns and the job is dropped (both sides use SeqCst for this handshake).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// How long an idle worker spins before parking. Long enough to bridge the gaps between the
/// loops of one decode step (norms, rope, sampling), short enough not to burn a core
/// between requests.
const SPIN: Duration = Duration::from_micros(2000);

struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    n_tasks: usize,
    next: AtomicUsize,
    completed: AtomicUsize,
    panicked: AtomicBool,
}

struct Shared {
    generation: AtomicU64,
    /// Points at the running loop's `Job` on the caller's stack, or is null.
    current: AtomicPtr<()>,
    /// Workers between announcing themselves and letting go of `current`.
    active: AtomicUsize,
    sleeping: Vec<AtomicBool>,
    threads: OnceLock<Vec<Thread>>,
    /// Held for the duration of a loop: one loop at a time, and nested loops run inline.
    busy: AtomicBool,
}

/// The process-wide team, sized to the available cores (or `HANGAR_THREADS`).
pub struct Team {
    shared: Arc<Shared>,
}

impl Team {
    pub fn global() -> &'static Team {
        static TEAM: OnceLock<Team> = OnceLock::new();
        TEAM.get_or_init(|| {
            let n = std::env::var("HANGAR_THREADS")
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|&n| n > 0)
                .unwrap_or_else(|| thread::available_parallelism().map_or(1, |n| n.get()));
            Team::new(n)
        })
    }

    /// A team of `n` threads in all, the caller included.
    pub fn new(n: usize) -> Team {
        let workers = n.max(1) - 1;
        let shared = Arc::new(Shared {
            generation: AtomicU64::new(0),
            current: AtomicPtr::new(std::ptr::null_mut()),
            active: AtomicUsize::new(0),
            sleeping: (0..workers).map(|_| AtomicBool::new(false)).collect(),
            threads: OnceLock::new(),
            busy: AtomicBool::new(false),
        });
        let mut handles = Vec::with_capacity(workers);
        for w in 0..workers {
            let s = Arc::clone(&shared);
            let spawned = thread::Builder::new()
                .name(format!("hangar-cpu-{w}"))
                .spawn(move || worker(&s, w));
            match spawned {
                Ok(h) => handles.push(h.thread().clone()),
                // A team with fewer workers is still correct; the caller does the rest.
                Err(_) => break,
            }
        }
        let _ = shared.threads.set(handles);
        Team { shared }
    }

    /// Threads that work on a loop, the caller included.
    pub fn size(&self) -> usize {
        self.shared.threads.get().map_or(0, Vec::len) + 1
    }

    /// Runs `f(i)` for every `i` in `0..n_tasks`, spread over the team; returns when all are
    /// done. A panicking task is re-raised here once every other task has finished.
    pub fn run(&self, n_tasks: usize, f: impl Fn(usize) + Sync) {
        let s = &*self.shared;
        if n_tasks <= 1 || self.size() == 1 || s.busy.swap(true, Ordering::Acquire) {
            // Small loops, single-thread teams, and loops started from inside another loop
            // (or from a second caller thread) run inline.
            (0..n_tasks).for_each(f);
            return;
        }
        let job = Job {
            f: &f,
            n_tasks,
            next: AtomicUsize::new(0),
            completed: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
        };
        s.current.store(&job as *const Job<'_> as *mut (), Ordering::SeqCst);
        s.generation.fetch_add(1, Ordering::SeqCst);
        if let Some(threads) = s.threads.get() {
            for (t, sleeping) in threads.iter().zip(&s.sleeping) {
                if sleeping.load(Ordering::SeqCst) {
                    t.unpark();
                }
            }
        }
        claim_tasks(&job);
        wait_until(|| job.completed.load(Ordering::Acquire) == n_tasks);
        s.current.store(std::ptr::null_mut(), Ordering::SeqCst);
        wait_until(|| s.active.load(Ordering::SeqCst) == 0);
        s.busy.store(false, Ordering::Release);
        if job.panicked.load(Ordering::Acquire) {
            panic!("a task of a parallel loop panicked");
        }
    }

    /// Runs `f(i, chunk)` over the `chunk`-sized pieces of `data` (the last may be shorter),
    /// each piece exactly once and on one thread.
    pub fn for_each_chunk_mut<T: Send>(&self, data: &mut [T], chunk: usize, f: impl Fn(usize, &mut [T]) + Sync) {
        let chunk = chunk.max(1);
        let len = data.len();
        let base = SendPtr(data.as_mut_ptr());
        self.run(len.div_ceil(chunk), |i| {
            let start = i * chunk;
            let n = chunk.min(len - start);
            // SAFETY: every task index is run once, and the pieces are disjoint and inside
            // `data`, which stays mutably borrowed for the whole loop.
            let piece = unsafe { std::slice::from_raw_parts_mut(base.get().add(start), n) };
            f(i, piece);
        });
    }
}

struct SendPtr<T>(*mut T);
// SAFETY: used only to hand disjoint pieces of one `&mut [T: Send]` to the team.
unsafe impl<T: Send> Sync for SendPtr<T> {}
impl<T> SendPtr<T> {
    fn get(&self) -> *mut T {
        self.0
    }
}

/// Spins, then yields, until `done()`: the waits are microseconds when every thread runs,
/// and yielding keeps an oversubscribed machine from starving the thread being waited on.
fn wait_until(done: impl Fn() -> bool) {
    let start = Instant::now();
    let mut spins = 0u32;
    while !done() {
        spins = spins.wrapping_add(1);
        if spins % 256 == 0 && start.elapsed() > Duration::from_micros(50) {
            thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

fn claim_tasks(job: &Job<'_>) {
    loop {
        let i = job.next.fetch_add(1, Ordering::Relaxed);
        if i >= job.n_tasks {
            return;
        }
        // Every claimed task completes, panic or not, or the caller would wait forever.
        if catch_unwind(AssertUnwindSafe(|| (job.f)(i))).is_err() {
            job.panicked.store(true, Ordering::Release);
        }
        job.completed.fetch_add(1, Ordering::Release);
    }
}

fn worker(s: &Shared, w: usize) {
    let mut seen = 0u64;
    loop {
        let start = Instant::now();
        let mut spins = 0u32;
        while s.generation.load(Ordering::Acquire) == seen {
            spins = spins.wrapping_add(1);
            if spins % 1024 == 0 && start.elapsed() > SPIN {
                s.sleeping[w].store(true, Ordering::SeqCst);
                // Re-check after announcing sleep: a loop published in between has either
                // seen the flag (and unparks us) or is visible here.
                if s.generation.load(Ordering::SeqCst) == seen {
                    thread::park_timeout(Duration::from_millis(100));
                }
                s.sleeping[w].store(false, Ordering::SeqCst);
            } else {
                std::hint::spin_loop();
            }
        }
        seen = s.generation.load(Ordering::Acquire);
        s.active.fetch_add(1, Ordering::SeqCst);
        let p = s.current.load(Ordering::SeqCst) as *const Job<'_>;
        if !p.is_null() {
            // SAFETY: the caller clears `current` and then waits for `active` to reach zero
            // before dropping the job; we announced ourselves in `active` before loading the
            // pointer, so it stays valid until we decrement.
            claim_tasks(unsafe { &*p });
        }
        s.active.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::panic::catch_unwind;

    #[test]
    fn every_task_runs_exactly_once() {
        let team = Team::new(3);
        for n in [0usize, 1, 2, 7, 1000] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            team.run(n, |i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "n = {n}");
        }
    }

    #[test]
    fn a_panicking_task_is_reraised_and_the_team_keeps_working() {
        let team = Team::new(2);
        let r = catch_unwind(AssertUnwindSafe(|| {
            team.run(64, |i| {
                if i == 40 {
                    panic!("task 40");
                }
            })
        }));
        assert!(r.is_err());
        let count = AtomicUsize::new(0);
        team.run(10, |_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 10);
    }

    #[test]
    fn chunks_cover_the_slice_once() {
        let team = Team::new(2);
        let mut v = vec![0u32; 1001];
        team.for_each_chunk_mut(&mut v, 64, |i, c| c.iter_mut().for_each(|x| *x += i as u32 + 1));
        for (j, x) in v.iter().enumerate() {
            assert_eq!(*x as usize, j / 64 + 1);
        }
    }

    #[test]
    fn nested_loops_run_inline_without_deadlock() {
        let team = Team::new(2);
        let total = AtomicUsize::new(0);
        team.run(4, |_| {
            team.run(3, |_| {
                total.fetch_add(1, Ordering::Relaxed);
            });
        });
        assert_eq!(total.load(Ordering::Relaxed), 12);
    }

    #[test]
    fn loops_from_several_threads_each_complete() {
        let team = Arc::new(Team::new(2));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let team = Arc::clone(&team);
                thread::spawn(move || {
                    let sum = AtomicUsize::new(0);
                    for _ in 0..200 {
                        team.run(16, |i| {
                            sum.fetch_add(i, Ordering::Relaxed);
                        });
                    }
                    sum.load(Ordering::Relaxed)
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().ok(), Some(200 * 120));
        }
    }
}
