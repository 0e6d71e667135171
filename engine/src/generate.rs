//! One sequence's generation loop: chunked prefill, sampling, stop conditions and streaming
//! text that never splits a UTF-8 character or leaks a partial stop string.

use std::time::Instant;

use crate::backend::SeqId;
use crate::constraint::{FilterVerdict, Hooks};
use crate::error::EngineError;
use crate::graph::{forward, Logits};
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
}

pub struct Session<'m> {
    model: &'m mut Model,
    seq: SeqId,
    n_ctx: usize,
    /// Tokens already in the KV cache, in order.
    history: Vec<u32>,
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        self.model.backend.free_sequence(self.seq);
    }
}

impl<'m> Session<'m> {
    pub(crate) fn new(model: &'m mut Model, n_ctx: usize) -> Result<Self, EngineError> {
        let hp = &model.spec.hparams;
        let seq = model.backend.new_sequence(hp.n_layer, hp.kv_dim(), n_ctx)?;
        Ok(Session { model, seq, n_ctx, history: Vec::new() })
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
        if tokens.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        if self.history.len() + tokens.len() > self.n_ctx {
            return Err(EngineError::PromptTooLong { prompt: self.history.len() + tokens.len(), n_ctx: self.n_ctx });
        }
        let n_vocab = self.model.spec.hparams.n_vocab;
        if let Some(&id) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(crate::backend::BackendError::TokenOutOfRange { id, n_vocab }.into());
        }
        let mut out = Vec::new();
        let chunks: Vec<&[u32]> = tokens.chunks(chunk.max(1)).collect();
        for (i, c) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            let want = if which == Logits::All { Logits::All } else { Logits::Last };
            let m = &mut *self.model;
            let logits = forward(&m.spec, &m.weights, m.backend.as_mut(), self.seq, c, self.history.len(), want)?;
            self.history.extend_from_slice(c);
            if which == Logits::All {
                out.extend(logits);
            } else if last {
                out = logits;
            }
        }
        Ok(out)
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
        mut hooks: Hooks<'_>,
        mut on_text: impl FnMut(&str, u32) -> bool,
    ) -> Result<GenerateOutput, EngineError> {
        let mut sampler = Sampler::new(params.sampling.clone());
        let mut timings = Timings { prompt_tokens: prompt.len(), ..Timings::default() };
        let t0 = Instant::now();
        let mut logits = self.eval(prompt, params.prefill_chunk, Logits::Last)?;
        timings.prefill_ms = t0.elapsed().as_secs_f64() * 1e3;

        let t1 = Instant::now();
        let mut decoder = StreamDecoder::new(&self.model.tokenizer);
        let mut text = String::new();
        let mut shown = 0usize; // bytes of `text` already passed to on_text
        let mut tokens = Vec::new();
        let stop_reason = loop {
            if tokens.len() >= params.max_tokens {
                break StopReason::Length;
            }
            let history = &self.history;
            hooks.mask(&mut logits)?;
            let tok = sampler.sample(&mut logits, history);
            hooks.accept(tok)?;
            tokens.push(tok);
            let is_eog = self.model.tokenizer.is_eog(tok);
            if is_eog && tokens.len() > params.min_tokens {
                break StopReason::Eos;
            }
            if params.stop_token_ids.contains(&tok) && tokens.len() > params.min_tokens {
                break StopReason::Stop;
            }
            text.push_str(&decoder.push(tok));
            if let Some(cut) = find_stop(&text, &params.stop, shown) {
                text.truncate(cut);
                let (delta, verdict) = hooks.filter(&text[shown..], true)?;
                if !delta.is_empty() && !on_text(&delta, tok) {
                    break StopReason::Cancelled;
                }
                shown = text.len();
                break policy_stop(verdict).unwrap_or(StopReason::Stop);
            }
            let safe = safe_prefix_len(&text, &params.stop);
            let (delta, verdict) = hooks.filter(&text[shown..safe.max(shown)], false)?;
            if !on_text(&delta, tok) {
                break StopReason::Cancelled;
            }
            shown = safe.max(shown);
            if let Some(reason) = policy_stop(verdict) {
                break reason;
            }
            if self.history.len() >= self.n_ctx {
                break StopReason::Length;
            }
            logits = self.eval(&[tok], 1, Logits::Last)?;
        };
        let mut stop_reason = stop_reason;
        if !matches!(stop_reason, StopReason::Stop | StopReason::Cancelled | StopReason::Policy { .. }) {
            text.push_str(&decoder.flush());
            let (delta, verdict) = hooks.filter(&text[shown..], true)?;
            if !delta.is_empty() {
                on_text(&delta, *tokens.last().unwrap_or(&0));
            }
            stop_reason = policy_stop(verdict).unwrap_or(stop_reason);
        }
        if hooks.has_output() {
            text = hooks.take_shown();
        }
        timings.generated_tokens = tokens.len();
        timings.decode_ms = t1.elapsed().as_secs_f64() * 1e3;
        Ok(GenerateOutput { tokens, text, stop_reason, seed: sampler.seed(), timings })
    }
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
fn find_stop(text: &str, stops: &[String], shown: usize) -> Option<usize> {
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| {
            let from = shown.saturating_sub(s.len() - 1);
            let from = (0..=from).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
            text[from..].find(s.as_str()).map(|i| from + i)
        })
        .min()
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
mod tests {
    use super::*;

    #[test]
    fn partial_stop_strings_are_held_back() {
        let stops = vec!["</s>".to_string(), "STOP".to_string()];
        assert_eq!(safe_prefix_len("hello </", &stops), 6);
        assert_eq!(safe_prefix_len("hello ST", &stops), 6);
        assert_eq!(safe_prefix_len("hello", &stops), 5);
        assert_eq!(find_stop("a STOP b", &stops, 0), Some(2));
        assert_eq!(find_stop("a ST", &stops, 0), None);
    }

    #[test]
    fn stop_search_finds_matches_straddling_shown_text() {
        let stops = vec!["abc".to_string()];
        assert_eq!(find_stop("xxabc", &stops, 3), Some(2));
        assert_eq!(find_stop("é abc", &stops, 4), Some(3));
    }
}
