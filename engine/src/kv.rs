//! KV-cache policies: how each cached head vector (one position, one KV head, `head_dim`
//! values) is stored. Every policy stores a head vector as one record of 32-bit words, the
//! same bytes on the CPU and the GPU, so the CPU backend is the GPU kernels' twin:
//!
//! | policy  | record (words)                                   | bytes per head vector |
//! |---------|--------------------------------------------------|-----------------------|
//! | `f32`   | `hd` f32                                         | `4·hd`                |
//! | `f16`   | `hd/2` words of two f16 (element 2i low)         | `2·hd`                |
//! | `q8`    | `hd/4` words of four i8, then one f16 scale per 32-value block, two per word | `hd + 4·⌈⌈hd/32⌉/2⌉` |
//! | `int4`  | `hd/8` words of eight nibbles (q+8, element i at bits 4·(i%8)), then one f32 scale | `hd/2 + 4` |
//! | `int4h` | `int4` of the normalized Walsh–Hadamard rotation of the vector | `hd/2 + 4` |
//!
//! `kv_bytes_per_token = 2 (k and v) · n_layer · n_head_kv · bytes per head vector`.
//!
//! The rotation spreads a vector's outliers over all its coordinates, so one scale per vector
//! wastes fewer of the 16 levels. It is orthonormal and its own inverse, so attention never
//! undoes it per key: q is rotated once (`q·k = Hq·Hk`), and the weighted sum of rotated values
//! is rotated back once (`Σ wⱼ·Hvⱼ = H·Σ wⱼ·vⱼ`).
//!
//! **Key centering.** The integer policies store keys minus a per-sequence, per-layer vector
//! `c` (the mean of the keys of the sequence's first write, after RoPE), kept in f32 beside the
//! records (`kv_dim` values per layer). Softmax ignores a shift that is the same for every key
//! of a query (`q·(k - c) = q·k - q·c`), so attention reads the centered keys as they are and
//! nothing is added back. Keys carry large per-channel offsets (Qwen2's k bias reaches ±145
//! while the rest is ~1), which otherwise take the scale's whole range; centering cut q8's
//! perplexity cost on Qwen2.5-0.5B from +2.6% to +0.2% and int4's on SmolLM2 from +18% to +7%
//! (bench/RESULTS.md). Logit soft-capping is not shift-invariant, so models with it
//! (`attn_softcap`) are not centered.
//!
//! **Exact window (int4).** The int4 policies also keep the newest positions exact: a query at
//! position `pos` reads position `j` from an f32 copy when `pos - j < INT4_WINDOW`, and from its
//! int4 record otherwise (KIVI's full-precision residual window). The copies live in a [`Ring`]
//! of `INT4_RING` slots per layer and sequence, beside the centering vector. Recent positions
//! draw most of a query's attention, so their coding error costs most: on 20,480 tokens
//! (bench/RESULTS.md) a window of 32 took SmolLM2's int4 from +3.8% to +1.6% over f32. The
//! window adds `kv_bytes_per_sequence`, not bytes per token.

use std::fmt;
use std::str::FromStr;

