//! Continuous batching: one scheduler thread (an actor) owns a model, and any number of
//! [`BatchSession`]s on other threads generate through it. Each step runs at most one prefill
//! chunk, then one batched decode of every sequence waiting for its next token, so sequences
//! join and leave at step boundaries and a long prompt never stalls the others' streams.
//!
//! Tokens do not depend on batching: a decode row is computed exactly as it would be alone
//! ([`forward_decode_batch`](crate::graph::forward_decode_batch)), a prompt is always
//! prefilled on its own, and each session samples with its own seeded RNG.
//!
//! Prefix reuse: a prompt chunk whose tokens, position and extent match a chunk another
//! sequence (running, or recently finished and retained) already computed is copied from that
//! sequence's KV cache instead of recomputed. Only whole identical chunks are copied, so the
//! cache holds exactly the values a fresh prefill would have written.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::backend::{Act, Backend, BackendError, DeviceSampling, LogitEdit, SeqId};
use crate::budget::{MemoryBudget, Reservation};
use crate::constraint::Hooks;
use crate::error::EngineError;
use crate::generate::{self, Exec, GenerateOutput, GenerateParams, Step};
use crate::graph::{forward, forward_act, forward_decode_batch_act, Logits};
use crate::model::Model;
use crate::tokenizer::Tokenizer;

/// How long a step waits for sequences still sampling their previous token before it runs
/// without them. Sampling takes microseconds, so this only bites when a client stalls.
const GATHER: Duration = Duration::from_millis(2);
/// Prompt tokens one step may prefill before it decodes: bounds how long a burst of new
/// prompts delays the tokens of sequences already decoding.
const PREFILL_TOKENS_PER_STEP: usize = 512;

/// Counters of one scheduler, for metrics and for tests that must see batching happen.
#[derive(Debug, Default)]
pub struct BatchStats {
    /// Steps that ran a batched decode.
    pub decode_steps: AtomicU64,
    /// Decode rows over all steps (`decode_rows / decode_steps` is the mean batch).
    pub decode_rows: AtomicU64,
    /// The largest batch one step decoded.
    pub max_batch: AtomicU64,
    /// Prompt tokens run through prefill.
    pub prefill_tokens: AtomicU64,
    /// Prompt tokens copied from another sequence's KV cache instead (prefix reuse).
    pub reused_tokens: AtomicU64,
    /// KV caches held now (running sequences and those kept for reuse), and their bytes.
    pub kv_caches: AtomicU64,
    pub kv_bytes: AtomicU64,
}

impl BatchStats {
    pub fn counts(&self) -> BatchCounts {
        let s = self;
        BatchCounts {
            decode_steps: s.decode_steps.load(Ordering::Relaxed),
            decode_rows: s.decode_rows.load(Ordering::Relaxed),
            max_batch: s.max_batch.load(Ordering::Relaxed),
            prefill_tokens: s.prefill_tokens.load(Ordering::Relaxed),
            reused_tokens: s.reused_tokens.load(Ordering::Relaxed),
            kv_caches: s.kv_caches.load(Ordering::Relaxed),
            kv_bytes: s.kv_bytes.load(Ordering::Relaxed),
        }
    }
}

/// A snapshot of [`BatchStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchCounts {
    pub decode_steps: u64,
    pub decode_rows: u64,
    pub max_batch: u64,
    pub prefill_tokens: u64,
    pub reused_tokens: u64,
    pub kv_caches: u64,
    pub kv_bytes: u64,
}

/// What an evaluation answers: logits, or a token picked on the backend.
enum Out {
    Logits(Vec<f32>),
    Token(u32),
}

/// How a one-token decode picks its answer where the logits are: `banned` masked out,
/// `edits` (indices are token ids) applied, then the device sampler's draw with `u` (greedy
/// settings: the argmax).
struct Pick {
    banned: Vec<u32>,
    edits: Vec<LogitEdit>,
    sampling: DeviceSampling,
    u: f32,
}

impl Pick {
    /// Whether the CPU twins give exactly what the device gives: the argmax of masked logits.
    fn exact_on_host(&self) -> bool {
        self.sampling.is_greedy() && self.edits.is_empty()
    }
}

