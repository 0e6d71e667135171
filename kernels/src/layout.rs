//! The GPU layout of a weight row: still the file's quantized blocks, but every block starts
//! on a 4-byte boundary so shaders read whole `u32` words. Blocks whose size is not a multiple
//! of 4 (Q4_0, Q5_0, Q8_0: 18/22/34 bytes; Q3_K, Q6_K: 110/210) get 2 bytes of padding; the
//! legacy ones also move their leading f16 scale to the end so the quants are word-aligned.
//! That grows those tensors by 1–11%, and nothing is ever expanded to f32.

use hangar_engine::quant::GgmlType;

/// Types the matvec/embedding kernels read.
pub fn supported(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q2K | Q3K | Q4K | Q5K | Q6K)
}

/// Bytes of one block in the GPU layout (for F16/BF16: one element, rows padded separately).
fn gpu_block_bytes(ty: GgmlType) -> usize {
    let b = ty.type_size();
    (b + 3) & !3
}

/// Bytes of a row of `cols` elements in the GPU layout; always a multiple of 4.
pub fn gpu_row_bytes(ty: GgmlType, cols: usize) -> usize {
    let blocks = cols / ty.block_size();
    match ty {
        GgmlType::F16 | GgmlType::BF16 => (cols * 2 + 3) & !3,
        _ => blocks * gpu_block_bytes(ty),
    }
}

/// Whether the legacy block keeps its f16 `d` first in the file but last on the GPU.
fn moves_scale(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0)
}

/// Repacks one file row into `dst` (`gpu_row_bytes` long).
pub fn repack_row(ty: GgmlType, src: &[u8], dst: &mut [u8]) {
    let (sb, db) = (ty.type_size(), gpu_block_bytes(ty));
    if sb == db || matches!(ty, GgmlType::F16 | GgmlType::BF16) {
        let n = src.len().min(dst.len());
        dst[..n].copy_from_slice(&src[..n]);
        dst[n..].fill(0);
        return;
    }
    for (s, d) in src.chunks_exact(sb).zip(dst.chunks_exact_mut(db)) {
        if moves_scale(ty) {
            d[..sb - 2].copy_from_slice(&s[2..]);
            d[sb - 2..sb].copy_from_slice(&s[..2]);
        } else {
            d[..sb].copy_from_slice(s);
        }
        d[sb..].fill(0);
    }
}

/// Snake-case name used for the shader snippet (`dq_<name>.wgsl`).
pub fn shader_name(ty: GgmlType) -> &'static str {
    use GgmlType::*;
    match ty {
        F32 => "f32",
        F16 => "f16",
        BF16 => "bf16",
        Q4_0 => "q4_0",
        Q4_1 => "q4_1",
        Q5_0 => "q5_0",
        Q5_1 => "q5_1",
        Q8_0 => "q8_0",
        Q2K => "q2_k",
        Q3K => "q3_k",
        Q4K => "q4_k",
        Q5K => "q5_k",
        Q6K => "q6_k",
        _ => "unsupported",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_gpu_row_is_word_aligned_and_at_most_eleven_percent_larger() {
        for ty in [GgmlType::F16, GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::Q5_0, GgmlType::Q3K, GgmlType::Q6K, GgmlType::Q4K] {
            let cols = 512;
            let file = cols / ty.block_size() * ty.type_size();
            let gpu = gpu_row_bytes(ty, cols);
            assert_eq!(gpu % 4, 0, "{ty:?}");
            assert!(gpu as f64 <= file as f64 * 1.12, "{ty:?}: {gpu} vs {file}");
        }
    }

    #[test]
    fn legacy_blocks_move_their_scale_behind_the_quants() {
        let src: Vec<u8> = (0..18).collect();
        let mut dst = vec![0xAA; 20];
        repack_row(GgmlType::Q4_0, &src, &mut dst);
        assert_eq!(&dst[..16], &src[2..]);
        assert_eq!(&dst[16..18], &src[..2]);
        assert_eq!(&dst[18..], &[0, 0]);
    }
}
