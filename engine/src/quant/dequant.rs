//! `dequantize`: packed bytes of any supported type to f32.

use super::{floats, kquants, legacy, GgmlType, QuantError};

/// Dequantizes one block: `block` is `type_size` bytes, `out` is `block_size` values.
pub(crate) type BlockFn = fn(&[u8], &mut [f32]);

/// The block dequantizer of a quantized type; `None` for float types and unsupported ones.
pub(crate) fn block_fn(ty: GgmlType) -> Option<BlockFn> {
    use GgmlType::*;
    Some(match ty {
        Q4_0 => legacy::dequant_q4_0,
        Q4_1 => legacy::dequant_q4_1,
        Q5_0 => legacy::dequant_q5_0,
        Q5_1 => legacy::dequant_q5_1,
        Q8_0 => legacy::dequant_q8_0,
        Q2K => kquants::dequant_q2k,
        Q3K => kquants::dequant_q3k,
        Q4K => kquants::dequant_q4k,
        Q5K => kquants::dequant_q5k,
        Q6K => kquants::dequant_q6k,
        _ => return None,
    })
}

/// Whether [`dequantize`] (and so [`super::vec_dot`]) supports `ty`.
pub fn supports_dequantize(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) || block_fn(ty).is_some()
}

/// Number of elements held by `bytes` bytes of `ty`, checking that they are whole blocks.
pub fn element_count(ty: GgmlType, bytes: usize) -> Result<usize, QuantError> {
    let type_size = ty.type_size();
    if bytes % type_size != 0 {
        return Err(QuantError::PartialBlock {
            ty,
            bytes,
            type_size,
        });
    }
    // Cannot overflow: block_size <= 256 and type_size >= block_size / 2.
    Ok(bytes / type_size * ty.block_size())
}

/// Dequantizes `src` (whole blocks of `ty`) into `dst`, which must have exactly as many
/// elements as `src` holds. The result is bit-identical to gguf-py 0.19's
/// `gguf.quants.dequantize`.
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    if !supports_dequantize(ty) {
        return Err(QuantError::UnsupportedDequantize(ty));
    }
    let n = element_count(ty, src.len())?;
    if dst.len() != n {
        return Err(QuantError::LengthMismatch {
            ty,
            what: "output",
            expected: n,
            actual: dst.len(),
        });
    }
    match ty {
        GgmlType::F32 => floats::dequant_f32(src, dst),
        GgmlType::F16 => floats::dequant_f16(src, dst),
        GgmlType::BF16 => floats::dequant_bf16(src, dst),
        _ => {
            let f = block_fn(ty).ok_or(QuantError::UnsupportedDequantize(ty))?;
            for (b, o) in src
                .chunks_exact(ty.type_size())
                .zip(dst.chunks_exact_mut(ty.block_size()))
            {
                f(b, o);
            }
        }
    }
    Ok(())
}

/// [`dequantize`] into a new vector.
pub fn dequantize_to_vec(ty: GgmlType, src: &[u8]) -> Result<Vec<f32>, QuantError> {
    if !supports_dequantize(ty) {
        return Err(QuantError::UnsupportedDequantize(ty));
    }
    let mut out = vec![0.0; element_count(ty, src.len())?];
    dequantize(ty, src, &mut out)?;
    Ok(out)
}
