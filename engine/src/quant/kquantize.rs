//! Quantization to Q4_K, Q5_K and Q6_K, following ggml's `quantize_row_q{4,5,6}_K_ref`
//! (no importance matrix), including their scale searches `make_qkx2_quants` and
//! `make_qx_quants`. Operation order is kept as in the C source so that the bytes agree with
//! llama.cpp's quantizer wherever its compiler did not contract products into FMAs.

use super::floats::{f16_at, put_f16};
use super::kquants::{layout::*, scale_min_k4};
use super::QK_K;

/// ggml treats a group whose largest magnitude is below this as all zeros.
const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `nearest_int`: round half to even via the 1.5 * 2^23 trick. The trick itself is
/// reproduced, not `round_ties_even`, so out-of-range inputs give the same (clamped later)
/// garbage as in C.
#[inline(always)]
fn nearest_int(v: f32) -> i32 {
    let t = v + 12_582_912.0;
    (t.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// `make_qx_quants` with `rmse_type == 1` and no weights: a symmetric scale for `x` with
/// levels in `-nmax..nmax`, searched over 19 candidate scales for the least weighted error
/// (weights `x^2`). Writes levels biased by `nmax` into `l` and returns the scale.
fn make_qx_quants(nmax: i32, x: &[f32], l: &mut [i8]) -> f32 {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let level = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let nmaxf = nmax as f32;
    let mut iscale = -nmaxf / max;
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for (li, &v) in l.iter_mut().zip(x) {
        let q = level(iscale, v);
        *li = (q + nmax) as i8;
        let w = v * v;
        sumlx += w * v * q as f32;
        suml2 += w * q as f32 * q as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmaxf + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &v in x {
            let q = level(iscale, v);
            let w = v * v;
            sumlx += w * v * q as f32;
            suml2 += w * q as f32 * q as f32;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (li, &v) in l.iter_mut().zip(x) {
                *li = (level(iscale, v) + nmax) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Settings of `make_qkx2_quants`'s search over `nstep + 1` candidate inverse scales
/// `(rmin + rdelta * is + nmax) / (max - min)`.
struct Qkx2 {
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
}

/// `make_qkx2_quants` without mean-absolute-deviation: an affine fit `scale * l - min_out`
/// (levels `0..=nmax`, `min_out >= 0`) minimising the weighted squared error. Returns
/// `(scale, min_out)` and writes the levels into `l`.
fn make_qkx2_quants(p: &Qkx2, x: &[f32], weights: &[f32], l: &mut [u8]) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l.fill(0);
        return (0.0, -min);
    }
    let nmaxf = p.nmax as f32;
    let mut iscale = nmaxf / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let q = nearest_int(iscale * (x[i] - min)).clamp(0, p.nmax);
        l[i] = q as u8;
        let diff = scale * q as f32 + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    if p.nstep < 1 {
        return (scale, -min);
    }
    let mut laux = [0u8; 32];
    let laux = &mut laux[..n];
    for is in 0..=p.nstep {
        iscale = (p.rmin + p.rdelta * is as f32 + nmaxf) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let q = nearest_int(iscale * (x[i] - min)).clamp(0, p.nmax);
            laux[i] = q as u8;
            let w = weights[i];
            let qf = q as f32;
            sum_l += w * qf;
            sum_l2 += w * qf * qf;
            sum_xl += w * qf * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * (diff * diff);
            }
            if cur_error < best_error {
                l.copy_from_slice(laux);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// The shared first half of Q4_K and Q5_K: per 32-element sub-block affine fits, their
/// scales and mins quantized to 6 bits against the block maxima, and the levels recomputed
/// against the rounded scales. Writes `d`, `dmin` and the 12 scale bytes at `b[0..16]` and
/// returns the levels.
fn quant_scaled_min_k(x: &[f32], b: &mut [u8], p: &Qkx2) -> [u8; QK_K] {
    let mut l = [0u8; QK_K];
    let mut scales = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..QK_K / 32 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        let mut weights = [0.0f32; 32];
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (s, m) = make_qkx2_quants(p, xs, &weights, &mut l[32 * j..32 * j + 32]);
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let sc = &mut b[Q4K_SCALES..Q4K_SCALES + 12];
    sc.fill(0);
    for j in 0..QK_K / 32 {
        // C stores nearest_int's result in a uint8_t before clamping.
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            sc[j] = ls;
            sc[j + 4] = lm;
        } else {
            sc[j + 4] = (ls & 0x0F) | ((lm & 0x0F) << 4);
            sc[j - 4] |= (ls >> 4) << 6;
            sc[j] |= (lm >> 4) << 6;
        }
    }
    put_f16(b, Q4K_D, max_scale / 63.0);
    put_f16(b, Q4K_DMIN, max_min / 63.0);
    let (d, dmin) = (f16_at(b, Q4K_D), f16_at(b, Q4K_DMIN));
    let (sc, mn) = scale_min_k4(&b[Q4K_SCALES..]);
    for j in 0..QK_K / 32 {
        let dj = d * sc[j] as f32;
        if dj == 0.0 {
            continue;
        }
        let dm = dmin * mn[j] as f32;
        for i in 32 * j..32 * j + 32 {
            l[i] = nearest_int((x[i] + dm) / dj).clamp(0, p.nmax) as u8;
        }
    }
    l
}

pub(crate) fn quant_q4k(x: &[f32], b: &mut [u8]) {
    let p = Qkx2 {
        nmax: 15,
        rmin: -1.0,
        rdelta: 0.1,
        nstep: 20,
    };
    let l = quant_scaled_min_k(&x[..QK_K], b, &p);
    let qs = &mut b[Q4K_QS..Q4K_QS + 128];
    for c in 0..4 {
        for i in 0..32 {
            qs[32 * c + i] = l[64 * c + i] | (l[64 * c + 32 + i] << 4);
        }
    }
}

pub(crate) fn quant_q5k(x: &[f32], b: &mut [u8]) {
    let p = Qkx2 {
        nmax: 31,
        rmin: -0.5,
        rdelta: 0.1,
        nstep: 15,
    };
    let l = quant_scaled_min_k(&x[..QK_K], b, &p);
    let mut qh = [0u8; 32];
    let qs = &mut b[Q5K_QS..Q5K_QS + 128];
    for c in 0..4 {
        for i in 0..32 {
            let (l1, l2) = (l[64 * c + i], l[64 * c + 32 + i]);
            qh[i] |= ((l1 >> 4) << (2 * c)) | ((l2 >> 4) << (2 * c + 1));
            qs[32 * c + i] = (l1 & 0x0F) | ((l2 & 0x0F) << 4);
        }
    }
    b[Q5K_QH..Q5K_QH + 32].copy_from_slice(&qh);
}

pub(crate) fn quant_q6k(x: &[f32], b: &mut [u8]) {
    let x = &x[..QK_K];
    let b = &mut b[..Q6K_D + 2];
    let mut l = [0i8; QK_K];
    let mut scales = [0.0f32; 16];
    let mut max_scale = 0.0f32;
    let mut max_abs_scale = 0.0f32;
    for g in 0..QK_K / 16 {
        let s = make_qx_quants(32, &x[16 * g..16 * g + 16], &mut l[16 * g..16 * g + 16]);
        scales[g] = s;
        if s.abs() > max_abs_scale {
            max_abs_scale = s.abs();
            max_scale = s;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        b.fill(0);
        return;
    }
    let iscale = -128.0 / max_scale;
    put_f16(b, Q6K_D, 1.0 / iscale);
    for g in 0..QK_K / 16 {
        b[Q6K_SCALES + g] = nearest_int(iscale * scales[g]).min(127) as i8 as u8;
    }
    let d = f16_at(b, Q6K_D);
    for g in 0..QK_K / 16 {
        let dg = d * (b[Q6K_SCALES + g] as i8) as f32;
        if dg == 0.0 {
            continue;
        }
        for i in 16 * g..16 * g + 16 {
            l[i] = (nearest_int(x[i] / dg).clamp(-32, 31) + 32) as i8;
        }
    }
    for h in 0..2 {
        let lh = &l[128 * h..128 * h + 128];
        for i in 0..32 {
            let q = [
                lh[i] as u8,
                lh[i + 32] as u8,
                lh[i + 64] as u8,
                lh[i + 96] as u8,
            ];
            b[Q6K_QL + 64 * h + i] = (q[0] & 0x0F) | ((q[2] & 0x0F) << 4);
            b[Q6K_QL + 64 * h + 32 + i] = (q[1] & 0x0F) | ((q[3] & 0x0F) << 4);
            b[Q6K_QH + 32 * h + i] =
                (q[0] >> 4) | ((q[1] >> 4) << 2) | ((q[2] >> 4) << 4) | ((q[3] >> 4) << 6);
        }
    }
}