enum Msg {
    Open { n_ctx: usize, charge: Option<Reservation>, reply: Sender<Result<SeqId, EngineError>> },
    /// `need_logits` false: an inner prompt chunk, whose logits the caller drops (so it may be
    /// copied rather than computed; the reply is then empty). `pick`: a one-token decode
    /// answered with a token chosen where the logits are.
    Eval { seq: SeqId, tokens: Vec<u32>, pos0: usize, which: Logits, need_logits: bool, pick: Option<Pick>, reply: Sender<Result<Out, EngineError>> },
    Free(SeqId),
    /// Free the caches kept only for reuse: a sequence is waiting for memory.
    Evict,
    Shift { seq: SeqId, n_keep: usize, n_discard: usize, len: usize, reply: Sender<Result<(), EngineError>> },
}

/// What sessions know of the model without asking its thread.
struct Info {
    tokenizer: Arc<Tokenizer>,
    n_vocab: usize,
    n_ctx_train: usize,
    kv_bytes_per_token: u64,
    kv_bytes_per_sequence: u64,
    budget: Option<Arc<MemoryBudget>>,
}

/// Handle to a model's scheduler thread; clones share it. The thread exits, freeing the
/// model, once every handle and session is gone.
#[derive(Clone)]
pub struct Scheduler {
    tx: Sender<Msg>,
    info: Arc<Info>,
    stats: Arc<BatchStats>,
}

/// Owns the scheduler thread's join handle: [`SchedulerThread::join`] waits for the model to
/// be freed.
pub struct SchedulerThread(JoinHandle<()>);

impl SchedulerThread {
    pub fn join(self) {
        if self.0.join().is_err() {
            tracing::error!("a model scheduler thread panicked");
        }
    }
}

impl Scheduler {
    /// Moves `model` onto a new thread named `name` and returns the handle to it.
    /// KV caches are charged to `budget` when there is one.
    pub fn spawn(name: &str, model: Model, budget: Option<Arc<MemoryBudget>>) -> std::io::Result<(Scheduler, SchedulerThread)> {
        let hp = &model.spec.hparams;
        let info = Arc::new(Info {
            tokenizer: model.tokenizer.clone(),
            n_vocab: hp.n_vocab,
            n_ctx_train: hp.n_ctx_train.max(1),
            kv_bytes_per_token: model.kv_bytes_per_token() as u64,
            kv_bytes_per_sequence: model.kv_bytes_per_sequence() as u64,
            budget,
        });
        let stats = Arc::new(BatchStats::default());
        let (tx, rx) = channel();
        let s = stats.clone();
        let thread = std::thread::Builder::new().name(format!("sched-{name}")).spawn(move || serve(model, rx, &s))?;
        Ok((Scheduler { tx, info, stats }, SchedulerThread(thread)))
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.info.tokenizer
    }

    pub fn counts(&self) -> BatchCounts {
        self.stats.counts()
    }

    /// The counters alone: holding them does not keep the scheduler (and its model) alive.
    pub fn stats(&self) -> Arc<BatchStats> {
        self.stats.clone()
    }

    /// A fresh sequence with a KV cache of `n_ctx` positions (clamped to the trained context).
    pub fn session(&self, n_ctx: usize) -> Result<BatchSession, EngineError> {
        self.session_for(n_ctx, n_ctx, || false)
    }

    /// A sequence for a request that needs `positions` (prompt plus tokens to generate): its
    /// KV cache holds that many rounded up to [`KV_BLOCK`], at most `n_ctx`. With a budget,
    /// waits until the cache fits (polling `give_up`), or fails at once if it never can.
    pub fn session_for(&self, n_ctx: usize, positions: usize, give_up: impl Fn() -> bool) -> Result<BatchSession, EngineError> {
        let n_ctx = n_ctx.clamp(1, self.info.n_ctx_train);
        let n_ctx = positions.max(1).next_multiple_of(KV_BLOCK).min(n_ctx);
        let charge = match &self.info.budget {
            Some(b) => {
                let bytes = n_ctx as u64 * self.info.kv_bytes_per_token + self.info.kv_bytes_per_sequence;
                let what = format!("a KV cache of {n_ctx} positions");
                Some(b.reserve_kv(&what, bytes, || drop(self.tx.send(Msg::Evict)), give_up)?)
            }
            None => None,
        };
        let (reply, rx) = channel();
        self.tx.send(Msg::Open { n_ctx, charge, reply }).map_err(|_| stopped())?;
        let seq = rx.recv().map_err(|_| stopped())??;
        Ok(BatchSession { sched: self.clone(), seq, n_ctx, history: Vec::new(), deferred: None })
    }
}

