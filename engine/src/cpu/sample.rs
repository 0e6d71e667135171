//! The CPU twin of `kernels/src/shaders/sample.wgsl`: the device's sampler chain (see
//! [`DeviceSampling`]) step by step as the kernel computes it, so the two pick the same token.
//! That kernel is the general path, for top-k off or above [`DeviceSampling::TOP_K_MAX`];
//! [`sample`] sends the other draws to `sample_topk.rs`, the twin of the two-stage kernel.
//!
//! Structure shared with the kernel, and why the twin may take shortcuts:
//! - Logits are read as order-preserving `u32` keys with NaN as -inf and -0 as +0, so every
//!   comparison (maximum, top-k threshold, ties) is exact integer work on both sides.
//! - The top-k threshold is the k-th largest key. The kernel bisects over keys for it (one
//!   workgroup has no room to sort); the bisection's fixed point is exactly that key, which the
//!   twin selects directly. Ties at it are cut by token id (the kernel bisects over the id).
//! - Top-p bisects over probability bits for the largest threshold whose kept mass reaches
//!   `top_p` of the total, then over ids for the fewest ties at it that still reach it, on
//!   both sides, with sums in the kernel's order: lane `i % 256` accumulates in id order, then
//!   a halving tree adds the lanes. Tokens outside the candidates add +0, which is exact, so
//!   the twin skips them.
//! - The draw walks 256 contiguous chunks of the row, each summed in id order, then the tokens
//!   of the chunk where the running mass passes `u` times the kept mass.
//!
//! What is not shared is `exp`: the GPU's is a few ulps from the twin's (which is platform
//! independent, like the host sampler's). So the two agree except where `u`, `top_p` or `min_p`
//! lands within rounding of a boundary between tokens.

use crate::backend::DeviceSampling;
use crate::sampling::exp_f32;

/// Invocations of the kernel's one workgroup: the width of its sums' lanes and of the draw's
/// chunking.
const WG: usize = 256;
/// The keys of -inf and +inf.
pub(super) const NEG_INF_KEY: u32 = 0x007F_FFFF;
pub(super) const POS_INF_KEY: u32 = 0xFF80_0000;

/// The logit as the sampler sees it, as a key whose `u32` order is the float order.
pub(super) fn key(v: f32) -> u32 {
    let b = match v.to_bits() {
        b if b & 0x7FFF_FFFF > 0x7F80_0000 => 0xFF80_0000, // NaN counts as -inf
        0x8000_0000 => 0,                                  // -0 as +0, so equal keys are equal values
        b => b,
    };
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

pub(super) fn unkey(k: u32) -> f32 {
    f32::from_bits(if k & 0x8000_0000 != 0 { k & 0x7FFF_FFFF } else { !k })
}

/// The kernel's workgroup sum of `terms` (token id, value): lanes by id modulo [`WG`], each in
/// id order, then the halving tree.
fn wg_sum(terms: impl Iterator<Item = (usize, f32)>) -> f32 {
    let mut lanes = [0.0f32; WG];
    for (i, v) in terms {
        lanes[i % WG] += v;
    }
    let mut s = WG / 2;
    while s > 0 {
        for l in 0..s {
            lanes[l] += lanes[l + s];
        }
        s /= 2;
    }
    lanes[0]
}

/// The top-k cut: keys above the first value are kept, and keys equal to it below the id of
/// the second. `(0, n)` keeps everything.
fn top_k_cut(keys: &[u32], k: usize) -> (u32, usize) {
    let n = keys.len();
    if k == 0 || k >= n {
        return (0, n);
    }
    let mut sorted = keys.to_vec();
    let (_, &mut kth, _) = sorted.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
    let above = keys.iter().filter(|&&c| c > kth).count();
    // `above < k`: kth is the k-th largest. The first `k - above` ties (by id) complete the k.
    let need = k - above;
    let cut = keys.iter().enumerate().filter(|(_, &c)| c == kth).nth(need - 1).map_or(n, |(i, _)| i + 1);
    (kth, cut)
}

/// What the chain leaves before the draw.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Survivors {
    /// Decided outright: the first +inf logit, or token 0 when nothing is finite.
    Token(u32),
    /// The kept tokens in id order with their draw weights, softmax(logit / temperature)
    /// unnormalised.
    Weighted(Vec<(usize, f32)>),
}

/// The CPU twin of the device sampler: one token from `logits` under `p` with `u` uniform in
/// [0, 1), as `sample_topk.wgsl` draws it when top-k is on and at most
/// [`DeviceSampling::TOP_K_MAX`] and as `sample.wgsl` does otherwise. Greedy settings give
/// [`super::ops::argmax`].
pub fn sample(logits: &[f32], p: &DeviceSampling, u: f32) -> u32 {
    if p.is_greedy() || logits.is_empty() {
        return super::ops::argmax(logits);
    }
    match (survivors(logits, p), p.is_top_k_bounded()) {
        (Survivors::Token(t), _) => t,
        (Survivors::Weighted(w), true) => super::sample_topk::draw(&w, u),
        (Survivors::Weighted(w), false) => draw(&w, logits.len(), u),
    }
}

