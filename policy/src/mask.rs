//! Masking before sampling: tokens whose text would complete a `deny` match are removed from
//! the logits, so denied text is not even generated. The output filter still checks every
//! byte; masking only keeps the model from walking into a denial.
//!
//! The banned tokens depend only on the automaton state the text so far left the DFA in, so
//! they are computed once per (set, vocabulary, state) by one walk of the vocabulary trie and
//! kept. It is handed to the engine either as an edit of host logits or, for greedy decoding,
//! as a bitset the backend applies on the device (`Backend::mask_logits`, `mask.wgsl`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hangar_engine::constraint::{HookError, LogitsHook};
use regex_automata::util::primitives::StateID;

use crate::rules::Action;
use crate::ruleset::{Compiled, RuleSet};
use crate::vocab::{StateIndex, Step, TokenSet, Vocab};

/// Per-vocabulary banned-token indexes of one set, keyed by [`Vocab`]'s content key.
#[derive(Default)]
pub(crate) struct MaskIndexes(Mutex<HashMap<u64, Arc<StateIndex>>>);

impl MaskIndexes {
    fn get(&self, vocab: &Vocab) -> Arc<StateIndex> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(m.entry(vocab.key).or_insert_with(|| Arc::new(StateIndex::new())))
    }
}

/// One response's deny mask.
pub struct DenyMask<'a> {
    c: &'a Compiled,
    vocab: Arc<Vocab>,
    index: Arc<StateIndex>,
    state: StateID,
}

impl<'a> DenyMask<'a> {
    /// `None` when the set has no output deny rules.
    pub fn new(set: &'a RuleSet, vocab: Arc<Vocab>) -> Result<Option<DenyMask<'a>>, String> {
        let Some(c) = set.output.as_ref() else { return Ok(None) };
        if !c.rules.iter().any(|r| r.spec.action == Action::Deny) {
            return Ok(None);
        }
        let index = set.mask_indexes.get(&vocab);
        let state = c.fused.unanchored_start(None)?;
        Ok(Some(DenyMask { c, vocab, index, state }))
    }

    fn denies(&self, s: StateID) -> bool {
        self.c.fused.is_match(s) && self.c.fused.patterns(s).any(|p| self.c.action(p) == Action::Deny)
    }

    /// The tokens that would complete a deny match from state `s`.
    fn banned(&self, s: StateID) -> TokenSet {
        let (f, v) = (&self.c.fused, &*self.vocab);
        let mut set = TokenSet::new(v.len());
        // A match ending exactly at a token's end is only reported by what follows; the end of
        // input stands in for it (conservatively, for look-ahead assertions).
        v.walk(
            s,
            |st, b| {
                let next = f.next(st, b);
                if self.denies(next) { Step::All } else { Step::Into(next) }
            },
            |toks, st| {
                // `None`: the whole subtree already holds a match.
                if st.is_none_or(|st| self.denies(f.eoi(st))) {
                    toks.iter().for_each(|&t| set.insert(t));
                }
            },
        );
        set
    }
}

impl LogitsHook for DenyMask<'_> {
    fn mask(&mut self, logits: &mut [f32]) -> Result<(), HookError> {
        let state = self.state;
        let banned = self.index.get_or(state.as_u32(), || self.banned(state));
        let survivors = logits.iter().enumerate().filter(|&(i, l)| *l > f32::NEG_INFINITY && !banned.contains(i as u32)).count();
        // With nothing left the sampler could not choose; leave the logits and let the output
        // filter deny instead.
        if survivors > 0 {
            for (i, l) in logits.iter_mut().enumerate() {
                if banned.contains(i as u32) {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
        Ok(())
    }

    fn accept(&mut self, token: u32) -> Result<(), HookError> {
        for &b in self.vocab.bytes(token) {
            self.state = self.c.fused.next(self.state, b);
        }
        Ok(())
    }

    /// The device cannot see whether anything would survive, so a state that bans the whole
    /// vocabulary is left to the host path (which then lets the output filter deny).
    fn banned_bits(&mut self, n_vocab: usize) -> Result<Option<Vec<u32>>, HookError> {
        let state = self.state;
        let banned = self.index.get_or(state.as_u32(), || self.banned(state));
        if banned.count() >= n_vocab {
            return Ok(None);
        }
        Ok(Some(banned.to_bits32(n_vocab)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masking set denying "abc", and a vocabulary of its pieces.
    fn abc_case() -> (RuleSet, Arc<Vocab>) {
        let set = RuleSet::from_toml("t", "[settings]\nmask = true\n[[rule]]\nid = 'd'\npattern = 'abc'\naction = 'deny'\n").expect("set");
        let toks: Vec<&[u8]> = vec![b"a", b"b", b"c", b"abc", b"bc", b"x", b"ab", b"cx"];
        (set, Arc::new(Vocab::from_bytes(toks.iter().map(|t| t.to_vec()).collect(), vec![])))
    }

    #[test]
    fn tokens_that_would_complete_a_denied_match_are_masked_and_others_kept() {
        let (set, vocab) = abc_case();
        let mut m = DenyMask::new(&set, vocab).expect("mask").expect("set has deny rules");
        let masked = |m: &mut DenyMask<'_>| {
            let mut l = vec![0.0f32; 8];
            m.mask(&mut l).expect("mask");
            (0..8u32).filter(|&i| l[i as usize] == f32::NEG_INFINITY).collect::<Vec<_>>()
        };
        assert_eq!(masked(&mut m), [3]);
        // After "ab": "c" and "cx" complete the match, and "abc" holds one of its own.
        m.accept(6).expect("accept");
        assert_eq!(masked(&mut m), [2, 3, 7]);
        m.accept(5).expect("accept");
        assert_eq!(masked(&mut m), [3]);
    }

    #[test]
    fn the_device_bitset_bans_exactly_what_the_host_mask_removes() {
        let (set, vocab) = abc_case();
        let mut m = DenyMask::new(&set, vocab).expect("mask").expect("set has deny rules");
        for tok in [6, 5, 0, 1] {
            let mut host = vec![0.5f32; 8];
            m.mask(&mut host).expect("mask");
            let mut device = vec![0.5f32; 8];
            let bits = m.banned_bits(8).expect("bits").expect("a device mask");
            hangar_engine::cpu::ops::mask_logits(&mut device, 8, &bits);
            assert_eq!(host, device, "after token {tok}");
            m.accept(tok).expect("accept");
        }
    }
}
