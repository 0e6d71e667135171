//! Per-model execution: the engine's batch scheduler owns the `Model`, and a dispatcher thread
//! takes jobs from the model's queue in arrival order, running up to `max_batch` generations at
//! once, each on its own thread, all decoding together in the scheduler's steps. Cancellation
//! (a `Cancel`, a client that went away, a forced unload, a time limit) is checked after every
//! decode step, and each generation's KV sequence is freed when it ends.
//!
//! The rest of the server sees only [`Worker`]: `submit` a [`GenJob`], read [`GenEvent`]s from
//! its channel.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hangar_engine::batch::{BatchCounts, BatchStats, Scheduler, SchedulerThread};
use hangar_engine::budget::{MemoryBudget, Reservation};
use hangar_engine::generate::{GenerateParams, StopReason};
use hangar_engine::logprobs::TokenLogprobs;
use hangar_engine::Model;
use hangar_plugins::{LogitsProcessor, ProcessorHooks};
use tokio::sync::mpsc::UnboundedSender;
use tracing::{info_span, Span};

use hangar_policy::Hit;

use super::error::ServiceError;
use super::policies::{self, JobPolicy};

/// Shared cancel flag of one request.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// One generation to run.
pub struct GenJob {
    pub prompt: Vec<u32>,
    pub params: GenerateParams,
    /// Append the matched stop string to the text.
    pub include_stop_string: bool,
    /// Wall-clock budget from `received`.
    pub time_limit: Option<Duration>,
    /// Plugin logits processors the request selected, applied in order before sampling.
    pub logits_processors: Vec<Arc<dyn LogitsProcessor>>,
    pub received: Instant,
    pub cancel: CancelToken,
    pub events: UnboundedSender<GenEvent>,
    /// The RPC's span; prefill and decode spans become its children.
    pub span: Span,
    /// Policy sets and output constraint, run as the generation's hooks.
    pub policy: JobPolicy,
}

/// Why a generation ended, as the service reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    Eos,
    Length,
    StopSequence,
    Cancelled,
    TimeLimit,
    /// A policy rule ended the request (its id is in the trace).
    Policy,
}

/// The end of a generation.
#[derive(Clone, Debug)]
pub struct Finished {
    pub finish: Finish,
    pub seed: u64,
    pub text: String,
    pub tokens: Vec<u32>,
    pub logprobs: Vec<TokenLogprobs>,
    pub prompt_tokens: usize,
    pub queue_ms: f64,
    pub prefill_ms: f64,
    pub decode_ms: f64,
    /// The rule that ended generation with `Finish::Policy`.
    pub policy_rule: Option<String>,
    /// Policy rule hits on the prompt, then the output.
    pub policy_hits: Vec<Hit>,
    /// The kind of output constraint the request had, if any.
    pub constraint: Option<&'static str>,
}

/// What a job reports, in order: deltas, then exactly one `Done` or `Failed`.
#[derive(Clone, Debug)]
pub enum GenEvent {
    /// Text that became final (never a split UTF-8 character) and the tokens behind it.
    Delta { text: String, tokens: Vec<u32>, logprobs: Vec<TokenLogprobs> },
    Done(Box<Finished>),
    Failed(ServiceError),
}

/// Counters the worker and its handle share.
#[derive(Default)]
struct Shared {
    /// Jobs submitted and not finished (queued plus running).
    in_flight: AtomicUsize,
    /// Every job, queued or running, is cancelled while this is set (forced unload).
    abort_all: AtomicBool,
}

