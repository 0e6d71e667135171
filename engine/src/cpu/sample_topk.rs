//! The CPU twin of `kernels/src/shaders/sample_topk.wgsl`: the device sampler's chain (see
//! [`DeviceSampling`]) when top-k is on and at most [`DeviceSampling::TOP_K_MAX`], so the two
//! pick the same token.
//!
//! What the kernel and the twin share, and where the twin takes a shortcut:
//! - The top-k is exact under one total order, higher key first and lower id among equal keys
//!   (keys as in `sample.rs`: NaN as -inf, -0 as +0). The kernel gets it in two stages (each
//!   chunk's top k, then the top k of those candidates, by radix select); any chunking gives
//!   the same set, which the twin selects directly in O(vocabulary).
//! - Everything after the top-k runs over the at most k finite survivors, in that order, with
//!   every sum made one term at a time in the same sequence on both sides: top-p's total and
//!   running mass most probable first, then the draw's mass in id order. Only `exp` differs
//!   (the GPU's is a few ulps from the twin's platform-independent one), so the two agree
//!   except where `u`, `top_p` or `min_p` lands within rounding of a boundary between tokens.

use super::sample::{key, unkey, Survivors, NEG_INF_KEY, POS_INF_KEY};
use crate::backend::DeviceSampling;
use crate::sampling::exp_f32;

/// The chain up to the draw (`p.top_k` is in 1..=[`DeviceSampling::TOP_K_MAX`]).
pub(crate) fn survivors(logits: &[f32], p: &DeviceSampling) -> Survivors {
    // (key, id) of the finite tokens; the first +inf is the answer outright, as it ranks first.
    let mut top: Vec<(u32, u32)> = logits.iter().enumerate().map(|(i, &v)| (key(v), i as u32)).filter(|&(k, _)| k > NEG_INF_KEY).collect();
    let order = |a: &(u32, u32), b: &(u32, u32)| b.0.cmp(&a.0).then(a.1.cmp(&b.1));
    if top.len() > p.top_k {
        top.select_nth_unstable_by(p.top_k.saturating_sub(1), order);
        top.truncate(p.top_k);
    }
    top.sort_unstable_by(order);
    let Some(&(best_key, best_id)) = top.first() else {
        return Survivors::Token(0);
    };
    if best_key == POS_INF_KEY {
        return Survivors::Token(best_id);
    }
    let best = unkey(best_key);
    // Untempered probabilities relative to the best, most probable first.
    let probs: Vec<f32> = top.iter().map(|&(k, _)| exp_f32(unkey(k) - best)).collect();
    let mut cut = top.len();
    if p.top_p < 1.0 {
        let goal = p.top_p * probs.iter().fold(0.0f32, |a, &q| a + q);
        let mut mass = 0.0f32;
        // Short of the goal only through rounding: then everything stays.
        if let Some(j) = probs.iter().position(|&q| {
            mass += q;
            mass >= goal
        }) {
            cut = j + 1;
        }
    }
    // Probabilities are never negative, so a floor of 0 keeps them all.
    let floor = if p.min_p > 0.0 { p.min_p } else { 0.0 };
    let inv_t = p.inv_temperature();
    let mut kept: Vec<(usize, f32)> = top[..cut]
        .iter()
        .zip(&probs)
        .filter(|&(_, &q)| q >= floor)
        .map(|(&(k, i), _)| (i as usize, exp_f32((unkey(k) - best) * inv_t)))
        .collect();
    kept.sort_unstable_by_key(|&(i, _)| i);
    Survivors::Weighted(kept)
}

/// The draw from `weights` (id order): the first token where the running mass passes `u` times
/// the kept mass, or past the end (only through rounding) the last one with mass; token 0 when
/// nothing is kept.
pub(crate) fn draw(weights: &[(usize, f32)], u: f32) -> u32 {
    let goal = u.clamp(0.0, 1.0) * weights.iter().fold(0.0f32, |a, &(_, w)| a + w);
    let (mut mass, mut last) = (0.0f32, 0);
    for &(i, w) in weights.iter().filter(|&&(_, w)| w > 0.0) {
        mass += w;
        last = i;
        if mass > goal {
            break;
        }
    }
    last as u32
}
