//! Dequantization of the 256-element super-block formats Q2_K .. Q6_K.
//!
//! Each function mirrors the numpy expression of gguf-py's `dequantize_blocks` for the type,
//! including which products are rounded first (`(d * sc) * q - dmin * m`), so the f32 output is
//! bit-identical. Byte offsets follow ggml's `block_qN_K` structs.

use super::floats::f16_at;
use super::{GgmlType, QK_K};

pub(crate) mod layout {
    pub const Q2K_SCALES: usize = 0;
    pub const Q2K_QS: usize = 16;
    pub const Q2K_D: usize = 80;
    pub const Q2K_DMIN: usize = 82;

    pub const Q3K_HMASK: usize = 0;
    pub const Q3K_QS: usize = 32;
    pub const Q3K_SCALES: usize = 96;
    pub const Q3K_D: usize = 108;

    pub const Q4K_D: usize = 0;
    pub const Q4K_DMIN: usize = 2;
    pub const Q4K_SCALES: usize = 4;
    pub const Q4K_QS: usize = 16;

    pub const Q5K_D: usize = 0;
    pub const Q5K_DMIN: usize = 2;
    pub const Q5K_SCALES: usize = 4;
    pub const Q5K_QH: usize = 16;
    pub const Q5K_QS: usize = 48;

    pub const Q6K_QL: usize = 0;
    pub const Q6K_QH: usize = 128;
    pub const Q6K_SCALES: usize = 192;
    pub const Q6K_D: usize = 208;
}
use layout::*;

const _: () = assert!(GgmlType::Q2K.type_size() == Q2K_DMIN + 2);
const _: () = assert!(GgmlType::Q3K.type_size() == Q3K_D + 2);
const _: () = assert!(GgmlType::Q4K.type_size() == Q4K_QS + QK_K / 2);
const _: () = assert!(GgmlType::Q5K.type_size() == Q5K_QS + QK_K / 2);
const _: () = assert!(GgmlType::Q6K.type_size() == Q6K_D + 2);

/// The 6-bit scales and mins of the eight 32-element sub-blocks of Q4_K and Q5_K, packed in
/// 12 bytes: bytes 0..4 hold scales 0..4 (low 6 bits) and the top bits of scales 4..8, bytes
/// 4..8 likewise for the mins, bytes 8..12 the low nibbles of scales and mins 4..8.
#[inline(always)]
pub(crate) fn scale_min_k4(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let s = &s[..12];
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for k in 0..4 {
        sc[k] = s[k] & 0x3F;
        mn[k] = s[k + 4] & 0x3F;
        sc[k + 4] = (s[k + 8] & 0x0F) | ((s[k] >> 2) & 0x30);
        mn[k + 4] = (s[k + 8] >> 4) | ((s[k + 4] >> 2) & 0x30);
    }
    (sc, mn)
}

/// The sixteen signed 6-bit scales of Q3_K, stored with a bias of 32.
#[inline(always)]
pub(crate) fn scales_q3k(s: &[u8]) -> [i8; 16] {
    let s = &s[..12];
    let mut out = [0i8; 16];
    for (j, o) in out.iter_mut().enumerate() {
        let lo = (s[j % 8] >> (4 * (j / 8))) & 0x0F;
        let hi = (s[8 + j % 4] >> (2 * (j / 4))) & 0x03;
        *o = ((lo | (hi << 4)) as i8).wrapping_sub(32);
    }
    out
}

pub(crate) fn dequant_q2k(b: &[u8], out: &mut [f32]) {
    let (b, out) = (&b[..Q2K_DMIN + 2], &mut out[..QK_K]);
    let d = f16_at(b, Q2K_D);
    let dmin = f16_at(b, Q2K_DMIN);
    let qs = &b[Q2K_QS..Q2K_QS + 64];
    for (g, group) in out.chunks_exact_mut(16).enumerate() {
        let sc = b[Q2K_SCALES + g];
        let dl = d * (sc & 0x0F) as f32;
        let ml = dmin * (sc >> 4) as f32;
        for (i, o) in group.iter_mut().enumerate() {
            let e = g * 16 + i;
            let q = (qs[(e / 128) * 32 + e % 32] >> (2 * ((e % 128) / 32))) & 3;
            *o = dl * q as f32 - ml;
        }
    }
}

