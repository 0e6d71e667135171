//! Causal GQA attention over a KV cache stored under a [`KvPolicy`], with sliding window and
//! logit soft-capping. Rows are encoded on write and decoded inside [`KvCache::attend`].

use std::borrow::Cow;

use crate::backend::{AttnParams, BackendError, KvFormat};
use crate::kv::{self, KvPolicy};

/// One sequence's cache: per layer, `n_ctx` rows of `n_head_kv` head-vector records for k and
/// for v, in the layout `kv.rs` describes (the GPU's bytes).
pub struct KvCache {
    pub n_ctx: usize,
    pub kv_dim: usize,
    pub format: KvFormat,
    k: Vec<Vec<u32>>,
    v: Vec<Vec<u32>>,
}

impl KvCache {
    pub fn new(n_layer: usize, kv_dim: usize, n_ctx: usize, format: KvFormat) -> Result<Self, BackendError> {
        let hd = format.head_dim;
        format.policy.check(hd).map_err(|e| BackendError::Shape { op: "kv cache", detail: e.to_string() })?;
        if hd == 0 || kv_dim % hd != 0 {
            return Err(BackendError::Shape { op: "kv cache", detail: format!("kv_dim {kv_dim} is not a multiple of head_dim {hd}") });
        }
        let words = n_ctx * (kv_dim / hd) * format.policy.record_words(hd);
        Ok(KvCache {
            n_ctx,
            kv_dim,
            format,
            k: (0..n_layer).map(|_| vec![0; words]).collect(),
            v: (0..n_layer).map(|_| vec![0; words]).collect(),
        })
    }

    pub fn n_layer(&self) -> usize {
        self.k.len()
    }

    /// Bytes held, which `kv::kv_bytes_per_token` predicts per position.
    pub fn bytes(&self) -> usize {
        4 * (self.k.iter().chain(&self.v).map(Vec::len).sum::<usize>())
    }

    fn row_words(&self) -> usize {
        (self.kv_dim / self.format.head_dim) * self.format.policy.record_words(self.format.head_dim)
    }

    /// Encodes `n` rows of `kv_dim` k and v values at positions `pos0..`.
    pub fn write(&mut self, layer: usize, pos0: usize, k: &[f32], v: &[f32]) {
        let (hd, policy, rw) = (self.format.head_dim, self.format.policy, policy_words(self.format));
        let span = pos0 * self.row_words()..(pos0 + k.len() / self.kv_dim) * self.row_words();
        for (cache, src) in [(&mut self.k[layer], k), (&mut self.v[layer], v)] {
            for (rec, x) in cache[span.clone()].chunks_exact_mut(rw).zip(src.chunks_exact(hd)) {
                kv::encode(policy, x, rec);
            }
        }
    }

    /// Copies positions `pos0..pos0 + n` of every layer from `src`, which must have the same
    /// shape and format (a reused prompt prefix).
    pub fn copy_from(&mut self, src: &KvCache, pos0: usize, n: usize) -> Result<(), BackendError> {
        if (src.kv_dim, src.format, src.n_layer()) != (self.kv_dim, self.format, self.n_layer()) || pos0 + n > self.n_ctx.min(src.n_ctx) {
            return Err(BackendError::Shape { op: "copy_kv", detail: format!("positions {pos0}..+{n} between caches of other shapes") });
        }
        let span = pos0 * self.row_words()..(pos0 + n) * self.row_words();
        for (dst, from) in self.k.iter_mut().chain(self.v.iter_mut()).zip(src.k.iter().chain(&src.v)) {
            dst[span.clone()].copy_from_slice(&from[span.clone()]);
        }
        Ok(())
    }

    /// Positions `0..len` of a layer's k or v as f32 rows of `kv_dim` (rotated for `int4h`).
    /// An f32 record is the value's bits, so the default policy reads the cache in place
    /// instead of copying the whole context every step.
    fn rows<'a>(&self, cache: &'a [u32], len: usize) -> Cow<'a, [f32]> {
        let (hd, policy) = (self.format.head_dim, self.format.policy);
        if policy == KvPolicy::F32 {
            return Cow::Borrowed(bytemuck::cast_slice(&cache[..len * self.kv_dim]));
        }
        let mut out = vec![0.0f32; len * self.kv_dim];
        for (x, rec) in out.chunks_exact_mut(hd).zip(cache.chunks_exact(policy_words(self.format))) {
            kv::decode(policy, rec, x);
        }
        Cow::Owned(out)
    }

    /// Attends `q` (`n` rows of `n_head * head_dim`) over positions `0..=pos0 + row` of the
    /// layer's cache, which already holds this step's k and v.
    pub fn attend(&self, layer: usize, q: &[f32], n: usize, pos0: usize, p: &AttnParams) -> Vec<f32> {
        let len = pos0 + n;
        let (k, v) = (self.rows(&self.k[layer], len), self.rows(&self.v[layer], len));
        if !self.format.policy.hadamard() {
            return attend(q, n, pos0, &k, &v, self.kv_dim, p);
        }
        // Rotate q once per head, and the rotated weighted sum of values back once per head.
        let mut qr = q.to_vec();
        qr.chunks_exact_mut(p.head_dim).for_each(kv::hadamard);
        let mut out = attend(&qr, n, pos0, &k, &v, self.kv_dim, p);
        out.chunks_exact_mut(p.head_dim).for_each(kv::hadamard);
        out
    }
}

fn policy_words(f: KvFormat) -> usize {
    f.policy.record_words(f.head_dim)
}

/// Attends `q` (`n` rows of `n_head * head_dim`) over positions `0..=pos0 + row` of f32 `k`
/// and `v` rows of `kv_dim`. Returns `n` rows of `n_head * head_dim`.
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

/// The policy's effect alone: `attend` over `k`/`v` after a write/read round trip through a
/// one-layer cache of that policy (the CPU twin the GPU kernels are compared against).
#[allow(clippy::too_many_arguments)]
pub fn attend_policy(
    q: &[f32],
    n: usize,
    pos0: usize,
    k: &[f32],
    v: &[f32],
    kv_dim: usize,
    p: &AttnParams,
    policy: KvPolicy,
) -> Result<Vec<f32>, BackendError> {
    let mut c = KvCache::new(1, kv_dim, k.len() / kv_dim.max(1), KvFormat { policy, head_dim: p.head_dim })?;
    c.write(0, 0, k, v);
    Ok(c.attend(0, q, n, pos0, p))
}
