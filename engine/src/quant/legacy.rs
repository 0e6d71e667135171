//! The 32-element block formats Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0.
//!
//! Dequantization repeats gguf-py's numpy expressions operation for operation in f32, so its
//! output is bit-identical. Quantization follows ggml's `quantize_row_*_ref`, which gguf-py
//! reproduces byte for byte.

use super::floats::{f16_at, put_f16};
use super::GgmlType;

pub(crate) const QK: usize = 32;

const _: () = assert!(GgmlType::Q4_0.type_size() == 2 + QK / 2);
const _: () = assert!(GgmlType::Q4_1.type_size() == 4 + QK / 2);
const _: () = assert!(GgmlType::Q5_0.type_size() == 2 + 4 + QK / 2);
const _: () = assert!(GgmlType::Q5_1.type_size() == 4 + 4 + QK / 2);
const _: () = assert!(GgmlType::Q8_0.type_size() == 2 + QK);

/// Element `e` of a 16-byte nibble array: the low nibbles hold elements 0..16, the high
/// nibbles 16..32.
#[inline(always)]
fn nibble(qs: &[u8], e: usize) -> u8 {
    (qs[e % 16] >> (4 * (e / 16))) & 0x0F
}

pub(crate) fn dequant_q4_0(b: &[u8], out: &mut [f32]) {
    let (b, out) = (&b[..18], &mut out[..QK]);
    let d = f16_at(b, 0);
    for (e, o) in out.iter_mut().enumerate() {
        *o = d * (nibble(&b[2..], e) as i32 - 8) as f32;
    }
}

pub(crate) fn dequant_q4_1(b: &[u8], out: &mut [f32]) {
    let (b, out) = (&b[..20], &mut out[..QK]);
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    for (e, o) in out.iter_mut().enumerate() {
        *o = d * nibble(&b[4..], e) as f32 + m;
    }
}

#[inline(always)]
fn q5(qh: u32, qs: &[u8], e: usize) -> u8 {
    nibble(qs, e) | ((((qh >> e) & 1) as u8) << 4)
}

pub(crate) fn dequant_q5_0(b: &[u8], out: &mut [f32]) {
    let (b, out) = (&b[..22], &mut out[..QK]);
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    for (e, o) in out.iter_mut().enumerate() {
        *o = d * (q5(qh, &b[6..], e) as i32 - 16) as f32;
    }
}

pub(crate) fn dequant_q5_1(b: &[u8], out: &mut [f32]) {
    let (b, out) = (&b[..24], &mut out[..QK]);
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    for (e, o) in out.iter_mut().enumerate() {
        *o = d * q5(qh, &b[8..], e) as f32 + m;
    }
}

pub(crate) fn dequant_q8_0(b: &[u8], out: &mut [f32]) {
    let (b, out) = (&b[..34], &mut out[..QK]);
    let d = f16_at(b, 0);
    for (o, &q) in out.iter_mut().zip(&b[2..]) {
        *o = q as i8 as f32 * d;
    }
}

/// The value of largest magnitude, the first one on ties (numpy's `argmax` of `abs`).
fn signed_absmax(x: &[f32]) -> f32 {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    max
}

fn inverse_or_zero(d: f32) -> f32 {
    if d == 0.0 {
        0.0
    } else {
        1.0 / d
    }
}

/// Packs 32 values below 16 as two nibble halves: byte j holds elements j and j + 16.
fn pack_nibbles(q: &[u8; QK], qs: &mut [u8]) {
    for j in 0..QK / 2 {
        qs[j] = (q[j] & 0x0F) | (q[j + QK / 2] << 4);
    }
}

fn high_bits(q: &[u8; QK]) -> [u8; 4] {
    let mut qh = 0u32;
    for (e, &v) in q.iter().enumerate() {
        qh |= u32::from(v >> 4) << e;
    }
    qh.to_le_bytes()
}

/// Signed symmetric quantizer shared by Q4_0 (`levels` 16) and Q5_0 (32): `d = max / -(levels/2)`
/// and `q = trunc(x / d + levels/2 + 0.5)`, clipped.
fn quant_symmetric(x: &[f32], levels: u8) -> (f32, [u8; QK]) {
    let half = f32::from(levels / 2);
    let d = signed_absmax(x) / -half;
    let id = inverse_or_zero(d);
    let mut q = [0u8; QK];
    for (qv, &v) in q.iter_mut().zip(x) {
        *qv = ((v * id + (half + 0.5)).trunc() as u8).min(levels - 1);
    }
    (d, q)
}

/// Asymmetric quantizer shared by Q4_1 (`levels` 16) and Q5_1 (32).
fn quant_min_max(x: &[f32], levels: u8) -> (f32, f32, [u8; QK]) {
    let max = x.iter().copied().fold(x[0], f32::max);
    let min = x.iter().copied().fold(x[0], f32::min);
    let d = (max - min) / f32::from(levels - 1);
    let id = inverse_or_zero(d);
    let mut q = [0u8; QK];
    for (qv, &v) in q.iter_mut().zip(x) {
        *qv = (((v - min) * id + 0.5).trunc() as u8).min(levels - 1);
    }
    (d, min, q)
}

pub(crate) fn quant_q4_0(x: &[f32], b: &mut [u8]) {
    let (d, q) = quant_symmetric(x, 16);
    put_f16(b, 0, d);
    pack_nibbles(&q, &mut b[2..18]);
}

pub(crate) fn quant_q4_1(x: &[f32], b: &mut [u8]) {
    let (d, m, q) = quant_min_max(x, 16);
    put_f16(b, 0, d);
    put_f16(b, 2, m);
    pack_nibbles(&q, &mut b[4..20]);
}

pub(crate) fn quant_q5_0(x: &[f32], b: &mut [u8]) {
    let (d, q) = quant_symmetric(x, 32);
    put_f16(b, 0, d);
    b[2..6].copy_from_slice(&high_bits(&q));
    pack_nibbles(&q, &mut b[6..22]);
}

pub(crate) fn quant_q5_1(x: &[f32], b: &mut [u8]) {
    let (d, m, q) = quant_min_max(x, 32);
    put_f16(b, 0, d);
    put_f16(b, 2, m);
    b[4..8].copy_from_slice(&high_bits(&q));
    pack_nibbles(&q, &mut b[8..24]);
}

pub(crate) fn quant_q8_0(x: &[f32], b: &mut [u8]) {
    let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = inverse_or_zero(d);
    put_f16(b, 0, d);
    for (o, &v) in b[2..34].iter_mut().zip(x) {
        // Rust's `round` is C's `roundf` (half away from zero), as in ggml and gguf-py.
        *o = (v * id).round() as i8 as u8;
    }
}
