//! One sequence's generation loop: chunked prefill, sampling, stop conditions and streaming
//! text that never splits a UTF-8 character or leaks a partial stop string.

use std::time::Instant;

use crate::backend::{DeviceSampling, LogitEdit, SeqId};
use crate::constraint::{FilterVerdict, Hooks};
use crate::error::EngineError;
use crate::graph::{forward, Logits};
use crate::logprobs::{log_normaliser, top_alternatives, TokenLogprobs};
use crate::model::Model;
use crate::sampling::{Sampler, SamplingParams};
use crate::tokenizer::StreamDecoder;

#[derive(Clone, Debug)]
pub struct GenerateParams {
    pub sampling: SamplingParams,
    pub max_tokens: usize,
    /// Strings that end generation; the text returned stops before them.
    pub stop: Vec<String>,
    /// Token ids that end generation, besides the model's end-of-generation set.
    pub stop_token_ids: Vec<u32>,
    /// Ignore end-of-generation tokens until this many tokens have been produced.
    pub min_tokens: usize,
    /// Prompt tokens per forward pass during prefill.
    pub prefill_chunk: usize,
    /// Report each generated token's log-probability and this many top alternatives
    /// (`Some(0)`: the chosen token only). `None` computes nothing.
    pub logprobs: Option<usize>,
    /// Context shift: `Some(n_keep)` keeps generating at the context limit by dropping half of
    /// the tokens after the first `n_keep` (re-rotating the cached keys rather than
    /// recomputing); `None` stops with `Length` there.
    pub context_shift: Option<usize>,
    /// Where sampled draws (temperature > 0) are made; see [`SampleOnDevice`].
    pub sample_on_device: SampleOnDevice,
}

/// Where a sampled draw (temperature > 0) is made: on the device, which reads back only the
/// token id, or on the host, which reads the logits back and draws with the CPU twin (the
/// same tokens away from rounding boundaries). Greedy picks are always made on the device, and
/// a request for log-probabilities always draws on the host, which needs the logits anyway.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SampleOnDevice {
    /// On the device where the two-stage top-k kernel serves the settings (top-k in
    /// 1..=[`DeviceSampling::TOP_K_MAX`], llama.cpp's default 40 included), on the host
    /// otherwise: the general kernel walks the whole vocabulary about 64 times, which on the
    /// H100 was slower than reading the logits back (8B Q4_0 tok/s: 164 -> 76;
    /// bench/RESULTS.md).
    #[default]
    Auto,
    /// On the device whatever the settings.
    Always,
    /// On the host whatever the settings.
    Never,
}

impl SampleOnDevice {
    /// Whether a sampled draw under `p` is made on the device.
    pub fn serves(self, p: &DeviceSampling) -> bool {
        match self {
            SampleOnDevice::Auto => p.is_top_k_bounded(),
            SampleOnDevice::Always => true,
            SampleOnDevice::Never => false,
        }
    }
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            sampling: SamplingParams::default(),
            max_tokens: 256,
            stop: Vec::new(),
            stop_token_ids: Vec::new(),
            min_tokens: 0,
            prefill_chunk: 256,
            logprobs: None,
            context_shift: None,
            sample_on_device: SampleOnDevice::Auto,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// An end-of-generation token.
    Eos,
    /// `max_tokens`, or the context is full.
    Length,
    /// A stop string or stop token id.
    Stop,
    /// The caller's callback asked to stop.
    Cancelled,
    /// An output filter denied the text (a policy rule, named by its id).
    Policy { rule: String },
}

impl StopReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            StopReason::Eos => "eos",
            StopReason::Length => "length",
            StopReason::Stop => "stop",
            StopReason::Cancelled => "cancelled",
            StopReason::Policy { .. } => "policy",
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Timings {
    pub prompt_tokens: usize,
    pub prefill_ms: f64,
    pub generated_tokens: usize,
    pub decode_ms: f64,
}

impl Timings {
    pub fn prefill_tok_s(&self) -> f64 {
        self.prompt_tokens as f64 / (self.prefill_ms / 1e3).max(1e-9)
    }
    pub fn decode_tok_s(&self) -> f64 {
        self.generated_tokens as f64 / (self.decode_ms / 1e3).max(1e-9)
    }
}

