//! Extension points of the generation loop for whatever must judge tokens and text that the
//! engine itself knows nothing about (policy rule sets, constrained output). The engine only
//! calls the hooks; their logic lives with their owners (`hangar-policy`), which depend on the
//! engine and never the reverse.
//!
//! Two stages, in loop order:
//! - a [`LogitsHook`] edits the logits before sampling (removing tokens by setting them to
//!   `-inf`) and is told which token was then sampled;
//! - an [`OutputFilter`] sits between the decoded text and the caller: it may hold text back,
//!   rewrite it, or end generation. What the caller receives, and what
//!   [`GenerateOutput::text`](crate::GenerateOutput) holds, is the filter's output only.
//!
//! A hook error ends the request with [`EngineError::Hook`](crate::EngineError): text never
//! passes a filter unchecked because the filter failed.

use std::borrow::Cow;

/// A hook's failure, carried as text: the engine cannot know the owner's error types.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HookError(pub String);

/// Edits the logits before sampling, once per generated token.
pub trait LogitsHook {
    /// Removes tokens from `logits` (one entry per vocabulary id) by setting them to `-inf`.
    fn mask(&mut self, logits: &mut [f32]) -> Result<(), HookError>;
    /// The token that was sampled after [`mask`](Self::mask).
    fn accept(&mut self, token: u32) -> Result<(), HookError>;
    /// The tokens [`mask`](Self::mask) would remove from `n_vocab` logits now, as a bitset
    /// (bit `id % 32` of word `id / 32`), for a backend that masks on the device
    /// ([`Backend::mask_logits`](crate::backend::Backend::mask_logits)) and reads back only the
    /// token. `None`: this hook can only edit host logits.
    fn banned_bits(&mut self, _n_vocab: usize) -> Result<Option<Vec<u32>>, HookError> {
        Ok(None)
    }
}

/// What an [`OutputFilter`] decided after a piece of text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FilterVerdict {
    /// Keep generating.
    Continue,
    /// End generation as a stop string would ([`StopReason::Stop`](crate::StopReason)).
    Stop,
    /// End generation with [`StopReason::Policy`](crate::StopReason) naming `rule`.
    Deny { rule: String },
}

impl FilterVerdict {
    /// Of two verdicts on one stream, the one that wins: a deny over a stop over continuing.
    pub fn max_severity(self, other: FilterVerdict) -> FilterVerdict {
        match (&self, &other) {
            (FilterVerdict::Deny { .. }, _) => self,
            (_, FilterVerdict::Deny { .. }) => other,
            (FilterVerdict::Stop, _) => self,
            _ => other,
        }
    }
}

/// Sits between decoded text and the caller.
pub trait OutputFilter {
    /// Takes newly decoded text; appends what may now be shown to `out`.
    fn push(&mut self, text: &str, out: &mut String) -> Result<FilterVerdict, HookError>;
    /// The stream ended: decide on everything held back and append what may be shown.
    fn finish(&mut self, out: &mut String) -> Result<FilterVerdict, HookError>;
}

/// The hooks of one generation. The default has none, and then generation behaves exactly as
/// without hooks.
#[derive(Default)]
pub struct Hooks<'a> {
    /// Applied in order before each sampling step.
    pub logits: Vec<&'a mut dyn LogitsHook>,
    /// Applied in order: each filter's output is the next one's input.
    pub output: Vec<&'a mut dyn OutputFilter>,
    /// Everything the filters let through, the text the caller saw.
    shown: String,
}

impl<'a> Hooks<'a> {
    pub(crate) fn mask(&mut self, logits: &mut [f32]) -> Result<(), HookError> {
        self.logits.iter_mut().try_for_each(|h| h.mask(logits))
    }

    /// The union of every logits hook's banned tokens as one bitset for the device (empty,
    /// banning nothing, when there are no logits hooks), or `None` when one of them can only
    /// edit host logits.
    pub fn device_mask(&mut self, n_vocab: usize) -> Result<Option<Vec<u32>>, HookError> {
        let Some((first, rest)) = self.logits.split_first_mut() else { return Ok(Some(Vec::new())) };
        // One hook is the usual case: its bitset is the union, with no copy.
        let Some(mut all) = first.banned_bits(n_vocab)? else { return Ok(None) };
        for h in rest {
            let Some(bits) = h.banned_bits(n_vocab)? else { return Ok(None) };
            all.iter_mut().zip(&bits).for_each(|(a, b)| *a |= b);
        }
        Ok(Some(all))
    }

    pub(crate) fn accept(&mut self, token: u32) -> Result<(), HookError> {
        self.logits.iter_mut().try_for_each(|h| h.accept(token))
    }

    pub(crate) fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    /// Passes `text` through the filters (or through untouched when there are none); with
    /// `finish`, the filters are also told the stream ended.
    pub(crate) fn filter<'t>(&mut self, text: &'t str, finish: bool) -> Result<(Cow<'t, str>, FilterVerdict), HookError> {
        if self.output.is_empty() {
            return Ok((Cow::Borrowed(text), FilterVerdict::Continue));
        }
        let mut cur = text.to_string();
        let mut verdict = FilterVerdict::Continue;
        let mut ending = finish;
        for f in self.output.iter_mut() {
            let mut next = String::new();
            let mut v = f.push(&cur, &mut next)?;
            // Once any filter ends the stream, the filters after it see the end of the stream
            // too and must decide on what they hold.
            if ending && v == FilterVerdict::Continue {
                v = f.finish(&mut next)?;
            }
            ending |= v != FilterVerdict::Continue;
            verdict = verdict.max_severity(v);
            cur = next;
        }
        self.shown.push_str(&cur);
        Ok((Cow::Owned(cur), verdict))
    }

    pub(crate) fn take_shown(&mut self) -> String {
        std::mem::take(&mut self.shown)
    }
}