/// Handle to a model's worker. Dropping the last handle lets the worker finish its queue and
/// exit, which frees the model.
pub struct Worker {
    tx: Option<SyncSender<GenJob>>,
    max_queue: usize,
    shared: Arc<Shared>,
    /// Only the counters: a scheduler handle here would keep the model alive past shutdown.
    stats: Arc<BatchStats>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts the scheduler that owns `model` and the dispatcher that feeds it, with room for
    /// `max_queue` waiting jobs beside the `max_batch` running ones.
    /// KV caches are charged to `budget`; `weights` (the model's charge) is given back once
    /// the model is freed.
    pub fn spawn(
        name: &str,
        model: Model,
        n_ctx: usize,
        (max_queue, max_batch): (usize, usize),
        (budget, weights): (Arc<MemoryBudget>, Reservation),
    ) -> std::io::Result<Worker> {
        let (sched, sched_thread) = Scheduler::spawn(name, model, Some(budget))?;
        let (tx, rx) = sync_channel(max_queue);
        let shared = Arc::new(Shared::default());
        let (s, stats) = (shared.clone(), sched.stats());
        let thread = std::thread::Builder::new()
            .name(format!("model-{name}"))
            .spawn(move || {
                dispatch(sched, sched_thread, n_ctx, max_batch.max(1), rx, s);
                drop(weights);
            })?;
        Ok(Worker { tx: Some(tx), max_queue, shared, stats, thread: Some(thread) })
    }

    /// Queues `job`, or refuses it when the queue is full.
    pub fn submit(&self, job: GenJob) -> Result<(), ServiceError> {
        let tx = self.tx.as_ref().ok_or_else(|| ServiceError::Internal("worker stopped".into()))?;
        self.shared.in_flight.fetch_add(1, Ordering::SeqCst);
        match tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                Err(match e {
                    TrySendError::Full(_) => ServiceError::Exhausted { what: "per-model queue (limits.max_queue_per_model)", limit: self.max_queue },
                    TrySendError::Disconnected(_) => ServiceError::Internal("worker stopped".into()),
                })
            }
        }
    }

    /// Jobs queued or running.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// The scheduler's step counters.
    pub fn batch_counts(&self) -> BatchCounts {
        self.stats.counts()
    }

    /// Cancels every queued and running job (each still gets its `Done(Cancelled)`).
    pub fn abort_all(&self) {
        self.shared.abort_all.store(true, Ordering::SeqCst);
    }

    /// Stops taking jobs and waits for the queue to finish and the model to be freed.
    /// Blocks: call from a blocking context.
    pub fn shutdown(mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("a model worker thread panicked");
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Without an explicit shutdown the threads still exit once the queue drains.
        self.tx.take();
    }
}

/// Running generations, bounded by `max_batch`.
struct Slots {
    running: Mutex<usize>,
    freed: Condvar,
}

impl Slots {
    fn acquire(&self, max: usize) {
        let mut n = self.running.lock().unwrap_or_else(|p| p.into_inner());
        while *n >= max {
            n = self.freed.wait(n).unwrap_or_else(|p| p.into_inner());
        }
        *n += 1;
    }

    fn release(&self) {
        *self.running.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        self.freed.notify_all();
    }
}

/// Takes jobs in arrival order as slots free up; once the queue closes, waits for the running
/// ones, then for the scheduler to free the model.
fn dispatch(sched: Scheduler, sched_thread: SchedulerThread, n_ctx: usize, max_batch: usize, rx: Receiver<GenJob>, shared: Arc<Shared>) {
    let slots = Arc::new(Slots { running: Mutex::new(0), freed: Condvar::new() });
    let mut running: Vec<JoinHandle<()>> = Vec::new();
    loop {
        slots.acquire(max_batch);
        let Ok(job) = rx.recv() else { break };
        running.retain(|t| !t.is_finished());
        let (sched, shared2, slots2) = (sched.clone(), shared.clone(), slots.clone());
        let events = job.events.clone();
        let spawned = std::thread::Builder::new().name("generation".into()).spawn(move || {
            let events = job.events.clone();
            // A panic is this request's failure, not the worker's: its slot and count are still
            // given back.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&sched, n_ctx, job, &shared2)))
                .unwrap_or_else(|_| Err(ServiceError::Internal("the generation panicked".into())));
            // Counted out before the caller can see the end: a client holding its answer must
            // not find its request still in flight (ListModels, a forced unload's count).
            shared2.in_flight.fetch_sub(1, Ordering::SeqCst);
            let _ = events.send(match outcome {
                Ok(done) => GenEvent::Done(Box::new(done)),
                Err(e) => GenEvent::Failed(e),
            });
            slots2.release();
        });
        match spawned {
            Ok(t) => running.push(t),
            Err(e) => {
                shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                let _ = events.send(GenEvent::Failed(ServiceError::Internal(format!("starting a generation thread: {e}"))));
                slots.release();
            }
        }
    }
    for t in running {
        if t.join().is_err() {
            tracing::error!("a generation thread panicked");
        }
    }
    drop(sched);
    sched_thread.join();
}

