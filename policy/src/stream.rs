//! Fail-closed filtering of an output stream through a set's fused automaton.
//!
//! Every byte steps the unanchored DFA once (constant cost per byte, whatever the number of
//! rules). Text is released only when no rule can still match across the release point: the
//! held tail is the bytes since the DFA was last idle (no match in progress), at most the
//! longest possible match. A set with unbounded rules holds at most `holdback_cap` bytes; when
//! a match in progress outgrows that, the stream ends with POLICY (rule id `holdback_cap`).
//! Any internal inconsistency ends the stream too: text never passes unchecked.
//!
//! When a match ends, actions are applied in precedence order: a `deny` ends the stream before
//! the match (nothing of it is sent), a `stop` likewise but as a stop string, a `redact` marks
//! the match for replacement (overlapping redactions merge into one), a `flag` notes the rule.
//! A match is taken from its earliest possible start, so a redaction covers all of it.

use hangar_engine::constraint::{FilterVerdict, HookError, OutputFilter};
use regex_automata::util::primitives::StateID;

use crate::ruleset::{Compiled, RuleSet};
use crate::rules::Action;

/// The rule id reported when a match in progress outgrows the hold-back cap.
pub const HOLDBACK_CAP_RULE: &str = "holdback_cap";

/// How a stream ended, or that it goes on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Continue,
    Stop { rule: String },
    Deny { rule: String },
}

impl Outcome {
    pub fn is_continue(&self) -> bool {
        *self == Outcome::Continue
    }

    /// The rule that ended the stream, if one did.
    pub fn rule(&self) -> Option<&str> {
        match self {
            Outcome::Continue => None,
            Outcome::Stop { rule } | Outcome::Deny { rule } => Some(rule),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Span {
    start: usize,
    end: usize,
    rule: usize,
}

/// One stream's filter state. Positions are absolute byte offsets in the stream.
pub struct StreamFilter<'a> {
    set: &'a RuleSet,
    c: Option<&'a Compiled>,
    state: Result<StateID, String>,
    /// Bytes read but not yet released; `buf[0]` is at offset `base`.
    buf: Vec<u8>,
    base: usize,
    /// The last released byte (look-behind for matches starting at `base`).
    prev: Option<u8>,
    /// Bytes since the DFA was last idle: no match in progress can be longer.
    run: usize,
    /// Pending redactions, sorted by start, disjoint.
    spans: Vec<Span>,
    flagged: Vec<String>,
    /// Every rule hit of this stream, in order, for the caller's metrics and trace.
    hits: Vec<Hit>,
    done: Option<Outcome>,
}

/// One rule hit of one stream: which set, which rule, what it did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    pub set: String,
    pub rule: String,
    pub action: Action,
}

impl<'a> StreamFilter<'a> {
    pub(crate) fn new(set: &'a RuleSet, c: Option<&'a Compiled>) -> StreamFilter<'a> {
        let state = match c {
            Some(c) => c.fused.unanchored_start(None),
            None => Ok(StateID::ZERO),
        };
        StreamFilter { set, c, state, buf: Vec::new(), base: 0, prev: None, run: 0, spans: Vec::new(), flagged: Vec::new(), hits: Vec::new(), done: None }
    }

    /// Ids of `flag` rules that matched so far, each once.
    pub fn flagged(&self) -> &[String] {
        &self.flagged
    }

    /// Every rule hit so far, in order (a rule matching twice is reported twice).
    pub fn hits(&self) -> &[Hit] {
        &self.hits
    }

    /// Bytes currently held back.
    pub fn held(&self) -> usize {
        self.buf.len()
    }

    fn pos(&self) -> usize {
        self.base + self.buf.len()
    }

    /// Reads `bytes` (valid UTF-8 as a whole stream) and appends what may be shown to `out`.
    pub fn push_bytes(&mut self, bytes: &[u8], out: &mut String) -> Result<Outcome, String> {
        if let Some(o) = &self.done {
            return Ok(o.clone());
        }
        let r = self.push_inner(bytes, out);
        self.settle(r)
    }

    /// Ends the stream: decides on the held tail and appends what may be shown to `out`.
    pub fn finish_bytes(&mut self, out: &mut String) -> Result<Outcome, String> {
        if let Some(o) = &self.done {
            return Ok(o.clone());
        }
        let r = self.finish_inner(out);
        let r = self.settle(r);
        if matches!(r, Ok(Outcome::Continue)) {
            self.done = Some(Outcome::Continue);
        }
        r
    }

    /// Records an ending outcome (or error) so nothing passes afterwards.
    fn settle(&mut self, r: Result<Outcome, String>) -> Result<Outcome, String> {
        match &r {
            Ok(Outcome::Continue) => {}
            Ok(o) => self.done = Some(o.clone()),
            Err(e) => self.done = Some(Outcome::Deny { rule: format!("internal error: {e}") }),
        }
        r
    }

