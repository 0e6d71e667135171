//! `vec_dot`: one packed weight row times f32 activations, dequantizing on the fly.
//!
//! Two implementations: AVX2+FMA+F16C kernels (x86-64, chosen at run time, once) and a
//! portable scalar path. Neither is bit-identical to dequantize-then-dot: both sum in a
//! different order, and the SIMD kernels factor each block's scale out of its sum.

use std::sync::OnceLock;

use super::dequant::block_fn;
use super::floats::{bf16_bits_to_f32, f16_at};
use super::GgmlType;

/// An instruction-set level for the dot kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Portable Rust, auto-vectorised at best.
    Scalar,
    /// x86-64 AVX2 with FMA and F16C.
    Avx2,
}

impl Isa {
    /// Whether this CPU can run `self`.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            Isa::Avx2 => avx2_detected(),
        }
    }

    /// The best level this CPU supports, detected once per process.
    pub fn detected() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            if avx2_detected() {
                Isa::Avx2
            } else {
                Isa::Scalar
            }
        })
    }
}

#[cfg(target_arch = "x86_64")]
fn avx2_detected() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

#[cfg(not(target_arch = "x86_64"))]
fn avx2_detected() -> bool {
    false
}

/// Dot product of one packed row of `ty` with `x`, without allocating.
///
/// `x` should hold exactly the row's element count; only the whole blocks present in both
/// `row` and `x` are used, so a short slice gives a partial sum rather than a panic.
/// [`super::matvec`] checks the shapes. Types [`super::dequantize`] does not support give NaN.
pub fn vec_dot(ty: GgmlType, row: &[u8], x: &[f32]) -> f32 {
    vec_dot_with(Isa::detected(), ty, row, x)
}

/// [`vec_dot`] on a chosen instruction set; an unavailable one falls back to scalar.
pub fn vec_dot_with(isa: Isa, ty: GgmlType, row: &[u8], x: &[f32]) -> f32 {
    let n_blocks = (row.len() / ty.type_size()).min(x.len() / ty.block_size());
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2 && isa.is_available() {
        // SAFETY: the CPU supports AVX2, FMA and F16C (checked just above), and `n_blocks`
        // whole blocks fit in both `row` and `x`.
        if let Some(v) = unsafe { super::dot_avx2::vec_dot(ty, row, x, n_blocks) } {
            return v;
        }
    }
    let _ = isa;
    vec_dot_scalar(ty, row, x, n_blocks)
}

/// f32 dot product with eight independent partial sums, which the compiler can vectorise.
pub(crate) fn dot_f32_scalar(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (xa, xb) in (&mut ca).zip(&mut cb) {
        for k in 0..8 {
            acc[k] += xa[k] * xb[k];
        }
    }
    let mut tail = 0.0f32;
    for (p, q) in ca.remainder().iter().zip(cb.remainder()) {
        tail += p * q;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

fn vec_dot_scalar(ty: GgmlType, row: &[u8], x: &[f32], n_blocks: usize) -> f32 {
    let (ts, bs) = (ty.type_size(), ty.block_size());
    let row = &row[..n_blocks * ts];
    let x = &x[..n_blocks * bs];
    let mut buf = [0.0f32; 256];
    match ty {
        GgmlType::F32 => {
            let mut sum = 0.0f32;
            for (rc, xc) in row.chunks(4 * 256).zip(x.chunks(256)) {
                for (o, c) in buf.iter_mut().zip(rc.chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
                sum += dot_f32_scalar(&buf[..xc.len()], xc);
            }
            sum
        }
        GgmlType::F16 | GgmlType::BF16 => {
            let mut sum = 0.0f32;
            for (rc, xc) in row.chunks(2 * 256).zip(x.chunks(256)) {
                for (i, o) in buf[..xc.len()].iter_mut().enumerate() {
                    *o = if ty == GgmlType::F16 {
                        f16_at(rc, 2 * i)
                    } else {
                        bf16_bits_to_f32(u16::from_le_bytes([rc[2 * i], rc[2 * i + 1]]))
                    };
                }
                sum += dot_f32_scalar(&buf[..xc.len()], xc);
            }
            sum
        }
        _ => match block_fn(ty) {
            Some(f) => {
                let mut sum = 0.0f32;
                for (b, xc) in row.chunks_exact(ts).zip(x.chunks_exact(bs)) {
                    f(b, &mut buf[..bs]);
                    sum += dot_f32_scalar(&buf[..bs], xc);
                }
                sum
            }
            None => f32::NAN,
        },
    }
}

/// An activation vector prepared for a product with many rows of one type: it caches what
/// every row's dot product would otherwise recompute, the sums of `x` over each 32 elements,
/// which the affine formats need for their offset term.
pub(crate) struct PreparedX<'a> {
    ty: GgmlType,
    x: &'a [f32],
    isa: Isa,
    sums: Vec<f32>,
    /// 16-bit activations for the integer kernels, where `ty` has one.
    #[cfg(target_arch = "x86_64")]
    levels: Option<super::dot_i16::XI16>,
}

impl<'a> PreparedX<'a> {
    pub(crate) fn new(ty: GgmlType, x: &'a [f32]) -> PreparedX<'a> {
        let isa = Isa::detected();
        #[cfg(target_arch = "x86_64")]
        let levels = (isa == Isa::Avx2 && super::dot_i16::supports(ty))
            .then(|| super::dot_i16::XI16::new(x))
            .flatten();
        let presummed = isa == Isa::Avx2 && matches!(ty, GgmlType::Q4_1 | GgmlType::Q4K);
        let sums = if presummed {
            x.chunks_exact(32).map(|c| c.iter().sum()).collect()
        } else {
            Vec::new()
        };
        PreparedX {
            ty,
            x,
            isa,
            sums,
            #[cfg(target_arch = "x86_64")]
            levels,
        }
    }

    /// `row · x`, equal to [`vec_dot`] up to rounding.
    pub(crate) fn dot(&self, row: &[u8]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if let Some(levels) = &self.levels {
            let n_blocks = (row.len() / self.ty.type_size()).min(levels.scales.len());
            // SAFETY: `levels` is only built when AVX2/FMA/F16C were detected; `n_blocks`
            // whole blocks fit in `row` and in the prepared activations (and in `sums`, which
            // Q4_1 fills with one entry per block).
            if let Some(v) = unsafe { super::dot_i16::dot(self.ty, row, levels, &self.sums, n_blocks) } {
                return v;
            }
        }
        #[cfg(target_arch = "x86_64")]
        if !self.sums.is_empty() {
            let ty = self.ty;
            let n_blocks = (row.len() / ty.type_size()).min(self.x.len() / ty.block_size());
            // SAFETY: `sums` is only filled when AVX2/FMA/F16C were detected; `n_blocks` whole
            // blocks fit in `row` and `x`, and `sums` has an entry per 32 elements of `x`.
            if let Some(v) =
                unsafe { super::dot_avx2::vec_dot_presummed(ty, row, self.x, &self.sums, n_blocks) }
            {
                return v;
            }
        }
        vec_dot_with(self.isa, self.ty, row, self.x)
    }
}