use half::f16;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KvPolicy {
    #[default]
    F32,
    F16,
    /// 8-bit, one f16 scale per 32-value block.
    Q8,
    /// 4-bit, one f32 scale per head vector (the seed's approach).
    Int4Plain,
    /// 4-bit of the Hadamard-rotated head vector, one f32 scale per head vector.
    Int4Hadamard,
    /// `int4` as asked for: the model picks the rotation ([`KvPolicy::resolve`]). Until then it
    /// stores as `int4h`.
    Int4,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KvError {
    #[error("unknown KV-cache policy {0:?}; expected one of f32, f16, q8, int4, int4h, int4-plain")]
    UnknownPolicy(String),
    #[error("KV-cache policy {policy} cannot store head vectors of {head_dim} values: {why}")]
    HeadDim { policy: KvPolicy, head_dim: usize, why: &'static str },
}

impl KvPolicy {
    pub const ALL: [KvPolicy; 5] = [KvPolicy::F32, KvPolicy::F16, KvPolicy::Q8, KvPolicy::Int4Plain, KvPolicy::Int4Hadamard];

    /// What `int4` means for a model: Hadamard-rotated, unless its keys have a bias. A k bias
    /// is a fixed per-channel offset (Qwen2's reaches ±145) that centering removes only in
    /// the slowly rotating channels; the rotation would spread the rest over every coordinate.
    /// Measured on 20k tokens (bench/RESULTS.md): SmolLM2 int4h +5.7% vs plain +15.4%;
    /// Qwen2.5-0.5B plain +2.1% vs int4h +18.5%.
    pub fn resolve(self, biased_keys: bool) -> KvPolicy {
        match self {
            KvPolicy::Int4 if biased_keys => KvPolicy::Int4Plain,
            KvPolicy::Int4 => KvPolicy::Int4Hadamard,
            p => p,
        }
    }

    /// The record format this policy stores (an unresolved `int4` as `int4h`).
    fn storage(self) -> KvPolicy {
        self.resolve(false)
    }

    /// The name `FromStr` reads back.
    pub fn name(self) -> &'static str {
        match self {
            KvPolicy::Int4 => "int4",
            KvPolicy::F32 => "f32",
            KvPolicy::F16 => "f16",
            KvPolicy::Q8 => "q8",
            KvPolicy::Int4Plain => "int4-plain",
            KvPolicy::Int4Hadamard => "int4h",
        }
    }

    pub fn hadamard(self) -> bool {
        self.storage() == KvPolicy::Int4Hadamard
    }

    /// Keys are stored centered (module doc) under the integer policies, unless attention
    /// soft-caps its logits.
    pub fn centers(self, softcap: Option<f32>) -> bool {
        matches!(self.storage(), KvPolicy::Q8 | KvPolicy::Int4Plain | KvPolicy::Int4Hadamard) && softcap.is_none()
    }

    /// Checks that vectors of `head_dim` fit the record layout (whole words, and a power of two
    /// for the rotation).
    pub fn check(self, head_dim: usize) -> Result<(), KvError> {
        let err = |why| Err(KvError::HeadDim { policy: self, head_dim, why });
        match self.storage() {
            _ if head_dim == 0 => err("empty head"),
            KvPolicy::F32 => Ok(()),
            KvPolicy::F16 if head_dim % 2 != 0 => err("f16 pairs need an even head_dim"),
            KvPolicy::Q8 if head_dim % 4 != 0 => err("i8 quads need a head_dim divisible by 4"),
            KvPolicy::Int4Plain | KvPolicy::Int4Hadamard if head_dim % 8 != 0 => err("nibble words need a head_dim divisible by 8"),
            KvPolicy::Int4Hadamard if !head_dim.is_power_of_two() => err("the Walsh–Hadamard rotation needs a power of two"),
            _ => Ok(()),
        }
    }

    /// 32-bit words of one head vector's record.
    pub fn record_words(self, head_dim: usize) -> usize {
        match self.storage() {
            KvPolicy::F32 => head_dim,
            KvPolicy::F16 => head_dim / 2,
            KvPolicy::Q8 => head_dim / 4 + head_dim.div_ceil(32).div_ceil(2),
            KvPolicy::Int4Plain | KvPolicy::Int4Hadamard | KvPolicy::Int4 => head_dim / 8 + 1,
        }
    }
}

impl fmt::Display for KvPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KvPolicy {
    type Err = KvError;

    fn from_str(s: &str) -> Result<Self, KvError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" => Ok(KvPolicy::F32),
            "f16" => Ok(KvPolicy::F16),
            "q8" | "q8_0" => Ok(KvPolicy::Q8),
            // "int4" lets the model choose the rotation (`resolve`).
            "int4" => Ok(KvPolicy::Int4),
            "int4h" | "int4-hadamard" => Ok(KvPolicy::Int4Hadamard),
            "int4-plain" => Ok(KvPolicy::Int4Plain),
            _ => Err(KvError::UnknownPolicy(s.to_string())),
        }
    }
}

