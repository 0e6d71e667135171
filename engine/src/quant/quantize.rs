//! `quantize`: f32 values to packed bytes.

use super::{floats, kquantize, legacy, GgmlType, QuantError};

type QuantBlockFn = fn(&[f32], &mut [u8]);

fn quant_block_fn(ty: GgmlType) -> Option<QuantBlockFn> {
    use GgmlType::*;
    Some(match ty {
        Q4_0 => legacy::quant_q4_0,
        Q4_1 => legacy::quant_q4_1,
        Q5_0 => legacy::quant_q5_0,
        Q5_1 => legacy::quant_q5_1,
        Q8_0 => legacy::quant_q8_0,
        Q4K => kquantize::quant_q4k,
        Q5K => kquantize::quant_q5k,
        Q6K => kquantize::quant_q6k,
        _ => return None,
    })
}

/// Whether [`quantize`] supports `ty`.
pub fn supports_quantize(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) || quant_block_fn(ty).is_some()
}

/// Quantizes `src`, a whole number of blocks, to `ty`.
///
/// F32, F16, BF16 and the 32-element types give the same bytes as gguf-py 0.19's
/// `gguf.quants.quantize` (which matches ggml's reference quantizers). Q4_K, Q5_K and Q6_K
/// follow ggml's `quantize_row_q*_K_ref`, llama.cpp's choice when there is no importance matrix.
pub fn quantize(ty: GgmlType, src: &[f32]) -> Result<Vec<u8>, QuantError> {
    let block_size = ty.block_size();
    if !supports_quantize(ty) {
        return Err(QuantError::UnsupportedQuantize(ty));
    }
    if src.len() % block_size != 0 {
        return Err(QuantError::PartialInputBlock {
            ty,
            elements: src.len(),
            block_size,
        });
    }
    Ok(match ty {
        GgmlType::F32 => floats::quant_f32(src),
        GgmlType::F16 => floats::quant_f16(src),
        GgmlType::BF16 => floats::quant_bf16(src),
        _ => {
            let f = quant_block_fn(ty).ok_or(QuantError::UnsupportedQuantize(ty))?;
            let type_size = ty.type_size();
            let mut out = vec![0u8; src.len() / block_size * type_size];
            for (x, b) in src
                .chunks_exact(block_size)
                .zip(out.chunks_exact_mut(type_size))
            {
                f(x, b);
            }
            out
        }
    })
}
