//! Row-wise math of the CPU reference. These are also the CPU twins the GPU kernels are
//! tested against, so they favour llama.cpp's arithmetic (f64 accumulation in norms) over
//! speed where the two disagree.

use crate::backend::NormParams;
use crate::spec::{Activation, NormKind, RopeConfig, RopeStyle};

/// Normalizes each `p.group`-sized run of `x` in place, then applies weight and bias (both of
/// length `p.group`, or of the full row when the caller passes row-length weights).
pub fn norm(x: &mut [f32], w: Option<&[f32]>, b: Option<&[f32]>, p: NormParams) {
    for chunk in x.chunks_mut(p.group) {
        match p.kind {
            NormKind::Rms => {
                let ss: f64 = chunk.iter().map(|&v| (v as f64) * (v as f64)).sum();
                let scale = (1.0 / (ss / chunk.len() as f64 + p.eps as f64).sqrt()) as f32;
                chunk.iter_mut().for_each(|v| *v *= scale);
            }
            NormKind::Layer => {
                let mean = (chunk.iter().map(|&v| v as f64).sum::<f64>() / chunk.len() as f64) as f32;
                chunk.iter_mut().for_each(|v| *v -= mean);
                let var: f64 = chunk.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / chunk.len() as f64;
                let scale = (1.0 / (var + p.eps as f64).sqrt()) as f32;
                chunk.iter_mut().for_each(|v| *v *= scale);
            }
        }
        if let Some(w) = w {
            for (v, &g) in chunk.iter_mut().zip(w) {
                *v *= if p.add_one { g + 1.0 } else { g };
            }
        }
        if let Some(b) = b {
            for (v, &c) in chunk.iter_mut().zip(b) {
                *v += c;
            }
        }
    }
}

/// Rotates one row of heads at position `pos`; `inv_freq[i]` is pair i's frequency.
pub fn rope_row(row: &mut [f32], head_dim: usize, pos: usize, rope: &RopeConfig, inv_freq: &[f32]) {
    rope_row_at(row, head_dim, pos as f32, rope, inv_freq);
}

/// [`rope_row`] at any real position: a negative one rotates back, which is how a context
/// shift moves cached keys to earlier positions (rotations add).
pub fn rope_row_at(row: &mut [f32], head_dim: usize, pos: f32, rope: &RopeConfig, inv_freq: &[f32]) {
    let half = rope.n_rot / 2;
    for head in row.chunks_mut(head_dim) {
        for (i, &f) in inv_freq.iter().enumerate().take(half) {
            let theta = pos * rope.freq_scale * f;
            let (sin, cos) = theta.sin_cos();
            let (a, b) = match rope.style {
                RopeStyle::Normal => (2 * i, 2 * i + 1),
                RopeStyle::Neox => (i, i + half),
            };
            let (x0, x1) = (head[a], head[b]);
            head[a] = x0 * cos - x1 * sin;
            head[b] = x0 * sin + x1 * cos;
        }
    }
}

/// The frequency table for `rope`, computed once per call rather than per element.
pub fn rope_inv_freq(rope: &RopeConfig) -> Vec<f32> {
    (0..rope.n_rot / 2).map(|i| rope.inv_freq(i)).collect()
}

pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// GELU, tanh approximation (what ggml and the gated Gemma FFN use).
pub fn gelu(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + 0.044715 * x * x)).tanh())
}

/// `act(gate) * up` in place in `up`, or `act(up)` without a gate.
pub fn ffn_act(gate: Option<&[f32]>, up: &mut [f32], act: Activation) {
    match (gate, act) {
        (Some(g), Activation::SwiGlu) => up.iter_mut().zip(g).for_each(|(u, &g)| *u *= silu(g)),
        (Some(g), Activation::GeGlu) => up.iter_mut().zip(g).for_each(|(u, &g)| *u *= gelu(g)),
        (_, Activation::Gelu) | (None, _) => up.iter_mut().for_each(|u| *u = gelu(*u)),
    }
}

/// Numerically stable softmax in place.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    x.iter_mut().for_each(|v| *v *= inv);
}

/// Index of the largest value (the first on ties; NaN never wins).
pub fn argmax(x: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] || x[best].is_nan() {
            best = i;
        }
    }
    best as u32
}

/// The CPU twin of `mask.wgsl`: every column `c` of each `cols`-wide row of `x` whose bit
/// `c` is set in `banned` (bit `c % 32` of word `c / 32`) becomes `-inf`; columns past the
/// bitset's end are kept.
pub fn mask_logits(x: &mut [f32], cols: usize, banned: &[u32]) {
    if banned.is_empty() {
        return;
    }
    for row in x.chunks_mut(cols.max(1)) {
        for (c, v) in row.iter_mut().enumerate() {
            if banned.get(c / 32).is_some_and(|w| w >> (c % 32) & 1 == 1) {
                *v = f32::NEG_INFINITY;
            }
        }
    }
}

/// The CPU twin of mask.wgsl's edit mode (`Backend::edit_logits`): each edit's element of `x`
/// becomes `l + add`, scaled by `rep` where that is `<= 0` and by `inv_rep` elsewhere, less
/// `sub`. Edits past the end of `x` are ignored.
pub fn edit_logits(x: &mut [f32], edits: &[crate::backend::LogitEdit]) {
    for e in edits {
        if let Some(v) = x.get_mut(e.index as usize) {
            let l = *v + e.add;
            let l = if l <= 0.0 { l * e.rep } else { l * e.inv_rep };
            *v = l - e.sub;
        }
    }
}

pub use super::sample::sample;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_gives_unit_rms_per_group() {
        let mut x = vec![1.0, 2.0, 3.0, 4.0, -2.0, 2.0, -2.0, 2.0];
        norm(&mut x, None, None, NormParams { kind: NormKind::Rms, eps: 0.0, add_one: false, group: 4 });
        for g in x.chunks(4) {
            let rms = (g.iter().map(|v| v * v).sum::<f32>() / 4.0).sqrt();
            assert!((rms - 1.0).abs() < 1e-6);
        }
        assert_eq!(&x[4..], &[-1.0, 1.0, -1.0, 1.0]);
    }

    #[test]
    fn layer_norm_centres_and_applies_bias() {
        let mut x = vec![1.0, 3.0];
        norm(&mut x, Some(&[2.0, 2.0]), Some(&[0.5, 0.5]), NormParams { kind: NormKind::Layer, eps: 0.0, add_one: false, group: 2 });
        assert_eq!(x, vec![-1.5, 2.5]);
    }

    #[test]
    fn rope_at_position_zero_is_identity_and_preserves_norm_elsewhere() {
        let rope = RopeConfig { style: RopeStyle::Neox, n_rot: 4, freq_base: 10000.0, freq_scale: 1.0, llama3: None, freq_factors: None };
        let f = rope_inv_freq(&rope);
        let orig = vec![0.3, -1.2, 0.7, 2.0, 5.0, 6.0];
        let mut x = orig.clone();
        rope_row(&mut x, 6, 0, &rope, &f);
        assert_eq!(x, orig);
        rope_row(&mut x, 6, 17, &rope, &f);
        let n = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>();
        assert!((n(&x[..4]) - n(&orig[..4])).abs() < 1e-5);
        assert_eq!(&x[4..], &orig[4..], "dimensions past n_rot are not rotated");
    }
}