/// Bytes of KV cache one token takes: `2 · n_layer · n_head_kv · 4 · record_words(head_dim)`.
pub fn kv_bytes_per_token(policy: KvPolicy, n_layer: usize, n_head_kv: usize, head_dim: usize) -> usize {
    2 * n_layer * n_head_kv * 4 * policy.record_words(head_dim)
}

/// Bytes a sequence's cache holds besides its positions: the centering vectors of the integer
/// policies, `4 · kv_dim` per layer (allocated whether or not a model soft-caps), and the int4
/// policies' [`Ring`] of exact recent vectors, `4 · INT4_RING · (2 · kv_dim + 1)` per layer.
pub fn kv_bytes_per_sequence(policy: KvPolicy, n_layer: usize, kv_dim: usize) -> usize {
    let center = if policy.centers(None) { kv_dim } else { 0 };
    4 * n_layer * (center + Ring::of(policy, kv_dim).map_or(0, Ring::words))
}

/// Positions a query reads exactly under the int4 policies: itself and the 31 before it.
pub const INT4_WINDOW: usize = 32;
/// Slots of the int4 policies' ring of exact vectors. Beyond the window, the slots bound the
/// rows an attention step takes at a time (`Ring::STEP_ROWS`): on an H100, 64 slots (steps of
/// 32) cost a 135M model's int4 prefill a third of its speed against 128 (steps of 96).
pub const INT4_RING: usize = 128;

/// One layer's ring of exact recent head vectors under the int4 policies (the exact window of
/// the module doc), in 32-bit words: `INT4_RING` position tags (position + 1, so a zeroed ring
/// is empty), then `INT4_RING` rows of `kv_dim` k values (f32 bits), then as many v rows.
/// Position `j` lives in slot `j % INT4_RING`, in the space its record decodes to (centered
/// keys, rotated for `int4h`). The same words on the CPU and the GPU (`kv_common.wgsl`).
///
/// Every row reads its whole window exactly however its prompt was chunked: an attention step
/// writes and attends at most [`Ring::STEP_ROWS`] rows at a time, so no row's write overwrites
/// a slot that an earlier row of the same step still reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ring {
    pub kv_dim: usize,
}

impl Ring {
    pub const SLOTS: usize = INT4_RING;
    pub const WINDOW: usize = INT4_WINDOW;
    pub const STEP_ROWS: usize = INT4_RING - INT4_WINDOW;

    /// The ring a policy keeps, if any.
    pub fn of(policy: KvPolicy, kv_dim: usize) -> Option<Ring> {
        matches!(policy.storage(), KvPolicy::Int4Plain | KvPolicy::Int4Hadamard).then_some(Ring { kv_dim })
    }

    pub fn words(self) -> usize {
        Self::SLOTS * (2 * self.kv_dim + 1)
    }

    fn k_at(self, slot: usize) -> usize {
        Self::SLOTS + slot * self.kv_dim
    }

    fn v_at(self, slot: usize) -> usize {
        Self::SLOTS + (Self::SLOTS + slot) * self.kv_dim
    }

    /// Stores position `pos`'s k and v rows (`kv_dim` values each, in the storage space).
    pub fn store(self, ring: &mut [u32], pos: usize, k: &[f32], v: &[f32]) {
        let slot = pos % Self::SLOTS;
        ring[slot] = pos as u32 + 1;
        ring[self.k_at(slot)..][..self.kv_dim].copy_from_slice(bytemuck::cast_slice(k));
        ring[self.v_at(slot)..][..self.kv_dim].copy_from_slice(bytemuck::cast_slice(v));
    }

    /// Whether slot `j % SLOTS` holds position `j`.
    pub fn holds(self, ring: &[u32], j: usize) -> bool {
        ring.get(j % Self::SLOTS) == Some(&(j as u32 + 1))
    }

    /// The exact k and v rows a query at `pos` reads for position `j <= pos`, if `j` is in its
    /// window (and held, which every write in order guarantees).
    pub fn exact(self, ring: &[u32], pos: usize, j: usize) -> Option<(&[f32], &[f32])> {
        if pos - j >= Self::WINDOW || !self.holds(ring, j) {
            return None;
        }
        let slot = j % Self::SLOTS;
        Some((bytemuck::cast_slice(&ring[self.k_at(slot)..][..self.kv_dim]), bytemuck::cast_slice(&ring[self.v_at(slot)..][..self.kv_dim])))
    }

