//! Masking before sampling: tokens whose text would complete a `deny` match are removed from
//! the logits, so denied text is not even generated. The output filter still checks every
//! byte; masking only keeps the model from walking into a denial.
//!
//! The banned tokens depend only on the automaton state the text so far left the DFA in, so
//! they are computed once per (set, vocabulary, state) by one walk of the vocabulary trie and
//! kept. The mask is applied to the CPU logits (the GPU backend does not yet expose a
//! device-side mask).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hangar_engine::constraint::{HookError, LogitsHook};
use regex_automata::util::primitives::StateID;

use crate::rules::Action;
use crate::ruleset::{Compiled, RuleSet};
use crate::vocab::{StateIndex, TokenSet, Vocab};

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
        let mut stack = vec![(0u32, s)];
        while let Some((node, st)) = stack.pop() {
            let nd = &v.nodes[node as usize];
            // A match ending exactly at the token's end is only reported by what follows;
            // the end of input stands in for it (conservatively, for look-ahead assertions).
            if nd.ends > nd.lo && self.denies(f.eoi(st)) {
                v.sorted[nd.lo as usize..nd.ends as usize].iter().for_each(|&t| set.insert(t));
            }
            for &(b, child) in v.children(node) {
                let next = f.next(st, b);
                if self.denies(next) {
                    let c = &v.nodes[child as usize];
                    v.sorted[c.lo as usize..c.hi as usize].iter().for_each(|&t| set.insert(t));
                } else {
                    stack.push((child, next));
                }
            }
        }
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
}