    fn push_inner(&mut self, bytes: &[u8], out: &mut String) -> Result<Outcome, String> {
        let Some(c) = self.c else {
            self.buf.extend_from_slice(bytes);
            self.emit(self.pos(), out)?;
            return Ok(Outcome::Continue);
        };
        let mut state = self.state.clone()?;
        for &b in bytes {
            state = c.fused.next(state, b);
            self.buf.push(b);
            if c.fused.is_match(state) {
                // Reported one byte late: the match ended before `b`.
                let end = self.pos() - 1;
                let o = self.on_match(c, state, end, Some(b), out)?;
                if !o.is_continue() {
                    return Ok(o);
                }
                // A match state is never an idle one, so measure what is still in progress
                // (matches are rare; this keeps the hold-back tight after each).
                self.run = self.live_len(c)?;
            } else {
                self.run = if c.fused.is_idle(state) { 0 } else { self.run + 1 };
            }
        }
        self.state = Ok(state);
        self.release(c, out)
    }

    fn finish_inner(&mut self, out: &mut String) -> Result<Outcome, String> {
        if let Some(c) = self.c {
            let fin = c.fused.eoi(self.state.clone()?);
            if c.fused.is_match(fin) {
                let o = self.on_match(c, fin, self.pos(), None, out)?;
                if !o.is_continue() {
                    return Ok(o);
                }
            }
        }
        self.emit(self.pos(), out)?;
        Ok(Outcome::Continue)
    }

    /// Releases everything no match in progress can reach back into.
    fn release(&mut self, c: &Compiled, out: &mut String) -> Result<Outcome, String> {
        let cap = self.set.settings.holdback_cap;
        let mut hold = c.max_len.map_or(self.run, |m| self.run.min(m));
        if hold > cap {
            // The cheap bound says too much is held; measure the match in progress exactly.
            let exact = self.live_len(c)?;
            self.run = exact;
            hold = c.max_len.map_or(exact, |m| exact.min(m));
            if hold > cap {
                let cut = self.base;
                self.emit(cut, out)?;
                return Ok(Outcome::Deny { rule: HOLDBACK_CAP_RULE.into() });
            }
        }
        let mut upto = self.pos() - hold.min(self.buf.len());
        // A pending redaction is released whole or not at all.
        if let Some(s) = self.spans.iter().find(|s| s.start < upto && s.end > upto) {
            upto = s.start;
        }
        let upto = self.base + char_floor(&self.buf, upto - self.base);
        self.emit(upto, out)?;
        Ok(Outcome::Continue)
    }

    /// Applies the matches a match state reports for a match ending at `end`; `next` is the
    /// byte after the match (`None` at the end of the stream).
    fn on_match(&mut self, c: &Compiled, state: StateID, end: usize, next: Option<u8>, out: &mut String) -> Result<Outcome, String> {
        let mut ending: Option<(Action, usize, usize)> = None; // (action, start, pattern)
        let mut redact = Vec::new();
        for pid in c.fused.patterns(state) {
            c.hit(&self.set.name, pid);
            self.hits.push(Hit { set: self.set.name.clone(), rule: c.rules[pid].spec.id.clone(), action: c.action(pid) });
            match c.action(pid) {
                a @ (Action::Deny | Action::Stop) => {
                    let start = self.match_start(c, pid, end, next)?;
                    let better = match ending {
                        None => true,
                        Some((ba, bs, _)) => (a, start) < (ba, bs),
                    };
                    if better {
                        ending = Some((a, start, pid));
                    }
                }
                Action::Redact => redact.push(pid),
                Action::Flag => {
                    let id = &c.rules[pid].spec.id;
                    if !self.flagged.contains(id) {
                        self.flagged.push(id.clone());
                    }
                }
            }
        }
        if let Some((action, start, pid)) = ending {
            let mut cut = start;
            if let Some(s) = self.spans.iter().find(|s| s.start < cut && s.end > cut) {
                cut = s.start;
            }
            let cut = self.base + char_floor(&self.buf, cut.saturating_sub(self.base));
            self.emit(cut, out)?;
            let rule = c.rules[pid].spec.id.clone();
            return Ok(if action == Action::Deny { Outcome::Deny { rule } } else { Outcome::Stop { rule } });
        }
        for pid in redact {
            let start = self.match_start(c, pid, end, next)?;
            self.add_span(Span { start, end, rule: pid });
        }
        Ok(Outcome::Continue)
    }