#[derive(Clone, Debug)]
pub struct GenerateOutput {
    pub tokens: Vec<u32>,
    pub text: String,
    pub stop_reason: StopReason,
    pub seed: u64,
    pub timings: Timings,
    /// The stop string that ended generation (cut from `text`), when one did.
    pub matched_stop: Option<String>,
    /// One entry per generated token when `GenerateParams::logprobs` asked for them.
    pub logprobs: Vec<TokenLogprobs>,
}

/// What [`Session::generate_steps`] reports after each sampled token.
pub struct Step<'a> {
    /// Text that became safe to show (may be empty while a stop string is pending).
    pub text: &'a str,
    /// The sampled token; `None` for the final flush of held-back text.
    pub token: Option<u32>,
    /// The token's log-probabilities, when asked for.
    pub logprobs: Option<&'a TokenLogprobs>,
}

/// What the generation loop needs of a sequence: its tokenizer, its history, and a way to
/// append tokens and get logits. A [`Session`] owns its model; a batched sequence
/// (`batch::BatchSession`) asks the model's scheduler.
pub(crate) trait Exec {
    fn tokenizer(&self) -> &crate::tokenizer::Tokenizer;
    fn n_vocab(&self) -> usize;
    fn history(&self) -> &[u32];
    fn n_ctx(&self) -> usize;
    /// Appends one chunk at position `history().len()` and returns its logits (`which`);
    /// `need_logits` false lets an implementation skip them (the caller drops them).
    fn eval_chunk(&mut self, chunk: &[u32], which: Logits, need_logits: bool) -> Result<Vec<f32>, EngineError>;
    /// Appends `tokens` in chunks of `chunk`, returning the logits `which` selects: the last
    /// position's, or every position's (for scoring).
    fn eval(&mut self, tokens: &[u32], chunk: usize, which: Logits) -> Result<Vec<f32>, EngineError> {
        if tokens.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        check_append(self.history().len(), self.n_ctx(), self.n_vocab(), tokens)?;
        let mut out = Vec::new();
        let n_chunks = tokens.len().div_ceil(chunk.max(1));
        for (i, c) in tokens.chunks(chunk.max(1)).enumerate() {
            let last = i + 1 == n_chunks;
            let logits = self.eval_chunk(c, which, which == Logits::All || last)?;
            if which == Logits::All {
                out.extend(logits);
            } else if last {
                out = logits;
            }
        }
        Ok(out)
    }
    /// Drops positions `n_keep..n_keep + n_discard` from the cache and the history.
    fn shift(&mut self, n_keep: usize, n_discard: usize) -> Result<(), EngineError>;
    /// Appends `tok` with its logits left where they are computed (the device), for
    /// [`sample_deferred`](Self::sample_deferred) or [`read_deferred`](Self::read_deferred) next.
    fn defer(&mut self, tok: u32) -> Result<(), EngineError>;
    /// The token the device sampler draws from the deferred logits with the `banned` bitset
    /// masked out and `edits` (logit bias, penalties) applied (greedy settings: the argmax; `u`
    /// uniform in [0, 1)), computed where the logits are: a GPU reads back only the token id.
    fn sample_deferred(&mut self, p: &DeviceSampling, u: f32, banned: &[u32], edits: &[LogitEdit]) -> Result<u32, EngineError>;
    /// The deferred logits, read back.
    fn read_deferred(&mut self) -> Result<Vec<f32>, EngineError>;
}

pub struct Session<'m> {
    model: &'m mut Model,
    seq: SeqId,
    n_ctx: usize,
    /// Tokens already in the KV cache, in order.
    history: Vec<u32>,
    /// Logits of the last token, left on the backend by `Exec::defer`.
    deferred: Option<crate::backend::Act>,
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        self.model.backend.free_sequence(self.seq);
    }
}

impl<'m> Session<'m> {
    pub(crate) fn new(model: &'m mut Model, n_ctx: usize) -> Result<Self, EngineError> {
        let seq = model.new_kv(n_ctx)?;
        Ok(Session { model, seq, n_ctx, history: Vec::new(), deferred: None })
    }

    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    pub fn history(&self) -> &[u32] {
        &self.history
    }

    pub fn model(&self) -> &Model {
        self.model
    }

    /// Appends `tokens` to the sequence in chunks of `chunk`, returning the logits `which`
    /// selects: the last position's, or every position's (for scoring).
    pub fn eval(&mut self, tokens: &[u32], chunk: usize, which: Logits) -> Result<Vec<f32>, EngineError> {
        Exec::eval(self, tokens, chunk, which)
    }