    /// Checks that a copy of positions up to `end` leaves the copy every exact vector its next
    /// query reads: every layer's ring (or its tags) must hold positions `end - WINDOW + 1 ..
    /// end`.
    pub fn check_copy<'a>(self, rings: impl IntoIterator<Item = &'a Vec<u32>>, end: usize) -> Result<(), crate::backend::BackendError> {
        let missing = rings.into_iter().find_map(|ring| (end.saturating_sub(Self::WINDOW - 1)..end).find(|&j| !self.holds(ring, j)));
        match missing {
            None => Ok(()),
            Some(j) => Err(crate::backend::BackendError::Shape {
                op: "copy_kv",
                detail: format!("the source no longer holds position {j}'s exact vectors (int4 window); recompute instead"),
            }),
        }
    }

    /// Context shift of a ring holding positions below `len`: positions `n_keep..n_keep +
    /// n_discard` are dropped, later ones move down by `n_discard` into their new slots with
    /// their keys re-roped by `rekey` (as the records are).
    fn shift(self, ring: &mut [u32], (n_keep, n_discard, len): (usize, usize, usize), mut rekey: impl FnMut(&mut [f32])) {
        let old = ring.to_vec();
        ring.fill(0);
        for slot in 0..Self::SLOTS {
            let Some(t) = (old[slot] as usize).checked_sub(1) else { continue };
            let to = match t {
                _ if t >= len => continue,
                _ if t < n_keep => t,
                _ if t < n_keep + n_discard => continue,
                _ => t - n_discard,
            };
            let mut k: Vec<f32> = bytemuck::cast_slice(&old[self.k_at(slot)..][..self.kv_dim]).to_vec();
            let v: &[f32] = bytemuck::cast_slice(&old[self.v_at(slot)..][..self.kv_dim]);
            if to != t {
                rekey(&mut k);
            }
            self.store(ring, to, &k, v);
        }
    }
}

/// The per-channel mean of `rows` of `kv_dim` keys, summed in row order (the GPU's
/// `kv_center` sums in the same order).
pub fn key_center(rows: &[f32], kv_dim: usize) -> Vec<f32> {
    let mut c = vec![0.0f32; kv_dim];
    let n = rows.len() / kv_dim.max(1);
    for row in rows.chunks_exact(kv_dim) {
        c.iter_mut().zip(row).for_each(|(a, b)| *a += b);
    }
    c.iter_mut().for_each(|a| *a /= n.max(1) as f32);
    c
}

/// Refuses a context shift the cache cannot do: more positions than `len`, `len` past the
/// cache's `n_ctx`, or a rope per layer missing (both backends check alike).
pub fn check_shift(n_keep: usize, n_discard: usize, len: usize, n_ctx: usize, n_layer: usize, n_ropes: usize) -> Result<(), crate::backend::BackendError> {
    if n_keep + n_discard > len || len > n_ctx || n_ropes != n_layer {
        return Err(crate::backend::BackendError::Shape { op: "shift_kv", detail: format!("keep {n_keep}, discard {n_discard} of {len} in {n_ctx}") });
    }
    Ok(())
}