    fn add_span(&mut self, mut span: Span) {
        // Overlapping redactions become one, keeping the earliest rule's replacement.
        self.spans.retain(|s| {
            let overlaps = s.start < span.end && span.start < s.end;
            if overlaps {
                if s.start <= span.start {
                    span.rule = s.rule;
                }
                span.start = span.start.min(s.start);
                span.end = span.end.max(s.end);
            }
            !overlaps
        });
        let at = self.spans.partition_point(|s| s.start < span.start);
        self.spans.insert(at, span);
    }

    /// The earliest start of a match of pattern `pid` ending at `end`. It lies in the held
    /// text: the hold-back keeps every match in progress.
    fn match_start(&self, c: &Compiled, pid: usize, end: usize, next: Option<u8>) -> Result<usize, String> {
        let lo = c.rules[pid].max_len.map_or(self.base, |m| end.saturating_sub(m).max(self.base));
        for s in lo..end {
            let mut st = c.fused.anchored_start(self.byte_before(s))?;
            let mut alive = true;
            for &b in &self.buf[s - self.base..end - self.base] {
                st = c.fused.next(st, b);
                if c.fused.is_dead(st) {
                    alive = false;
                    break;
                }
            }
            if !alive {
                continue;
            }
            let fin = match next {
                Some(b) => c.fused.next(st, b),
                None => c.fused.eoi(st),
            };
            if c.fused.patterns(fin).any(|p| p == pid) {
                return Ok(s);
            }
        }
        Err(format!("a match of rule {:?} ending at byte {end} starts before the held text", c.rules[pid].spec.id))
    }

    /// Length of the longest match still in progress (0 when none).
    fn live_len(&self, c: &Compiled) -> Result<usize, String> {
        for s in self.base..self.pos() {
            let mut st = c.fused.anchored_start(self.byte_before(s))?;
            let mut alive = true;
            for &b in &self.buf[s - self.base..] {
                st = c.fused.next(st, b);
                if c.fused.is_dead(st) {
                    alive = false;
                    break;
                }
            }
            // A state that only reports a match already seen (every way on is dead) is over.
            if alive && (c.fused.is_match(c.fused.eoi(st)) || (0..=255u8).any(|b| !c.fused.is_dead(c.fused.next(st, b)))) {
                return Ok(self.pos() - s);
            }
        }
        Ok(0)
    }

    fn byte_before(&self, pos: usize) -> Option<u8> {
        if pos > self.base {
            Some(self.buf[pos - 1 - self.base])
        } else {
            self.prev
        }
    }

    /// Sends the held bytes before `upto`, with finished redactions replaced.
    fn emit(&mut self, upto: usize, out: &mut String) -> Result<(), String> {
        let n = upto.saturating_sub(self.base).min(self.buf.len());
        if n == 0 {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(n);
        let mut i = 0;
        let c = self.c;
        for s in self.spans.iter().filter(|s| s.end <= upto) {
            let (a, b) = (s.start - self.base, s.end - self.base);
            bytes.extend_from_slice(&self.buf[i..a]);
            let rule = c.map(|c| &c.rules[s.rule].spec);
            let mask = rule.and_then(|r| r.redaction.as_deref()).unwrap_or(&self.set.settings.redaction);
            bytes.extend_from_slice(mask.as_bytes());
            i = b;
        }
        bytes.extend_from_slice(&self.buf[i..n]);
        let text = std::str::from_utf8(&bytes).map_err(|e| format!("released text is not UTF-8: {e}"))?;
        out.push_str(text);
        self.prev = Some(self.buf[n - 1]);
        self.buf.drain(..n);
        self.base += n;
        self.spans.retain(|s| s.end > upto);
        Ok(())
    }
}

/// The largest `j <= i` where `buf[..j]` ends on a whole UTF-8 character (`buf` starts on one).
fn char_floor(buf: &[u8], i: usize) -> usize {
    let i = i.min(buf.len());
    let Some(k) = buf[..i].iter().rposition(|&b| b & 0xC0 != 0x80) else { return 0 };
    let len = match buf[k] {
        b if b < 0x80 => 1,
        b if b >= 0xF0 => 4,
        b if b >= 0xE0 => 3,
        _ => 2,
    };
    if k + len > i { k } else { i }
}

impl OutputFilter for StreamFilter<'_> {
    fn push(&mut self, text: &str, out: &mut String) -> Result<FilterVerdict, HookError> {
        self.push_bytes(text.as_bytes(), out).map(verdict).map_err(HookError)
    }

    fn finish(&mut self, out: &mut String) -> Result<FilterVerdict, HookError> {
        self.finish_bytes(out).map(verdict).map_err(HookError)
    }
}

fn verdict(o: Outcome) -> FilterVerdict {
    match o {
        Outcome::Continue => FilterVerdict::Continue,
        Outcome::Stop { .. } => FilterVerdict::Stop,
        Outcome::Deny { rule } => FilterVerdict::Deny { rule },
    }
}
