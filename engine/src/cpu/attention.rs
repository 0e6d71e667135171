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
    /// Per layer, the centering vector subtracted from every key (`kv.rs`, key centering),
    /// set by the layer's first write when the policy centers; empty otherwise.
    center: Vec<Vec<f32>>,
    /// Per layer, the int4 policies' exact window (`kv::Ring`); empty otherwise.
    ring: Vec<Vec<u32>>,
    /// The last write's first position and its k and v rows in the storage space, for the
    /// ring (int4 only).
    staged: (usize, Vec<f32>, Vec<f32>),
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
            center: vec![Vec::new(); n_layer],
            ring: (0..n_layer).map(|_| vec![0; kv::Ring::of(format.policy, kv_dim).map_or(0, kv::Ring::words)]).collect(),
            staged: Default::default(),
        })
    }

    pub fn n_layer(&self) -> usize {
        self.k.len()
    }

    /// Bytes held: `kv::kv_bytes_per_token` per position plus `kv::kv_bytes_per_sequence`.
    pub fn bytes(&self) -> usize {
        4 * (self.k.iter().chain(&self.v).map(Vec::len).sum::<usize>()) + kv::kv_bytes_per_sequence(self.format.policy, self.n_layer(), self.kv_dim)
    }

    fn row_words(&self) -> usize {
        (self.kv_dim / self.format.head_dim) * self.format.policy.record_words(self.format.head_dim)
    }

    /// Encodes `n` rows of `kv_dim` k and v values at positions `pos0..`. With `center`, the
    /// write at position 0 sets the layer's centering vector and every write subtracts it.
    /// Under int4 the rows are also staged for the exact window, which [`KvCache::attend`]
    /// fills as it goes.
    pub fn write(&mut self, layer: usize, pos0: usize, k: &[f32], v: &[f32], center: bool) {
        let (hd, policy, rw) = (self.format.head_dim, self.format.policy, policy_words(self.format));
        let span = pos0 * self.row_words()..(pos0 + k.len() / self.kv_dim) * self.row_words();
        if center && pos0 == 0 {
            self.center[layer] = kv::key_center(k, self.kv_dim);
        }
        let c = if center { self.center[layer].as_slice() } else { &[] };
        let ring = !self.ring[layer].is_empty();
        let (staged_pos0, staged_k, staged_v) = &mut self.staged;
        *staged_pos0 = pos0;
        staged_k.clear();
        staged_v.clear();
        // Under int4 the vector goes into the storage space (rotated under int4h) once, for its
        // record and its exact copy both.
        let put = |x: &mut [f32], rec: &mut [u32], staged: &mut Vec<f32>| {
            if ring {
                if policy.hadamard() {
                    kv::hadamard(x);
                }
                kv::encode_stored(policy, x, rec);
                staged.extend_from_slice(x);
            } else {
                kv::encode(policy, x, rec);
            }
        };
        let mut buf = vec![0.0f32; hd];
        for (i, (rec, x)) in self.k[layer][span.clone()].chunks_exact_mut(rw).zip(k.chunks_exact(hd)).enumerate() {
            buf.copy_from_slice(x);
            if !c.is_empty() {
                let m = &c[(i * hd) % self.kv_dim..][..hd];
                buf.iter_mut().zip(m).for_each(|(b, m)| *b -= m);
            }
            put(&mut buf, rec, staged_k);
        }
        for (rec, x) in self.v[layer][span].chunks_exact_mut(rw).zip(v.chunks_exact(hd)) {
            buf.copy_from_slice(x);
            put(&mut buf, rec, staged_v);
        }
    }

    /// Copies positions `pos0..pos0 + n` of every layer from `src`, which must have the same
    /// shape and format (a reused prompt prefix).
    pub fn copy_from(&mut self, src: &KvCache, pos0: usize, n: usize) -> Result<(), BackendError> {
        if (src.kv_dim, src.format, src.n_layer()) != (self.kv_dim, self.format, self.n_layer()) || pos0 + n > self.n_ctx.min(src.n_ctx) {
            return Err(BackendError::Shape { op: "copy_kv", detail: format!("positions {pos0}..+{n} between caches of other shapes") });
        }
        if let Some(r) = kv::Ring::of(self.format.policy, self.kv_dim) {
            // The copy's next query reads the newest positions exactly, from the source's ring
            // (which holds them unless it has gone on past them).
            r.check_copy(&src.ring, pos0 + n)?;
            self.ring.clone_from(&src.ring);
        }
        let span = pos0 * self.row_words()..(pos0 + n) * self.row_words();
        for (dst, from) in self.k.iter_mut().chain(self.v.iter_mut()).zip(src.k.iter().chain(&src.v)) {
            dst[span.clone()].copy_from_slice(&from[span.clone()]);
        }
        if pos0 == 0 {
            self.center.clone_from(&src.center);
        }
        Ok(())
    }

    /// Context shift: drops positions `n_keep..n_keep + n_discard` of the first `len`, moves the
    /// rest down, and rotates each moved key back by `n_discard` positions with its layer's
    /// rope, so it reads as if computed at its new position.
    pub fn shift(&mut self, n_keep: usize, n_discard: usize, len: usize, ropes: &[&crate::spec::RopeConfig]) -> Result<(), BackendError> {
        kv::check_shift(n_keep, n_discard, len, self.n_ctx, self.n_layer(), ropes.len())?;
        let rw = self.row_words();
        for ((((k, v), rope), center), ring) in self.k.iter_mut().zip(self.v.iter_mut()).zip(ropes).zip(&self.center).zip(self.ring.iter_mut()) {
            kv::shift_layer(self.format, self.kv_dim, &mut k[..len * rw], &mut v[..len * rw], center, ring, (n_keep, n_discard), rope);
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
    /// layer's cache, which already holds this step's k and v. Under int4 the rows go
    /// `kv::Ring::STEP_ROWS` at a time, each group's exact vectors stored just before it
    /// attends (the GPU's kv_write and attention dispatches alternate the same way).
    pub fn attend(&mut self, layer: usize, q: &[f32], n: usize, pos0: usize, p: &AttnParams) -> Vec<f32> {
        let len = pos0 + n;
        let (k, v) = (self.rows(&self.k[layer], len), self.rows(&self.v[layer], len));
        // Rotate q once per head, and the rotated weighted sum of values back once per head.
        let hadamard = self.format.policy.hadamard();
        let mut qr = Cow::Borrowed(q);
        if hadamard {
            qr.to_mut().chunks_exact_mut(p.head_dim).for_each(kv::hadamard);
        }
        let Some(r) = kv::Ring::of(self.format.policy, self.kv_dim) else {
            let mut out = attend(&qr, n, pos0, &k, &v, self.kv_dim, p);
            if hadamard {
                out.chunks_exact_mut(p.head_dim).for_each(kv::hadamard);
            }
            return out;
        };
        let (qd, kd) = (p.n_head * p.head_dim, self.kv_dim);
        let (ring, (staged_pos0, sk, sv)) = (&mut self.ring[layer], &self.staged);
        // Positions the last write did not stage (no write before this query) stay as they are.
        let store = |ring: &mut Vec<u32>, pos: usize| {
            if let Some((k, v)) = pos.checked_sub(*staged_pos0).and_then(|i| Some((sk.get(i * kd..(i + 1) * kd)?, sv.get(i * kd..(i + 1) * kd)?))) {
                r.store(ring, pos, k, v);
            }
        };
        // Rows written but not attended here (a cache filled in one write, then queried) go first.
        (*staged_pos0..pos0).for_each(|pos| store(ring, pos));
        let mut out = Vec::with_capacity(n * qd);
        for a in (0..n).step_by(kv::Ring::STEP_ROWS) {
            let b = n.min(a + kv::Ring::STEP_ROWS);
            (pos0 + a..pos0 + b).for_each(|pos| store(ring, pos));
            out.extend(attend_exact(&qr[a * qd..b * qd], b - a, pos0 + a, &k, &v, self.kv_dim, p, Some((r, ring))));
        }
        if hadamard {
            out.chunks_exact_mut(p.head_dim).for_each(kv::hadamard);
        }
        out
    }
}

fn policy_words(f: KvFormat) -> usize {
    f.policy.record_words(f.head_dim)
}

/// Attends `q` (`n` rows of `n_head * head_dim`) over positions `0..=pos0 + row` of f32 `k`
/// and `v` rows of `kv_dim`. Returns `n` rows of `n_head * head_dim`.
pub fn attend(q: &[f32], n: usize, pos0: usize, k: &[f32], v: &[f32], kv_dim: usize, p: &AttnParams) -> Vec<f32> {
    attend_exact(q, n, pos0, k, v, kv_dim, p, None)
}

/// [`attend`], reading the positions in each row's exact window from `exact`'s ring.
#[allow(clippy::too_many_arguments)]
fn attend_exact(q: &[f32], n: usize, pos0: usize, k: &[f32], v: &[f32], kv_dim: usize, p: &AttnParams, exact: Option<(kv::Ring, &[u32])>) -> Vec<f32> {
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
        let rows = |j: usize| match exact.and_then(|(r, ring)| r.exact(ring, pos, j)) {
            Some((ke, ve)) => (&ke[koff..][..hd], &ve[koff..][..hd]),
            None => (&k[j * kv_dim + koff..][..hd], &v[j * kv_dim + koff..][..hd]),
        };
        for j in start..=pos {
            let kj = rows(j).0;
            let mut s = qh.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>() * p.scale;
            if let Some(cap) = p.softcap {
                s = cap * (s / cap).tanh();
            }
            scores.push(s);
        }
        super::ops::softmax(scores);
        for (j, &w) in (start..=pos).zip(scores.iter()) {
            let vj = rows(j).1;
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
    c.write(0, 0, k, v, policy.centers(p.softcap));
    Ok(c.attend(0, q, n, pos0, p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{RopeConfig, RopeStyle};

    /// After a shift, every moved key reads as if it had been rotated at its new position in
    /// the first place (up to the rounding of one extra rotation, and the policy's own
    /// quantization); values move unchanged.
    #[test]
    fn shifted_keys_match_keys_rotated_at_their_new_positions() {
        let (hd, n_head_kv, len, keep, discard) = (64, 2, 40, 5, 12);
        let kv_dim = hd * n_head_kv;
        let rope = RopeConfig { style: RopeStyle::Neox, n_rot: 48, freq_base: 10000.0, freq_scale: 1.0, llama3: None, freq_factors: None };
        let freq = crate::cpu::ops::rope_inv_freq(&rope);
        let raw: Vec<f32> = (0..len * kv_dim).map(|i| ((i * 7919) % 1013) as f32 / 500.0 - 1.0).collect();
        let rotated_at = |src_row: usize, pos: usize| {
            let mut r = raw[src_row * kv_dim..(src_row + 1) * kv_dim].to_vec();
            crate::cpu::ops::rope_row(&mut r, hd, pos, &rope, &freq);
            r
        };
        // Tolerances on the largest error: f32 is off only by one more rotation's rounding; a
        // quantized key is decoded and encoded again, so it carries up to two quantization
        // errors. int4's step search clips the largest values, so its bound is on the RMS error
        // instead (one coding of values in [-1, 1] errs by about 0.05 RMS).
        for (policy, tol) in [(KvPolicy::F32, 1e-5), (KvPolicy::Q8, 2e-2), (KvPolicy::Int4Hadamard, 0.15)] {
            let mut cache = KvCache::new(1, kv_dim, 64, KvFormat { policy, head_dim: hd }).expect("cache");
            let keys: Vec<f32> = (0..len).flat_map(|p| rotated_at(p, p)).collect();
            cache.write(0, 0, &keys, &raw, policy.centers(None));
            // Attending the last position fills int4's ring of exact vectors, which moves too.
            let p = AttnParams { n_head: n_head_kv, n_head_kv, head_dim: hd, scale: 0.125, softcap: None, window: None };
            cache.attend(0, &raw[(len - 1) * kv_dim..len * kv_dim], 1, len - 1, &p);
            cache.shift(keep, discard, len, &[&rope]).expect("shift");
            let (k, v) = (cache.rows(&cache.k[0], len - discard).into_owned(), cache.rows(&cache.v[0], len - discard).into_owned());
            let mut want_k: Vec<f32> = (0..keep).flat_map(|p| rotated_at(p, p)).collect();
            want_k.extend((keep + discard..len).flat_map(|p| rotated_at(p, p - discard)));
            // Centered policies store keys minus the first write's mean, which a shift keeps.
            assert_eq!(cache.center[0].is_empty(), !policy.centers(None));
            for row in want_k.chunks_exact_mut(kv_dim) {
                row.iter_mut().zip(&cache.center[0]).for_each(|(x, m)| *x -= m);
            }
            let mut want_v: Vec<f32> = raw[..keep * kv_dim].to_vec();
            want_v.extend_from_slice(&raw[(keep + discard) * kv_dim..]);
            // Stored values (k and v) are in the policy's space; compare in it.
            let space = |mut x: Vec<f32>| {
                if policy.hadamard() {
                    x.chunks_exact_mut(hd).for_each(kv::hadamard);
                }
                x
            };
            let err = |a: &[f32], b: &[f32]| {
                if policy == KvPolicy::Int4Hadamard {
                    (a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>() / a.len() as f32).sqrt()
                } else {
                    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max)
                }
            };
            let (want_k, want_v) = (space(want_k), space(want_v));
            let (ek, ev) = (err(&k, &want_k), err(&v, &want_v));
            eprintln!("{policy:?}: key error {ek}, value error {ev}");
            assert!(ek <= tol && ev <= tol, "{policy:?}: key error {ek}, value error {ev} (tolerance {tol})");
            // The ring's exact vectors are off by one more rotation's rounding only.
            if let Some(r) = kv::Ring::of(policy, kv_dim) {
                for j in 0..len - discard {
                    let (rk, rv) = r.exact(&cache.ring[0], j, j).expect("every kept position is in the ring");
                    let e = rk.iter().chain(rv).zip(want_k[j * kv_dim..].iter().take(kv_dim).chain(&want_v[j * kv_dim..][..kv_dim]));
                    let e = e.map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
                    assert!(e <= 1e-4, "{policy:?}: position {j}'s exact vectors are off by {e}");
                }
            }
        }
    }
}