fn stopped() -> EngineError {
    EngineError::Backend(BackendError::Device("the model's scheduler has stopped".into()))
}

/// A sequence generating through a [`Scheduler`]; its KV cache is freed when it drops.
pub struct BatchSession {
    sched: Scheduler,
    seq: SeqId,
    n_ctx: usize,
    history: Vec<u32>,
    /// A token appended by `Exec::defer`, evaluated when it is picked from or read.
    deferred: Option<u32>,
}

impl Drop for BatchSession {
    fn drop(&mut self) {
        let _ = self.sched.tx.send(Msg::Free(self.seq));
    }
}

impl BatchSession {
    /// [`crate::Session::generate_steps_hooked`], batched with the scheduler's other sequences.
    pub fn generate_steps_hooked(
        &mut self,
        prompt: &[u32],
        params: &GenerateParams,
        hooks: Hooks<'_>,
        on_step: impl FnMut(Step<'_>) -> bool,
    ) -> Result<GenerateOutput, EngineError> {
        generate::run(self, prompt, params, hooks, on_step)
    }

    /// Appends `tokens` in chunks of `chunk` (see [`crate::Session::eval`]).
    pub fn eval(&mut self, tokens: &[u32], chunk: usize, which: Logits) -> Result<Vec<f32>, EngineError> {
        Exec::eval(self, tokens, chunk, which)
    }

    fn ask(&self, tokens: Vec<u32>, pos0: usize, which: Logits, need_logits: bool) -> Result<Vec<f32>, EngineError> {
        match self.ask_for(tokens, pos0, which, need_logits, None)? {
            Out::Logits(l) => Ok(l),
            Out::Token(_) => Err(BackendError::Device("the scheduler answered a token for logits".into()).into()),
        }
    }

    fn ask_for(&self, tokens: Vec<u32>, pos0: usize, which: Logits, need_logits: bool, pick: Option<Pick>) -> Result<Out, EngineError> {
        let (reply, rx) = channel();
        self.sched.tx.send(Msg::Eval { seq: self.seq, tokens, pos0, which, need_logits, pick, reply }).map_err(|_| stopped())?;
        rx.recv().map_err(|_| stopped())?
    }

    /// Sends the deferred token (already in the history) for evaluation.
    fn send_deferred(&mut self, pick: Option<Pick>) -> Result<Out, EngineError> {
        let tok = self.deferred.take().ok_or_else(generate::nothing_deferred)?;
        self.ask_for(vec![tok], self.history.len() - 1, Logits::Last, true, pick)
    }
}

impl Exec for BatchSession {
    fn tokenizer(&self) -> &Tokenizer {
        &self.sched.info.tokenizer
    }
    fn n_vocab(&self) -> usize {
        self.sched.info.n_vocab
    }
    fn history(&self) -> &[u32] {
        &self.history
    }
    fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Checks `tok` as `eval` checks one and appends it to the history at once, as a `Session`
    /// does: the penalties of the pick that follows count it.
    fn defer(&mut self, tok: u32) -> Result<(), EngineError> {
        generate::check_append(self.history.len(), self.n_ctx, self.sched.info.n_vocab, &[tok])?;
        self.history.push(tok);
        self.deferred = Some(tok);
        Ok(())
    }

    fn sample_deferred(&mut self, p: &DeviceSampling, u: f32, banned: &[u32], edits: &[LogitEdit]) -> Result<u32, EngineError> {
        match self.send_deferred(Some(Pick { banned: banned.to_vec(), edits: edits.to_vec(), sampling: *p, u }))? {
            Out::Token(t) => Ok(t),
            Out::Logits(_) => Err(BackendError::Device("the scheduler answered logits for a pick".into()).into()),
        }
    }

    fn read_deferred(&mut self) -> Result<Vec<f32>, EngineError> {
        match self.send_deferred(None)? {
            Out::Logits(l) => Ok(l),
            Out::Token(_) => Err(BackendError::Device("the scheduler answered a token for logits".into()).into()),
        }
    }

    fn shift(&mut self, n_keep: usize, n_discard: usize) -> Result<(), EngineError> {
        let (reply, rx) = channel();
        let len = self.history.len();
        self.sched.tx.send(Msg::Shift { seq: self.seq, n_keep, n_discard, len, reply }).map_err(|_| stopped())?;
        rx.recv().map_err(|_| stopped())??;
        self.history.drain(n_keep..n_keep + n_discard);
        Ok(())
    }