    /// Context shift by hand: drops positions `n_keep..n_keep + n_discard` of the cache,
    /// re-rotating the keys after them (what generation does at the context limit when
    /// `GenerateParams::context_shift` is set).
    pub fn shift(&mut self, n_keep: usize, n_discard: usize) -> Result<(), EngineError> {
        if n_keep + n_discard > self.history.len() {
            return Err(EngineError::InvalidArgument(format!("cannot drop {n_discard} after {n_keep} of {} tokens", self.history.len())));
        }
        Exec::shift(self, n_keep, n_discard)
    }

    /// Appends one sampled token and leaves its logits on the backend, unread.
    fn decode_act(&mut self, tok: u32) -> Result<crate::backend::Act, EngineError> {
        let m = &mut *self.model;
        let act = crate::graph::forward_act(&m.spec, &m.weights, m.backend.as_mut(), self.seq, &[tok], self.history.len(), Logits::Last)?;
        self.history.push(tok);
        Ok(act)
    }

    /// Generates after `prompt`, calling `on_text(delta, token)` for each sampled token with the
    /// text that is now safe to show; returning `false` from it cancels.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        params: &GenerateParams,
        on_text: impl FnMut(&str, u32) -> bool,
    ) -> Result<GenerateOutput, EngineError> {
        self.generate_hooked(prompt, params, Hooks::default(), on_text)
    }

    /// [`generate`](Self::generate) with [`Hooks`]: logits hooks run before each sampling
    /// step, and `on_text` (and the returned text) only ever sees the output filters' output.
    pub fn generate_hooked(
        &mut self,
        prompt: &[u32],
        params: &GenerateParams,
        hooks: Hooks<'_>,
        mut on_text: impl FnMut(&str, u32) -> bool,
    ) -> Result<GenerateOutput, EngineError> {
        let mut last = 0;
        self.generate_steps_hooked(prompt, params, hooks, |step| {
            last = step.token.unwrap_or(last);
            on_text(step.text, last)
        })
    }

    /// [`Session::generate`] with the full [`Step`] per token: whether it is the final flush,
    /// and its log-probabilities. Returning `false` cancels, checked once per decode step.
    pub fn generate_steps(
        &mut self,
        prompt: &[u32],
        params: &GenerateParams,
        on_step: impl FnMut(Step<'_>) -> bool,
    ) -> Result<GenerateOutput, EngineError> {
        self.generate_steps_hooked(prompt, params, Hooks::default(), on_step)
    }

    /// [`generate_steps`](Self::generate_steps) with [`Hooks`] (see
    /// [`generate_hooked`](Self::generate_hooked)).
    pub fn generate_steps_hooked(
        &mut self,
        prompt: &[u32],
        params: &GenerateParams,
        hooks: Hooks<'_>,
        on_step: impl FnMut(Step<'_>) -> bool,
    ) -> Result<GenerateOutput, EngineError> {
        run(self, prompt, params, hooks, on_step)
    }
}

impl Exec for Session<'_> {
    fn tokenizer(&self) -> &crate::tokenizer::Tokenizer {
        &self.model.tokenizer
    }
    fn n_vocab(&self) -> usize {
        self.model.spec.hparams.n_vocab
    }
    fn history(&self) -> &[u32] {
        &self.history
    }
    fn n_ctx(&self) -> usize {
        self.n_ctx
    }
    fn eval_chunk(&mut self, chunk: &[u32], which: Logits, _need_logits: bool) -> Result<Vec<f32>, EngineError> {
        let m = &mut *self.model;
        let logits = forward(&m.spec, &m.weights, m.backend.as_mut(), self.seq, chunk, self.history.len(), which)?;
        self.history.extend_from_slice(chunk);
        Ok(logits)
    }
    fn defer(&mut self, tok: u32) -> Result<(), EngineError> {
        self.deferred = Some(Session::decode_act(self, tok)?);
        Ok(())
    }
    fn sample_deferred(&mut self, p: &DeviceSampling, u: f32, banned: &[u32], edits: &[LogitEdit]) -> Result<u32, EngineError> {
        let act = self.deferred.take().ok_or_else(nothing_deferred)?;
        Ok(self.model.backend.sample_masked(act, banned, edits, p, u)?)
    }
    fn read_deferred(&mut self) -> Result<Vec<f32>, EngineError> {
        let act = self.deferred.take().ok_or_else(nothing_deferred)?;
        Ok(self.model.backend.read(act)?)
    }
    fn shift(&mut self, n_keep: usize, n_discard: usize) -> Result<(), EngineError> {
        self.model.shift_kv(self.seq, n_keep, n_discard, self.history.len())?;
        self.history.drain(n_keep..n_keep + n_discard);
        Ok(())
    }
}