fn run(sched: &Scheduler, n_ctx: usize, job: GenJob, shared: &Shared) -> Result<Finished, ServiceError> {
    let queue_ms = job.received.elapsed().as_secs_f64() * 1e3;
    let deadline = job.time_limit.map(|d| job.received + d);
    let stopped = |job: &GenJob| job.cancel.is_cancelled() || shared.abort_all.load(Ordering::Relaxed) || job.events.is_closed();
    let mut finished = Finished {
        finish: Finish::Cancelled,
        seed: job.params.sampling.seed.unwrap_or(0),
        text: String::new(),
        tokens: Vec::new(),
        logprobs: Vec::new(),
        prompt_tokens: job.prompt.len(),
        queue_ms,
        prefill_ms: 0.0,
        decode_ms: 0.0,
        policy_rule: None,
        policy_hits: job.policy.prompt_hits.clone(),
        constraint: job.policy.constraint.as_ref().map(|(_, kind)| *kind),
    };
    if stopped(&job) {
        return Ok(finished);
    }
    if deadline.is_some_and(|d| Instant::now() >= d) {
        finished.finish = Finish::TimeLimit;
        return Ok(finished);
    }

    let prefill = info_span!(parent: &job.span, "prefill", prompt_tokens = job.prompt.len());
    let mut prefill_guard = Some(prefill.entered());
    let decode = info_span!(parent: &job.span, "decode", generated_tokens = tracing::field::Empty, tokens_per_s = tracing::field::Empty);
    let mut decode_guard = None;
    let mut timed_out = false;
    let positions = job.prompt.len() + job.params.max_tokens;
    let mut session = sched.session_for(n_ctx, positions, || stopped(&job) || deadline.is_some_and(|d| Instant::now() >= d))?;
    let mut processors = ProcessorHooks::new(&job.logits_processors, &job.prompt);
    let (out, report) = job.policy.run(processors.hooks().logits, |hooks| session.generate_steps_hooked(&job.prompt, &job.params, hooks, |step| {
        if let Some(g) = prefill_guard.take() {
            drop(g);
            decode_guard = Some(decode.clone().entered());
        }
        if !step.text.is_empty() || step.token.is_some() {
            let _ = job.events.send(GenEvent::Delta {
                text: step.text.to_string(),
                tokens: step.token.into_iter().collect(),
                logprobs: step.logprobs.cloned().into_iter().collect(),
            });
        }
        if stopped(&job) {
            return false;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            timed_out = true;
            return false;
        }
        true
    }))?;
    drop(prefill_guard);
    drop(session); // frees this request's KV sequence now, not when the next job starts
    let mut out = out?;
    decode.record("generated_tokens", out.timings.generated_tokens);
    decode.record("tokens_per_s", out.timings.decode_tok_s());
    drop(decode_guard);

    finished.finish = match out.stop_reason {
        StopReason::Eos => Finish::Eos,
        StopReason::Length => Finish::Length,
        StopReason::Stop => Finish::StopSequence,
        StopReason::Cancelled if timed_out => Finish::TimeLimit,
        StopReason::Cancelled => Finish::Cancelled,
        StopReason::Policy { rule } => {
            finished.policy_rule = Some(rule);
            Finish::Policy
        }
    };
    finished.policy_hits.extend(report.hits);
    policies::trace(&job.span, &finished.policy_hits, finished.policy_rule.as_deref());
    if job.include_stop_string {
        if let Some(stop) = out.matched_stop.take() {
            let _ = job.events.send(GenEvent::Delta { text: stop.clone(), tokens: Vec::new(), logprobs: Vec::new() });
            out.text.push_str(&stop);
        }
    }
    finished.seed = out.seed;
    finished.text = out.text;
    finished.tokens = out.tokens;
    finished.logprobs = out.logprobs;
    finished.prefill_ms = out.timings.prefill_ms;
    finished.decode_ms = out.timings.decode_ms;
    Ok(finished)
}
