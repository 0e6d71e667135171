//! 8-bit inputs for Q4_0 and Q8_0 products: the CPU twin of the GPU decode matvec's 8-bit path
//! (kernels' `mv.wgsl` `stage_q8`, `mv_q4_0.wgsl` and `mv_q8_0.wgsl`), which llama.cpp's Q4_0
//! and Q8_0 kernels also use.
//!
//! Each 32-element block of the input keeps its largest magnitude `m`, values
//! `q = round(x * 127 / m)` (ties to even, as WGSL's `round`) and the sum of its original values;
//! a Q4_0 block then contributes `d_w (m / 127 · Σ n q - 8 Σ x)`, where `n` are its nibbles, and
//! a Q8_0 block `d_w m / 127 · Σ w q`, where `w` are its bytes. The
//! rounding costs about 1e-4 of NMSE on Gaussian inputs, against 1e-12 for the float path.

use super::floats::f16_at;
use super::{GgmlType, QuantError};

/// Bytes of a Q4_0 block: an f16 scale, then 16 bytes of nibbles.
const Q4_0_BLOCK: usize = 18;
/// Bytes of a Q8_0 block: an f16 scale, then 32 signed bytes.
const Q8_0_BLOCK: usize = 34;

/// An input vector as 8-bit blocks of 32.
#[derive(Clone, Debug)]
pub struct Q8Input {
    pub q: Vec<i8>,
    /// Each block's step, `m / 127`.
    pub d: Vec<f32>,
    /// Each block's sum of its original values.
    pub sum: Vec<f32>,
}

impl Q8Input {
    /// `x` in blocks of 32; `x.len()` must be a whole number of blocks.
    pub fn new(x: &[f32]) -> Result<Q8Input, QuantError> {
        if x.len() % 32 != 0 {
            return Err(QuantError::PartialInputBlock { ty: GgmlType::Q8_0, elements: x.len(), block_size: 32 });
        }
        let mut out = Q8Input { q: Vec::with_capacity(x.len()), d: Vec::new(), sum: Vec::new() };
        for b in x.chunks_exact(32) {
            let m = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let inv = if m > 0.0 { 127.0 / m } else { 0.0 };
            out.q.extend(b.iter().map(|v| (v * inv).round_ties_even() as i8));
            out.d.push(m / 127.0);
            out.sum.push(b.iter().sum());
        }
        Ok(out)
    }

    /// One Q4_0 or Q8_0 row (as stored in GGUF) times this input, summed in f64.
    pub fn dot(&self, ty: GgmlType, row: &[u8]) -> Result<f64, QuantError> {
        let bs = match ty {
            GgmlType::Q4_0 => Q4_0_BLOCK,
            GgmlType::Q8_0 => Q8_0_BLOCK,
            _ => return Err(QuantError::Unsupported8BitInput(ty)),
        };
        if row.len() != self.d.len() * bs {
            return Err(QuantError::LengthMismatch { ty, what: "row bytes", expected: self.d.len() * bs, actual: row.len() });
        }
        let mut acc = 0.0f64;
        for (i, blk) in row.chunks_exact(bs).enumerate() {
            let dw = f16_at(blk, 0) as f64;
            let q = &self.q[32 * i..32 * i + 32];
            let dx = self.d[i] as f64;
            acc += match ty {
                GgmlType::Q4_0 => {
                    let s: i32 = (0..32).map(|e| ((blk[2 + e % 16] >> (4 * (e / 16))) & 0x0F) as i32 * q[e] as i32).sum();
                    dw * (dx * s as f64 - 8.0 * self.sum[i] as f64)
                }
                _ => {
                    let s: i32 = (0..32).map(|e| blk[2 + e] as i8 as i32 * q[e] as i32).sum();
                    dw * dx * s as f64
                }
            };
        }
        Ok(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{dequantize_to_vec, quantize};

    fn gauss(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                let mut u = || {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
                };
                ((-2.0 * u().ln()).sqrt() * (std::f64::consts::TAU * u()).cos()) as f32
            })
            .collect()
    }

    #[test]
    fn an_8_bit_input_dot_stays_within_its_rounding_of_the_float_dot() {
        let k = 4096;
        for ty in [GgmlType::Q4_0, GgmlType::Q8_0] {
            let (mut err, mut norm) = (0.0, 0.0);
            for r in 0..16 {
                let w = quantize(ty, &gauss(k, 7 + r)).unwrap();
                let x = gauss(k, 1000 + r);
                let exact: f64 = dequantize_to_vec(ty, &w).unwrap().iter().zip(&x).map(|(a, b)| *a as f64 * *b as f64).sum();
                let got = Q8Input::new(&x).unwrap().dot(ty, &w).unwrap();
                err += (got - exact).powi(2);
                norm += exact * exact;
            }
            let nmse = err / norm;
            // Rounding to 8 bits adds a uniform error of a twelfth of a step squared, about
            // 1e-4 of the signal for Gaussian blocks; a wrong nibble, byte or scale costs
            // orders of magnitude more.
            assert!(nmse < 1e-3 && nmse > 1e-7, "{ty:?}: NMSE {nmse:e}");
        }
    }

    #[test]
    fn values_round_to_the_nearest_step_with_ties_to_even() {
        let mut x = vec![0.0f32; 32];
        x[0] = 127.0;
        x[1] = 2.5;
        x[2] = -3.5;
        x[3] = 0.4;
        let q = Q8Input::new(&x).unwrap();
        assert_eq!(&q.q[..4], &[127, 2, -4, 0]);
        assert_eq!(q.d[0], 1.0);
        assert_eq!(q.sum[0], 127.0 + 2.5 - 3.5 + 0.4);
    }

    #[test]
    fn a_partial_block_or_a_mismatched_row_is_refused() {
        assert!(Q8Input::new(&[1.0; 31]).is_err());
        let x = Q8Input::new(&[1.0; 32]).unwrap();
        assert!(x.dot(GgmlType::Q4_0, &[0u8; 17]).is_err());
        assert!(x.dot(GgmlType::Q8_0, &[0u8; 18]).is_err());
        assert_eq!(x.dot(GgmlType::Q4_1, &[0u8; 20]), Err(QuantError::Unsupported8BitInput(GgmlType::Q4_1)));
    }
}