    fn eval_chunk(&mut self, chunk: &[u32], which: Logits, need_logits: bool) -> Result<Vec<f32>, EngineError> {
        let logits = self.ask(chunk.to_vec(), self.history.len(), which, need_logits)?;
        self.history.extend_from_slice(chunk);
        Ok(logits)
    }
}

struct Pending {
    seq: SeqId,
    tokens: Vec<u32>,
    pos0: usize,
    which: Logits,
    need_logits: bool,
    pick: Option<Pick>,
    reply: Sender<Result<Out, EngineError>>,
}

/// KV caches are sized in multiples of this many positions.
pub const KV_BLOCK: usize = 256;

/// Finished sequences whose KV caches stay around as prefix sources, newest last.
const RETAINED: usize = 4;
/// Shorter histories are not worth retaining.
const MIN_RETAINED_TOKENS: usize = 64;

/// What the scheduler knows of each sequence's KV cache, for prefix reuse.
#[derive(Default)]
struct Seqs {
    /// Tokens in each cache, and the `(pos0, len)` chunks they were computed in; a shifted
    /// sequence is no longer tracked.
    known: HashMap<SeqId, (Vec<u32>, Vec<(usize, usize)>)>,
    /// Freed sequences kept as sources, oldest first.
    retained: VecDeque<SeqId>,
    /// Each cache's charge against the memory budget, given back when it is freed.
    charges: HashMap<SeqId, Option<Reservation>>,
}

impl Seqs {
    /// Another sequence that computed exactly this chunk after exactly this history.
    fn source(&self, seq: SeqId, pos0: usize, tokens: &[u32]) -> Option<SeqId> {
        let history = &self.known.get(&seq)?.0;
        if history.len() != pos0 {
            return None;
        }
        self.known
            .iter()
            .filter(|(s, _)| **s != seq)
            .find(|(_, (t, chunks))| {
                chunks.contains(&(pos0, tokens.len())) && t.len() >= pos0 + tokens.len() && t[..pos0] == history[..] && t[pos0..pos0 + tokens.len()] == *tokens
            })
            .map(|(s, _)| *s)
    }

    fn record(&mut self, seq: SeqId, pos0: usize, tokens: &[u32]) {
        let Some((t, chunks)) = self.known.get_mut(&seq) else { return };
        t.extend_from_slice(tokens);
        chunks.push((pos0, tokens.len()));
    }

    /// A sequence ended: keep it as a source if it is long enough, freeing the oldest one kept.
    fn free(&mut self, seq: SeqId, model: &mut Model, stats: &BatchStats) {
        let keep = self.known.get(&seq).is_some_and(|(t, _)| t.len() >= MIN_RETAINED_TOKENS);
        if keep {
            self.retained.push_back(seq);
        } else {
            self.release(seq, model, stats);
        }
        while self.retained.len() > RETAINED {
            if let Some(old) = self.retained.pop_front() {
                self.release(old, model, stats);
            }
        }
    }

    /// Frees every cache kept only for reuse.
    fn evict(&mut self, model: &mut Model, stats: &BatchStats) {
        while let Some(old) = self.retained.pop_front() {
            self.release(old, model, stats);
        }
    }

