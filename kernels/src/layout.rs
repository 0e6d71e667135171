//! The GPU layout of a weight row: still the file's quantized blocks, but every block starts
//! on a 4-byte boundary so shaders read whole `u32` words. Blocks whose size is not a multiple
//! of 4 (Q5_0: 22 bytes; Q3_K, Q6_K: 110/210) get 2 bytes of padding; Q5_0 also moves its
//! leading f16 scale to the end so the quants are word-aligned.
//!
//! Q4_0, Q4_1 and Q8_0, the types decode speed is measured on, are stored planar instead:
//! a row's quants of every block first (16 or 32 bytes a block, so a block is one or two
//! 16-byte loads), then its scales (2 bytes a block, 4 for Q4_1's d and m), the row padded to
//! 16 bytes. The bytes are the file's; only their order changes.

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

/// (scale bytes, quant bytes) of a block of the planar types.
pub fn planar(ty: GgmlType) -> Option<(usize, usize)> {
    match ty {
        GgmlType::Q4_0 => Some((2, 16)),
        GgmlType::Q4_1 => Some((4, 16)),
        GgmlType::Q8_0 => Some((2, 32)),
        _ => None,
    }
}

/// Bytes of a row of `cols` elements in the GPU layout; always a multiple of 4 (of 16 for
/// the planar types).
pub fn gpu_row_bytes(ty: GgmlType, cols: usize) -> usize {
    let blocks = cols / ty.block_size();
    if let Some((s, q)) = planar(ty) {
        return (blocks * (s + q)).next_multiple_of(16);
    }
    match ty {
        GgmlType::F16 | GgmlType::BF16 => (cols * 2 + 3) & !3,
        _ => blocks * gpu_block_bytes(ty),
    }
}

/// Whether the legacy block keeps its f16 `d` first in the file but last on the GPU.
fn moves_scale(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q5_0)
}

/// Repacks one file row into `dst` (`gpu_row_bytes` long).
pub fn repack_row(ty: GgmlType, src: &[u8], dst: &mut [u8]) {
    if let Some((sb, qb)) = planar(ty) {
        let nb = src.len() / (sb + qb);
        for (i, blk) in src.chunks_exact(sb + qb).enumerate() {
            dst[i * qb..(i + 1) * qb].copy_from_slice(&blk[sb..]);
            dst[nb * qb + i * sb..nb * qb + (i + 1) * sb].copy_from_slice(&blk[..sb]);
        }
        dst[nb * (sb + qb)..].fill(0);
        return;
    }
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
        let src: Vec<u8> = (0..22).collect();
        let mut dst = vec![0xAA; 24];
        repack_row(GgmlType::Q5_0, &src, &mut dst);
        assert_eq!(&dst[..20], &src[2..]);
        assert_eq!(&dst[20..22], &src[..2]);
        assert_eq!(&dst[22..], &[0, 0]);
    }

    #[test]
    fn planar_rows_put_every_quant_before_the_scales_on_16_byte_rows() {
        // Three Q4_0 blocks: d (2 bytes) then 16 quant bytes each.
        let src: Vec<u8> = (0..54).collect();
        let mut dst = vec![0xAA; gpu_row_bytes(GgmlType::Q4_0, 96)];
        assert_eq!(dst.len(), 64);
        repack_row(GgmlType::Q4_0, &src, &mut dst);
        for b in 0..3 {
            assert_eq!(&dst[b * 16..b * 16 + 16], &src[b * 18 + 2..b * 18 + 18]);
            assert_eq!(&dst[48 + 2 * b..50 + 2 * b], &src[b * 18..b * 18 + 2]);
        }
        assert!(dst[54..].iter().all(|&b| b == 0));
    }
}