/// The chain up to the draw, on the path the device takes for `p`.
pub(crate) fn survivors(logits: &[f32], p: &DeviceSampling) -> Survivors {
    if p.is_top_k_bounded() {
        super::sample_topk::survivors(logits, p)
    } else {
        general_survivors(logits, p)
    }
}

/// `sample.wgsl`'s chain up to the draw: +inf and NaN, top-k, top-p, min-p, then the draw
/// weights.
fn general_survivors(logits: &[f32], p: &DeviceSampling) -> Survivors {
    let keys: Vec<u32> = logits.iter().map(|&v| key(v)).collect();
    let max_key = keys.iter().copied().max().unwrap_or(NEG_INF_KEY);
    if max_key == POS_INF_KEY {
        return Survivors::Token(keys.iter().position(|&k| k == POS_INF_KEY).unwrap_or(0) as u32);
    }
    if max_key == NEG_INF_KEY {
        return Survivors::Token(0);
    }
    let m = unkey(max_key);
    let (kth, cut) = top_k_cut(&keys, p.top_k);
    // Finite top-k survivors with their untempered probability relative to the best.
    let cands: Vec<(usize, f32)> = keys
        .iter()
        .enumerate()
        .filter(|&(i, &k)| k > NEG_INF_KEY && (k > kth || (k == kth && i < cut)))
        .map(|(i, &k)| (i, exp_f32(unkey(k) - m)))
        .collect();
    let (mut p_bits, mut p_cut) = (0u32, logits.len());
    if p.top_p < 1.0 {
        let goal = p.top_p * wg_sum(cands.iter().copied());
        let (mut lo, mut hi) = (0u32, 1.0f32.to_bits()); // no probability exceeds exp(0)
        for _ in 0..31 {
            let mid = lo + ((hi - lo) >> 1) + ((hi - lo) & 1);
            if wg_sum(cands.iter().copied().filter(|c| c.1.to_bits() >= mid)) >= goal {
                lo = mid;
            } else {
                hi = mid.wrapping_sub(1);
            }
        }
        p_bits = lo;
        // Ties at the threshold: the lowest ids whose mass completes the goal. (The kernel
        // counts tokens outside the candidates too, as probability 0, which the bits skip.)
        let tied = cands.iter().filter(|c| c.1.to_bits() == p_bits).count();
        if tied > 1 && p_bits != 0 {
            let (mut a, mut b) = (0usize, logits.len());
            for _ in 0..32 {
                let mid = a + ((b - a) >> 1);
                let kept = cands.iter().copied().filter(|&(i, q)| q.to_bits() > p_bits || (q.to_bits() == p_bits && i < mid));
                if wg_sum(kept) >= goal {
                    b = mid;
                } else {
                    a = mid + 1;
                }
            }
            p_cut = a;
        }
    }
    // Probabilities are never negative, so a floor of 0 keeps them all.
    let floor = if p.min_p > 0.0 { p.min_p } else { 0.0 };
    let inv_t = p.inv_temperature();
    Survivors::Weighted(
        cands
            .iter()
            .filter(|&&(i, q)| (q.to_bits() > p_bits || (q.to_bits() == p_bits && i < p_cut)) && q >= floor)
            .map(|&(i, _)| (i, exp_f32((unkey(keys[i]) - m) * inv_t)))
            .collect(),
    )
}

/// The draw from `weights` (id order) over a row of `n`: the chunk where the running mass
/// passes `u` times the kept mass, then the token in it.
fn draw(weights: &[(usize, f32)], n: usize, u: f32) -> u32 {
    let chunk = n.div_ceil(WG);
    let mut sums = [0.0f32; WG];
    for &(i, w) in weights {
        sums[i / chunk] += w;
    }
    let kept = sums.iter().fold(0.0f32, |a, &s| a + s);
    let goal = u.clamp(0.0, 1.0) * kept;
    let (mut acc, mut chosen, mut last_nonempty) = (0.0f32, None, 0);
    for (j, &s) in sums.iter().enumerate() {
        if s > 0.0 {
            last_nonempty = j;
            if chosen.is_none() && acc + s > goal {
                chosen = Some(j);
            }
        }
        if chosen.is_none() {
            acc += s;
        }
    }
    // Past the end only through rounding: the last chunk with mass, from the mass before it.
    let c = chosen.unwrap_or_else(|| {
        acc -= sums[last_nonempty];
        last_nonempty
    });
    let (b0, b1) = ((c * chunk).min(n), ((c + 1) * chunk).min(n));
    let mut last = b0;
    for &(i, w) in weights.iter().filter(|&&(i, w)| (b0..b1).contains(&i) && w > 0.0) {
        acc += w;
        last = i;
        if acc > goal {
            break;
        }
    }
    last as u32
}
