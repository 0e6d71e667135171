//! Causal GQA attention over an f32 KV cache, with sliding window and logit soft-capping.

use crate::backend::AttnParams;

/// One sequence's cache: per layer, `n_ctx` rows of `kv_dim` for k and for v.
pub struct KvCache {
    pub n_ctx: usize,
    pub kv_dim: usize,
    pub k: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
}

impl KvCache {
    pub fn new(n_layer: usize, kv_dim: usize, n_ctx: usize) -> Self {
        KvCache {
            n_ctx,
            kv_dim,
            k: (0..n_layer).map(|_| vec![0.0; n_ctx * kv_dim]).collect(),
            v: (0..n_layer).map(|_| vec![0.0; n_ctx * kv_dim]).collect(),
        }
    }
}

/// Attends `q` (`n` rows of `n_head * head_dim`) over positions `0..=pos0 + row` of the
/// layer's cache, which already holds this step's k and v. Returns `n` rows of
/// `n_head * head_dim`.
pub fn attend(q: &[f32], n: usize, pos0: usize, k: &[f32], v: &[f32], kv_dim: usize, p: &AttnParams) -> Vec<f32> {
    let hd = p.head_dim;
    let group = p.n_head / p.n_head_kv;
    let mut out = vec![0.0f32; n * p.n_head * hd];
    crate::threads::Team::global().for_each_chunk_mut(&mut out, hd, |idx, o| {
        let mut scores = Vec::with_capacity(pos0 + n);
        let scores = &mut scores;
        let (t, h) = (idx / p.n_head, idx % p.n_head);
        let pos = pos0 + t;
        let start = p.window.map_or(0, |w| (pos + 1).saturating_sub(w));
        let qh = &q[t * p.n_head * hd + h * hd..][..hd];
        let koff = (h / group) * hd;
        scores.clear();
        for j in start..=pos {
            let kj = &k[j * kv_dim + koff..][..hd];
            let mut s = qh.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>() * p.scale;
            if let Some(cap) = p.softcap {
                s = cap * (s / cap).tanh();
            }
            scores.push(s);
        }
        super::ops::softmax(scores);
        for (j, &w) in (start..=pos).zip(scores.iter()) {
            let vj = &v[j * kv_dim + koff..][..hd];
            o.iter_mut().zip(vj).for_each(|(acc, &x)| *acc += w * x);
        }
    });
    out
}