/// Context shift of one layer's records, `k` and `v` holding its first `len` positions:
/// positions `n_keep..n_keep + n_discard` are dropped, later ones move down, and each moved key
/// is rotated back by `n_discard` positions with the layer's `rope` (re-encoded; a centered key
/// rotates with its center added back). The layer's exact-window `ring` (empty without one)
/// moves alike. Shared by the CPU cache and the GPU backend, which reads a layer back for this
/// rare operation.
#[allow(clippy::too_many_arguments)]
pub fn shift_layer(
    format: crate::backend::KvFormat,
    kv_dim: usize,
    k: &mut [u32],
    v: &mut [u32],
    center: &[f32],
    ring: &mut [u32],
    (n_keep, n_discard): (usize, usize),
    rope: &crate::spec::RopeConfig,
) {
    let (hd, policy) = (format.head_dim, format.policy);
    let rec = policy.record_words(hd);
    let rw = kv_dim / hd * rec;
    let len = k.len() / rw.max(1);
    let (from, to, moved) = (n_keep + n_discard, n_keep, len.saturating_sub(n_keep + n_discard));
    v.copy_within(from * rw..(from + moved) * rw, to * rw);
    k.copy_within(from * rw..(from + moved) * rw, to * rw);
    let freq = crate::cpu::ops::rope_inv_freq(rope);
    // A stored key (head `h`, in the storage space) rotated back by `n_discard` positions.
    let rekey = |x: &mut [f32], h: usize| {
        if policy.hadamard() {
            hadamard(x); // back from the rotated storage space
        }
        let c = center.get(h * hd..(h + 1) * hd);
        if let Some(c) = c {
            x.iter_mut().zip(c).for_each(|(a, m)| *a += m);
        }
        crate::cpu::ops::rope_row_at(x, hd, -(n_discard as f32), rope, &freq);
        if let Some(c) = c {
            x.iter_mut().zip(c).for_each(|(a, m)| *a -= m);
        }
    };
    let mut x = vec![0.0f32; hd];
    for (i, r) in k[to * rw..(to + moved) * rw].chunks_exact_mut(rec).enumerate() {
        decode(policy, r, &mut x);
        rekey(&mut x, i % (kv_dim / hd));
        encode(policy, &x, r);
    }
    if let Some(r) = Ring::of(policy, kv_dim).filter(|_| !ring.is_empty()) {
        r.shift(ring, (n_keep, n_discard, len), |row| {
            for (h, x) in row.chunks_exact_mut(hd).enumerate() {
                rekey(x, h);
                if policy.hadamard() {
                    hadamard(x); // into the storage space again
                }
            }
        });
    }
}

/// In-place normalized fast Walsh–Hadamard transform (`x.len()` a power of two); its own inverse.
pub fn hadamard(x: &mut [f32]) {
    let n = x.len();
    let mut h = 1;
    while h < n {
        for i in (0..n).step_by(2 * h) {
            for j in i..i + h {
                let (a, b) = (x[j], x[j + h]);
                x[j] = a + b;
                x[j + h] = a - b;
            }
        }
        h *= 2;
    }
    let s = 1.0 / (n as f32).sqrt();
    x.iter_mut().for_each(|v| *v *= s);
}

/// Shrink factors of `amax / 7` that [`int4_step`] tries.
const INT4_SHRINK: [f32; 9] = [1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6];

fn int4_code(v: f32, inv: f32) -> f32 {
    (v * inv).round().clamp(-7.0, 7.0)
}

/// Squared error of coding `x` with step `d`.
fn int4_err(x: &[f32], d: f32) -> f32 {
    let inv = 1.0 / d;
    x.iter().fold(0.0f32, |e, &v| {
        let r = v - d * int4_code(v, inv);
        e + r * r
    })
}

/// The int4 step of a head vector: `amax / 7`, or with `search` (int4h's rotated vectors) the
/// least-squared-error one of a few steps at and below it, refit by least squares for its codes. `amax / 7` spends the
/// code range on the largest value; clipping a near-Gaussian vector's tails instead cuts its
/// error (on 20,480 tokens, H100: SmolLM2 int4h +5.68% -> +5.00%, Qwen2.5-0.5B int4h +18.5% ->
/// +13.4%). Unrotated vectors keep `amax / 7`: their largest values are outlier channels that
/// dominate q·k, and clipping them cost more than it saved (int4-plain: SmolLM2 +15.4% ->
/// +18.0%, Qwen +2.05% -> +3.00%). `kv_write.wgsl`'s int4 writer (`wg_encode`) is the GPU twin.
pub fn int4_step(x: &[f32], search: bool) -> f32 {
    let d0 = x.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 7.0;
    if d0 <= 0.0 || !search {
        return d0;
    }
    let (mut best, mut best_e) = (d0, int4_err(x, d0));
    for s in &INT4_SHRINK[1..] {
        let d = d0 * s;
        let e = int4_err(x, d);
        if e < best_e {
            (best, best_e) = (d, e);
        }
    }
    let inv = 1.0 / best;
    let (num, den) = x.iter().fold((0.0f32, 0.0f32), |(n, d), &v| {
        let q = int4_code(v, inv);
        (n + v * q, d + q * q)
    });
    if den > 0.0 {
        num / den
    } else {
        best
    }
}