/// Whether `tokens` may be appended to a sequence holding `held` of `n_ctx` positions.
pub(crate) fn check_append(held: usize, n_ctx: usize, n_vocab: usize, tokens: &[u32]) -> Result<(), EngineError> {
    if held + tokens.len() > n_ctx {
        return Err(EngineError::PromptTooLong { prompt: held + tokens.len(), n_ctx });
    }
    if let Some(&id) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
        return Err(crate::backend::BackendError::TokenOutOfRange { id, n_vocab }.into());
    }
    Ok(())
}

pub(crate) fn nothing_deferred() -> EngineError {
    EngineError::InvalidArgument("no deferred token to pick from".into())
}

/// One generation after `prompt` on any [`Exec`] (see [`Session::generate_steps_hooked`]).
pub(crate) fn run<E: Exec + ?Sized>(
    exec: &mut E,
    prompt: &[u32],
    params: &GenerateParams,
    mut hooks: Hooks<'_>,
    mut on_step: impl FnMut(Step<'_>) -> bool,
) -> Result<GenerateOutput, EngineError> {
    let mut on_text = |text: &str, tok: Option<u32>, lp: Option<&TokenLogprobs>| on_step(Step { text, token: tok, logprobs: lp });
    let mut logprobs = Vec::new();
    // Reused across steps: the raw logits are kept only to read the chosen token's.
    let mut raw_logits = Vec::new();
    let mut matched_stop = None;
    let mut sampler = Sampler::new(params.sampling.clone());
    let mut timings = Timings { prompt_tokens: prompt.len(), ..Timings::default() };
    let t0 = Instant::now();
    let mut logits = exec.eval(prompt, params.prefill_chunk, Logits::Last)?;
    // Every token is chosen by the device sampler's chain, after the logits hooks' masks and
    // the request's logit bias and penalties (sparse edits from its history): on the backend,
    // where a GPU reads back only the id, or by its CPU twins wherever the logits are on the
    // host (the prompt's, sampled draws, log-probabilities, a hook without a device mask), so
    // asking for log-probabilities never changes the tokens. The sampler's RNG gives each draw
    // its uniform.
    let device = params.sampling.device();
    let defer = params.logprobs.is_none() && (device.is_greedy() || params.sample_on_device.serves(&device));
    let n_vocab = exec.n_vocab();
    let mut deferred = false;
    let mut edits = Vec::new();
    timings.prefill_ms = t0.elapsed().as_secs_f64() * 1e3;

    let t1 = Instant::now();
    let mut decoder = StreamDecoder::new(exec.tokenizer());
    let mut text = String::new();
    let mut shown = 0usize; // bytes of `text` already passed to on_text
    let mut tokens = Vec::new();
    let stop_reason = loop {
        if tokens.len() >= params.max_tokens {
            break StopReason::Length;
        }
        // Log-probabilities describe the raw distribution, so they are taken before the
        // sampler biases, penalises and truncates the logits in place.
        let raw = params.logprobs.map(|n| {
            let norm = log_normaliser(&logits);
            raw_logits.clone_from(&logits);
            (norm, top_alternatives(&logits, norm, n))
        });
        // One uniform per sampled token, drawn whatever happens next: the seed fixes it.
        let u = if device.is_greedy() { 0.0 } else { sampler.next_uniform() };
        sampler.edits(exec.history(), n_vocab, &mut edits);
        let was_deferred = std::mem::take(&mut deferred);
        let bits = if was_deferred { hooks.device_mask(n_vocab)? } else { None };
        let tok = match bits {
            Some(bits) => exec.sample_deferred(&device, u, &bits, &edits)?,
            None => {
                if was_deferred {
                    logits = exec.read_deferred()?;
                }
                hooks.mask(&mut logits)?;
                crate::cpu::ops::edit_logits(&mut logits, &edits);
                crate::cpu::ops::sample(&logits, &device, u)
            }
        };
        hooks.accept(tok)?;
        tokens.push(tok);
        if let Some((norm, top)) = raw {
            let logprob = raw_logits.get(tok as usize).map_or(f32::NEG_INFINITY, |&l| (l as f64 - norm) as f32);
            logprobs.push(TokenLogprobs { token: tok, logprob, top });
        }
        let lp = logprobs.last();
        let is_eog = exec.tokenizer().is_eog(tok);
        if is_eog && tokens.len() > params.min_tokens {
            break StopReason::Eos;
        }
        if params.stop_token_ids.contains(&tok) && tokens.len() > params.min_tokens {
            break StopReason::Stop;
        }
        text.push_str(&decoder.push(tok));
        if let Some((cut, stop)) = find_stop(&text, &params.stop, shown) {
            matched_stop = Some(stop.to_string());
            text.truncate(cut);
            let (delta, verdict) = hooks.filter(&text[shown..], true)?;
            if !delta.is_empty() && !on_text(&delta, Some(tok), lp) {
                break StopReason::Cancelled;
            }
            shown = text.len();
            break policy_stop(verdict).unwrap_or(StopReason::Stop);
        }
        let safe = safe_prefix_len(&text, &params.stop);
        let (delta, verdict) = hooks.filter(&text[shown..safe.max(shown)], false)?;
        if !on_text(&delta, Some(tok), lp) {
            break StopReason::Cancelled;
        }
        shown = safe.max(shown);
        if let Some(reason) = policy_stop(verdict) {
            break reason;
        }
        // The last token is never fed back: its forward pass would be wasted work.
        if tokens.len() >= params.max_tokens {
            break StopReason::Length;
        }
        if exec.history().len() >= exec.n_ctx() {
            // llama.cpp's shift: keep the first n_keep, drop half of the rest.
            let (len, keep) = (exec.history().len(), params.context_shift.map(|k| k.min(exec.n_ctx() / 2)));
            match keep.map(|k| (k, (len - k) / 2)) {
                Some((k, discard)) if discard > 0 => exec.shift(k, discard)?,
                _ => break StopReason::Length,
            }
        }
        if defer {
            exec.defer(tok)?;
            deferred = true;
        } else {
            logits = exec.eval(&[tok], 1, Logits::Last)?;
        }
    };
    let mut stop_reason = stop_reason;
    if !matches!(stop_reason, StopReason::Stop | StopReason::Cancelled | StopReason::Policy { .. }) {
        text.push_str(&decoder.flush());
        let (delta, verdict) = hooks.filter(&text[shown..], true)?;
        if !delta.is_empty() {
            on_text(&delta, None, None);
        }
        stop_reason = policy_stop(verdict).unwrap_or(stop_reason);
    }
    if hooks.has_output() {
        text = hooks.take_shown();
    }
    timings.generated_tokens = tokens.len();
    timings.decode_ms = t1.elapsed().as_secs_f64() * 1e3;
    Ok(GenerateOutput { tokens, text, stop_reason, seed: sampler.seed(), timings, matched_stop, logprobs })
}

/// The stop reason an output filter's verdict ends generation with, if it does.
fn policy_stop(v: FilterVerdict) -> Option<StopReason> {
    match v {
        FilterVerdict::Continue => None,
        FilterVerdict::Stop => Some(StopReason::Stop),
        FilterVerdict::Deny { rule } => Some(StopReason::Policy { rule }),
    }
}

/// Byte offset where the earliest stop string starts, searching only where a new match can
/// begin (a match must end in text not yet shown).
fn find_stop<'s>(text: &str, stops: &'s [String], shown: usize) -> Option<(usize, &'s str)> {
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| {
            let from = shown.saturating_sub(s.len() - 1);
            let from = (0..=from).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
            text[from..].find(s.as_str()).map(|i| (from + i, s.as_str()))
        })
        .min_by_key(|&(at, _)| at)
}

/// Length of the prefix of `text` that cannot be the start of a stop string: the tail that is
/// a proper prefix of some stop string is held back until it resolves.
fn safe_prefix_len(text: &str, stops: &[String]) -> usize {
    let mut safe = text.len();
    for s in stops.iter().filter(|s| !s.is_empty()) {
        for k in (1..s.len()).rev() {
            if k <= text.len() && text.is_char_boundary(text.len() - k) && s.as_bytes().starts_with(&text.as_bytes()[text.len() - k..]) {
                safe = safe.min(text.len() - k);
                break;
            }
        }
    }
    safe
}

#[cfg(test)]
mod tests;