pub(crate) fn dequant_q3k(b: &[u8], out: &mut [f32]) {
    let (b, out) = (&b[..Q3K_D + 2], &mut out[..QK_K]);
    let d = f16_at(b, Q3K_D);
    let hmask = &b[Q3K_HMASK..Q3K_HMASK + 32];
    let qs = &b[Q3K_QS..Q3K_QS + 64];
    let scales = scales_q3k(&b[Q3K_SCALES..]);
    for (g, group) in out.chunks_exact_mut(16).enumerate() {
        let dl = d * scales[g] as f32;
        for (i, o) in group.iter_mut().enumerate() {
            let e = g * 16 + i;
            let low = ((qs[(e / 128) * 32 + e % 32] >> (2 * ((e % 128) / 32))) & 3) as i8;
            // A clear hmask bit means the value is offset by -4.
            let high = (((hmask[e % 32] >> (e / 32)) & 1) ^ 1) as i8;
            *o = dl * (low - (high << 2)) as f32;
        }
    }
}

pub(crate) fn dequant_q4k(b: &[u8], out: &mut [f32]) {
    let (b, out) = (&b[..Q4K_QS + 128], &mut out[..QK_K]);
    let d = f16_at(b, Q4K_D);
    let dmin = f16_at(b, Q4K_DMIN);
    let (sc, mn) = scale_min_k4(&b[Q4K_SCALES..]);
    let qs = &b[Q4K_QS..];
    for (j, sub) in out.chunks_exact_mut(32).enumerate() {
        let dj = d * sc[j] as f32;
        let mj = dmin * mn[j] as f32;
        let bytes = &qs[(j / 2) * 32..(j / 2) * 32 + 32];
        let shift = 4 * (j % 2);
        for (o, &q) in sub.iter_mut().zip(bytes) {
            *o = dj * ((q >> shift) & 0x0F) as f32 - mj;
        }
    }
}

pub(crate) fn dequant_q5k(b: &[u8], out: &mut [f32]) {
    let (b, out) = (&b[..Q5K_QS + 128], &mut out[..QK_K]);
    let d = f16_at(b, Q5K_D);
    let dmin = f16_at(b, Q5K_DMIN);
    let (sc, mn) = scale_min_k4(&b[Q5K_SCALES..]);
    let qh = &b[Q5K_QH..Q5K_QH + 32];
    let qs = &b[Q5K_QS..];
    for (j, sub) in out.chunks_exact_mut(32).enumerate() {
        let dj = d * sc[j] as f32;
        let mj = dmin * mn[j] as f32;
        let bytes = &qs[(j / 2) * 32..(j / 2) * 32 + 32];
        let shift = 4 * (j % 2);
        for ((o, &q), &h) in sub.iter_mut().zip(bytes).zip(qh) {
            let v = ((q >> shift) & 0x0F) | (((h >> j) & 1) << 4);
            *o = dj * v as f32 - mj;
        }
    }
}

pub(crate) fn dequant_q6k(b: &[u8], out: &mut [f32]) {
    let (b, out) = (&b[..Q6K_D + 2], &mut out[..QK_K]);
    let d = f16_at(b, Q6K_D);
    let ql = &b[Q6K_QL..Q6K_QL + 128];
    let qh = &b[Q6K_QH..Q6K_QH + 64];
    for (g, group) in out.chunks_exact_mut(16).enumerate() {
        let dg = d * (b[Q6K_SCALES + g] as i8) as f32;
        for (i, o) in group.iter_mut().enumerate() {
            let e = g * 16 + i;
            let (h, r) = (e / 128, e % 128);
            let low = (ql[h * 64 + r % 64] >> (4 * (r / 64))) & 0x0F;
            let high = (qh[h * 32 + r % 32] >> (2 * (r / 32))) & 0x03;
            *o = dg * ((low | (high << 4)) as i8 - 32) as f32;
        }
    }
}