/// Writes the record of head vector `x` into `out` (`record_words(x.len())` words).
pub fn encode(policy: KvPolicy, x: &[f32], out: &mut [u32]) {
    if policy.hadamard() {
        let mut buf = x.to_vec();
        hadamard(&mut buf);
        encode_stored(policy, &buf, out);
    } else {
        encode_stored(policy, x, out);
    }
}

/// [`encode`] of a vector already in the storage space its record decodes to (rotated under
/// `int4h`), as the exact window keeps it.
pub fn encode_stored(policy: KvPolicy, x: &[f32], out: &mut [u32]) {
    let hd = x.len();
    let policy = policy.storage();
    match policy {
        KvPolicy::F32 => out.iter_mut().zip(x).for_each(|(o, v)| *o = v.to_bits()),
        KvPolicy::F16 => {
            for (o, p) in out.iter_mut().zip(x.chunks_exact(2)) {
                *o = f16::from_f32(p[0]).to_bits() as u32 | (f16::from_f32(p[1]).to_bits() as u32) << 16;
            }
        }
        KvPolicy::Q8 => {
            out.fill(0);
            let (data, scales) = out.split_at_mut(hd / 4);
            for (b, blk) in x.chunks(32).enumerate() {
                let amax = blk.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                // Quantize against the stored (f16) scale so that decoding uses exactly it.
                let d = f16::from_f32(amax / 127.0);
                let inv = if d.to_f32() > 0.0 { 1.0 / d.to_f32() } else { 0.0 };
                for (i, &v) in blk.iter().enumerate() {
                    let e = b * 32 + i;
                    let q = (v * inv).round().clamp(-127.0, 127.0) as i8;
                    data[e / 4] |= (q as u8 as u32) << (8 * (e % 4));
                }
                scales[b / 2] |= (d.to_bits() as u32) << (16 * (b % 2));
            }
        }
        KvPolicy::Int4Plain | KvPolicy::Int4Hadamard | KvPolicy::Int4 => {
            let d = int4_step(x, policy.hadamard());
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            out.fill(0);
            for (e, &v) in x.iter().enumerate() {
                let q = ((v * inv).round().clamp(-7.0, 7.0) + 8.0) as u32;
                out[e / 8] |= q << (4 * (e % 8));
            }
            out[hd / 8] = d.to_bits();
        }
    }
}

/// Decodes a record into `x`. For `int4h` the values stay rotated (see the module doc).
pub fn decode(policy: KvPolicy, rec: &[u32], x: &mut [f32]) {
    let hd = x.len();
    match policy.storage() {
        KvPolicy::F32 => x.iter_mut().zip(rec).for_each(|(v, &w)| *v = f32::from_bits(w)),
        KvPolicy::F16 => {
            for (p, &w) in x.chunks_exact_mut(2).zip(rec) {
                p[0] = f16::from_bits(w as u16).to_f32();
                p[1] = f16::from_bits((w >> 16) as u16).to_f32();
            }
        }
        KvPolicy::Q8 => {
            let (data, scales) = rec.split_at(hd / 4);
            for (e, v) in x.iter_mut().enumerate() {
                let b = e / 32;
                let d = f16::from_bits((scales[b / 2] >> (16 * (b % 2))) as u16).to_f32();
                *v = ((data[e / 4] >> (8 * (e % 4))) as u8 as i8) as f32 * d;
            }
        }
        KvPolicy::Int4Plain | KvPolicy::Int4Hadamard | KvPolicy::Int4 => {
            let d = f32::from_bits(rec[hd / 8]);
            for (e, v) in x.iter_mut().enumerate() {
                *v = (((rec[e / 8] >> (4 * (e % 8))) & 15) as f32 - 8.0) * d;
            }
        }
    }
}

#[cfg(test)]
mod tests;
