//! Many patterns fused into one dense DFA (regex-automata). Stepping it costs one table lookup
//! per byte whatever the number of patterns: that is what makes a thousand rules as cheap per
//! token as one.
//!
//! The DFA reports every pattern that matches (`MatchKind::All`), overlapping ones included,
//! and supports both unanchored starts (scanning a stream for matches anywhere) and anchored
//! ones (asking whether a match starts at a given place). regex-automata reports a match one
//! byte late (the byte after the match, or the end of input, decides look-around), which every
//! caller here accounts for.

use regex_automata::dfa::{dense, Automaton, StartKind};
use regex_automata::nfa::thompson;
use regex_automata::util::primitives::StateID;
use regex_automata::util::start;
use regex_automata::{Anchored, MatchKind};

use crate::error::PolicyError;

pub(crate) type Dfa = dense::DFA<Vec<u32>>;

/// One DFA over several patterns plus the facts the stream filter needs about it.
pub struct Fused {
    pub(crate) dfa: Dfa,
    /// The unanchored start state for each look-behind context. Being in one of these means
    /// no pattern has a match in progress: nothing read so far can be part of a future match.
    idle: Vec<StateID>,
}

/// The look-behind contexts regex-automata distinguishes: start of text, a word byte, a
/// non-word byte, `\n`, `\r`.
const CONTEXTS: [Option<u8>; 5] = [None, Some(b'a'), Some(b' '), Some(b'\n'), Some(b'\r')];

impl Fused {
    /// Builds the DFA over `patterns`; `budget` bounds the finished DFA (and four times it the
    /// memory used to build it). `set` names the set in errors.
    pub fn build(set: &str, patterns: &[String], budget: usize, kind: StartKind) -> Result<Fused, PolicyError> {
        let dfa = dense::Builder::new()
            .configure(
                dense::Config::new()
                    .match_kind(MatchKind::All)
                    .start_kind(kind)
                    .dfa_size_limit(Some(budget))
                    // Building needs several times the finished DFA: every state carries the
                    // start states of all patterns while it is determinized.
                    .determinize_size_limit(Some(budget.saturating_mul(4))),
            )
            .thompson(thompson::Config::new().nfa_size_limit(Some(budget)))
            .build_many(patterns)
            .map_err(|e| {
                let nfa_limit = std::error::Error::source(&e)
                    .and_then(|s| s.downcast_ref::<thompson::BuildError>())
                    .is_some_and(|n| n.size_limit().is_some());
                if e.is_size_limit_exceeded() || nfa_limit {
                    PolicyError::StateBudget { set: set.into(), limit: budget, message: e.to_string() }
                } else {
                    PolicyError::Compile { set: set.into(), message: e.to_string() }
                }
            })?;
        let mut idle = Vec::new();
        if kind != StartKind::Anchored {
            for lb in CONTEXTS {
                let s = dfa
                    .start_state(&start::Config::new().anchored(Anchored::No).look_behind(lb))
                    .map_err(|e| PolicyError::Compile { set: set.into(), message: e.to_string() })?;
                if !idle.contains(&s) {
                    idle.push(s);
                }
            }
        }
        Ok(Fused { dfa, idle })
    }

    /// The state to scan a stream from; `prev` is the byte before it, if any.
    pub fn unanchored_start(&self, prev: Option<u8>) -> Result<StateID, String> {
        self.dfa.start_state(&start::Config::new().anchored(Anchored::No).look_behind(prev)).map_err(|e| e.to_string())
    }

    /// The state to test for a match beginning right after `prev`.
    pub fn anchored_start(&self, prev: Option<u8>) -> Result<StateID, String> {
        self.dfa.start_state(&start::Config::new().anchored(Anchored::Yes).look_behind(prev)).map_err(|e| e.to_string())
    }

    #[inline]
    pub fn next(&self, s: StateID, b: u8) -> StateID {
        self.dfa.next_state(s, b)
    }

    #[inline]
    pub fn eoi(&self, s: StateID) -> StateID {
        self.dfa.next_eoi_state(s)
    }

    #[inline]
    pub fn is_idle(&self, s: StateID) -> bool {
        self.idle.contains(&s)
    }

    #[inline]
    pub fn is_match(&self, s: StateID) -> bool {
        self.dfa.is_match_state(s)
    }

    /// Dead or quit: no match can follow.
    #[inline]
    pub fn is_dead(&self, s: StateID) -> bool {
        self.dfa.is_dead_state(s) || self.dfa.is_quit_state(s)
    }

    /// The patterns a match state reports (empty for other states).
    pub fn patterns(&self, s: StateID) -> impl Iterator<Item = usize> + '_ {
        let n = if self.dfa.is_match_state(s) { self.dfa.match_len(s) } else { 0 };
        (0..n).map(move |i| self.dfa.match_pattern(s, i).as_usize())
    }

    pub fn memory_usage(&self) -> usize {
        self.dfa.memory_usage()
    }
}