    fn release(&mut self, seq: SeqId, model: &mut Model, stats: &BatchStats) {
        self.known.remove(&seq);
        model.backend.free_sequence(seq);
        if let Some(charge) = self.charges.remove(&seq).flatten() {
            stats.kv_bytes.fetch_sub(charge.bytes(), Ordering::Relaxed);
        }
        stats.kv_caches.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Pending {
    fn is_decode(&self) -> bool {
        self.tokens.len() == 1 && self.which == Logits::Last
    }
}

/// The scheduler thread: gathers requests into steps until every handle is gone.
fn serve(mut model: Model, rx: Receiver<Msg>, stats: &BatchStats) {
    let mut open = 0usize;
    let mut prefills: VecDeque<Pending> = VecDeque::new();
    let mut decodes: Vec<Pending> = Vec::new();
    let mut connected = true;
    let mut seqs = Seqs::default();
    while connected {
        if prefills.is_empty() && decodes.is_empty() {
            match rx.recv() {
                Ok(m) => take(m, &mut model, &mut seqs, &mut open, &mut prefills, &mut decodes, stats),
                Err(_) => break,
            }
        }
        // Let every open sequence hand in its next request, so one step serves them all.
        let deadline = Instant::now() + GATHER;
        loop {
            while let Ok(m) = rx.try_recv() {
                take(m, &mut model, &mut seqs, &mut open, &mut prefills, &mut decodes, stats);
            }
            if prefills.len() + decodes.len() >= open {
                break;
            }
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(m) => take(m, &mut model, &mut seqs, &mut open, &mut prefills, &mut decodes, stats),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    connected = false;
                    break;
                }
            }
        }
        step(&mut model, &mut seqs, &mut prefills, &mut decodes, stats);
    }
}

/// Handles one message: sequences open and close at once, evaluations wait for the step.
fn take(m: Msg, model: &mut Model, seqs: &mut Seqs, open: &mut usize, prefills: &mut VecDeque<Pending>, decodes: &mut Vec<Pending>, stats: &BatchStats) {
    match m {
        Msg::Open { n_ctx, charge, reply } => {
            let r = model.new_kv(n_ctx);
            if let Ok(seq) = r {
                *open += 1;
                seqs.known.insert(seq, Default::default());
                stats.kv_caches.fetch_add(1, Ordering::Relaxed);
                stats.kv_bytes.fetch_add(charge.as_ref().map_or(0, Reservation::bytes), Ordering::Relaxed);
                seqs.charges.insert(seq, charge);
            }
            let _ = reply.send(r);
        }
        Msg::Free(seq) => {
            seqs.free(seq, model, stats);
            *open = open.saturating_sub(1);
        }
        Msg::Evict => seqs.evict(model, stats),
        Msg::Shift { seq, n_keep, n_discard, len, reply } => {
            // Its cache no longer holds what a fresh prefill would: never a reuse source again.
            seqs.known.remove(&seq);
            let _ = reply.send(model.shift_kv(seq, n_keep, n_discard, len));
        }
        Msg::Eval { seq, tokens, pos0, which, need_logits, pick, reply } => {
            let p = Pending { seq, tokens, pos0, which, need_logits, pick, reply };
            if p.is_decode() {
                decodes.push(p);
            } else {
                prefills.push_back(p);
            }
        }
    }
}

/// One step: waiting prefill chunks, oldest first, up to [`PREFILL_TOKENS_PER_STEP`] (at least
/// one chunk), then one batched decode of every waiting row.
fn step(model: &mut Model, seqs: &mut Seqs, prefills: &mut VecDeque<Pending>, decodes: &mut Vec<Pending>, stats: &BatchStats) {
    let mut budget = PREFILL_TOKENS_PER_STEP;
    while let Some(p) = prefills.pop_front() {
        let m = &mut *model;
        if !p.need_logits {
            if let Some(src) = seqs.source(p.seq, p.pos0, &p.tokens) {
                if m.backend.copy_kv(src, p.seq, p.pos0, p.tokens.len()).is_ok() {
                    // A copy costs no compute, so it leaves the step's prefill budget alone.
                    stats.reused_tokens.fetch_add(p.tokens.len() as u64, Ordering::Relaxed);
                    seqs.record(p.seq, p.pos0, &p.tokens);
                    let _ = p.reply.send(Ok(Out::Logits(Vec::new())));
                    continue;
                }
            }
        }
        // Each chunk runs on its own, as it would alone: batching prompts together would
        // change their arithmetic.
        let r = forward(&m.spec, &m.weights, m.backend.as_mut(), p.seq, &p.tokens, p.pos0, p.which);
        stats.prefill_tokens.fetch_add(p.tokens.len() as u64, Ordering::Relaxed);
        if r.is_ok() {
            seqs.record(p.seq, p.pos0, &p.tokens);
        }
        let _ = p.reply.send(r.map(Out::Logits).map_err(EngineError::from));
        budget = budget.saturating_sub(p.tokens.len());
        if budget == 0 || prefills.front().is_some_and(|n| n.tokens.len() > budget) {
            break;
        }
    }
    if !decodes.is_empty() {
        let batch = std::mem::take(decodes);
        stats.decode_steps.fetch_add(1, Ordering::Relaxed);
        stats.decode_rows.fetch_add(batch.len() as u64, Ordering::Relaxed);
        stats.max_batch.fetch_max(batch.len() as u64, Ordering::Relaxed);
        let outs = decode(model, &batch);
        for (p, out) in batch.into_iter().zip(outs) {
            if out.is_ok() {
                seqs.record(p.seq, p.pos0, &p.tokens);
            }
            let _ = p.reply.send(out);
        }
    }
}

/// One decode row per pending request: batched on a backend that batches rows, otherwise row
/// by row with masked picks on the device, so a GPU reads back only their ids. A batch of
/// picking rows (each with its mask, edits and draw) picks on the device too. A batch where
/// some row wants its logits reads them all back; its picking rows are then chosen on the
/// device first when any of them samples or edits (the CPU twins of those are only exact up to
/// rounding, and a row must get what it would alone), and by the exact CPU twins of mask and
/// argmax otherwise.
fn decode(model: &mut Model, batch: &[Pending]) -> Vec<Result<Out, EngineError>> {
    let m = &mut *model;
    let n_vocab = m.spec.hparams.n_vocab;
    if batch.len() > 1 && m.backend.batches_rows() {
        let rows: Vec<(SeqId, u32, usize)> = batch.iter().map(|p| (p.seq, p.tokens[0], p.pos0)).collect();
        let be = m.backend.as_mut();
        let result = forward_decode_batch_act(&m.spec, &m.weights, be, &rows).and_then(|act| {
            let all_pick = batch.iter().all(|p| p.pick.is_some());
            let inexact = batch.iter().any(|p| p.pick.as_ref().is_some_and(|k| !k.exact_on_host()));
            let ids = match all_pick || inexact {
                true => Some(pick_rows(be, act, batch, n_vocab)?),
                false => None,
            };
            if let (true, Some(ids)) = (all_pick, &ids) {
                return Ok(ids.iter().map(|&t| Ok(Out::Token(t))).collect());
            }
            let all = be.read(act)?;
            let cols = all.len() / batch.len();
            let row_out = |(i, (p, row)): (usize, (&Pending, &[f32]))| {
                Ok(match (&p.pick, &ids) {
                    (Some(_), Some(ids)) => Out::Token(ids[i]),
                    (Some(k), None) => {
                        let mut l = row.to_vec();
                        crate::cpu::ops::mask_logits(&mut l, cols, &k.banned);
                        Out::Token(crate::cpu::ops::argmax(&l))
                    }
                    (None, _) => Out::Logits(row.to_vec()),
                })
            };
            Ok(batch.iter().zip(all.chunks_exact(cols.max(1))).enumerate().map(row_out).collect())
        });
        return match result {
            Ok(outs) => outs,
            Err(e) => batch.iter().map(|_| Err(BackendError::Device(e.to_string()).into())).collect(),
        };
    }
    batch
        .iter()
        .map(|p| {
            let be = m.backend.as_mut();
            let act = forward_act(&m.spec, &m.weights, be, p.seq, &p.tokens, p.pos0, Logits::Last)?;
            Ok(match &p.pick {
                Some(k) => Out::Token(be.sample_masked(act, &k.banned, &k.edits, &k.sampling, k.u)?),
                None => Out::Logits(be.read(act)?),
            })
        })
        .collect()
}

/// Each row's pick from the batch's logits `act` with that row's banned bitset masked out, its
/// edits applied and its draw, on the device: only the ids come back. Rows that want logits
/// get a greedy pick, which the caller drops.
fn pick_rows(be: &mut dyn Backend, act: Act, batch: &[Pending], n_vocab: usize) -> Result<Vec<u32>, BackendError> {
    let banned: Vec<&[u32]> = batch.iter().map(|p| p.pick.as_ref().map_or(&[][..], |k| &k.banned)).collect();
    let mut all = be.mask_logits_rows(act, &banned)?;
    let mut edits = Vec::new();
    for (r, k) in batch.iter().enumerate().filter_map(|(r, p)| Some((r, p.pick.as_ref()?))) {
        let base = u32::try_from(r * n_vocab).map_err(|_| BackendError::Shape { op: "edit_logits", detail: format!("row {r} of {n_vocab} logits") })?;
        edits.extend(k.edits.iter().map(|e| LogitEdit { index: base + e.index, ..*e }));
    }
    if !edits.is_empty() {
        all = be.edit_logits(all, &edits)?;
    }
    let draws: Vec<(DeviceSampling, f32)> = batch.iter().map(|p| p.pick.as_ref().map_or((DeviceSampling::GREEDY, 0.0), |k| (k.sampling, k.u))).collect();
    if draws.iter().all(|d| d.0.is_greedy()) {
        return be.argmax(all, n_vocab);
    }
    be.sample_rows(all, n_vocab, &draws)
}
