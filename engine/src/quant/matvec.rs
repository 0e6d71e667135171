//! Row-parallel products of a packed weight matrix (`n_rows` rows of `k` elements, row-major,
//! as ggml stores `dims = [k, n_rows]`) with f32 activations.

use crate::threads::Team;

use super::dequant::{dequantize, supports_dequantize};
use super::dot::{dot_f32_scalar, Isa, PreparedX};
use super::{GgmlType, QuantError};

/// Weight bytes below which a matvec runs on the calling thread. Measured on SmolLM2 decode
/// (bench/RESULTS.md): splitting the 69 KiB k/v projections cost more in hand-offs than the
/// second core gave back.
const SERIAL_BYTES: usize = 128 * 1024;
/// Largest share of weight bytes handed to one task. Tasks stream their rows sequentially,
/// and long streams are what the hardware prefetcher rewards: 16 KiB tasks ran decode at
/// half the speed of 256 KiB ones on the same machine.
const TASK_BYTES: usize = 256 * 1024;
/// Weight rows dequantized together in `matmul`, so each activation row is read from cache
/// once per tile rather than once per weight row.
const MATMUL_TILE_ROWS: usize = 16;

/// Checks the shapes shared by `matvec` and `matmul`; returns the bytes per weight row.
fn check_weights(
    ty: GgmlType,
    weights: &[u8],
    n_rows: usize,
    k: usize,
) -> Result<usize, QuantError> {
    if !supports_dequantize(ty) {
        return Err(QuantError::UnsupportedDequantize(ty));
    }
    let block_size = ty.block_size();
    if k % block_size != 0 {
        return Err(QuantError::PartialInputBlock {
            ty,
            elements: k,
            block_size,
        });
    }
    let row_bytes = k / block_size * ty.type_size();
    let total = row_bytes.checked_mul(n_rows).ok_or(QuantError::Overflow {
        what: "weight bytes",
        a: row_bytes,
        b: n_rows,
    })?;
    if weights.len() != total {
        return Err(QuantError::LengthMismatch {
            ty,
            what: "weight bytes",
            expected: total,
            actual: weights.len(),
        });
    }
    Ok(row_bytes)
}

fn rows_per_task(row_bytes: usize) -> usize {
    (TASK_BYTES / row_bytes.max(1)).max(1)
}

/// Rows per task for a matvec over `n_rows` rows on a team of `threads`: the fewest tasks of
/// at most [`TASK_BYTES`] each, rounded up to a multiple of the team size so that every
/// thread gets the same share (uneven shares leave a core waiting at the end of each loop).
fn balanced_rows_per_task(n_rows: usize, row_bytes: usize, threads: usize) -> usize {
    let threads = threads.max(1);
    let total = n_rows * row_bytes;
    let rounds = total.div_ceil(threads * TASK_BYTES).max(1);
    n_rows.div_ceil(threads * rounds).max(1)
}

/// `out[r] = weights[r] · x` for each of the `n_rows` rows; `x.len()` is the row length `k`.
/// Each row is a [`super::vec_dot`] (up to rounding: per-32-element sums of `x` are computed
/// once here rather than per row), in parallel over chunks of rows.
pub fn matvec(
    ty: GgmlType,
    weights: &[u8],
    n_rows: usize,
    x: &[f32],
    out: &mut [f32],
) -> Result<(), QuantError> {
    let row_bytes = check_weights(ty, weights, n_rows, x.len())?;
    if out.len() != n_rows {
        return Err(QuantError::LengthMismatch {
            ty,
            what: "output",
            expected: n_rows,
            actual: out.len(),
        });
    }
    if row_bytes == 0 {
        out.fill(0.0);
        return Ok(());
    }
    let rows = weights.chunks_exact(row_bytes);
    let px = PreparedX::new(ty, x);
    let team = Team::global();
    if weights.len() < SERIAL_BYTES || team.size() == 1 {
        for (o, row) in out.iter_mut().zip(rows) {
            *o = px.dot(row);
        }
        return Ok(());
    }
    let per_task = balanced_rows_per_task(n_rows, row_bytes, team.size());
    team.for_each_chunk_mut(out, per_task, |i, o| {
        let w = &weights[i * per_task * row_bytes..];
        for (o, row) in o.iter_mut().zip(w.chunks_exact(row_bytes)) {
            *o = px.dot(row);
        }
    });
    Ok(())
}

/// `n` matvecs sharing one pass over the weights: row `i` of the `[n, n_rows]` result is
/// bit-identical to `matvec` of row `i` of `xs`, whatever the other rows are. Batched decode
/// uses it so a sequence's tokens do not depend on what it is batched with.
pub fn matvec_rows(
    ty: GgmlType,
    weights: &[u8],
    n_rows: usize,
    xs: &[f32],
    n: usize,
    out: &mut [f32],
) -> Result<(), QuantError> {
    if n == 0 || xs.len() % n != 0 {
        return Err(QuantError::LengthMismatch { ty, what: "activations", expected: n, actual: xs.len() });
    }
    let k = xs.len() / n;
    let row_bytes = check_weights(ty, weights, n_rows, k)?;
    let expected = n.checked_mul(n_rows).ok_or(QuantError::Overflow { what: "output", a: n, b: n_rows })?;
    if out.len() != expected {
        return Err(QuantError::LengthMismatch { ty, what: "output", expected, actual: out.len() });
    }
    if row_bytes == 0 {
        out.fill(0.0);
        return Ok(());
    }
    let pxs: Vec<PreparedX> = xs.chunks_exact(k).map(|x| PreparedX::new(ty, x)).collect();
    // Tasks own weight rows and write a transposed `[rows, n]` block, so each weight row is
    // streamed once for the whole batch.
    let mut out_t = vec![0.0f32; expected];
    let task = |first_row: usize, o: &mut [f32]| {
        let w = &weights[first_row * row_bytes..];
        for (col, row) in o.chunks_exact_mut(n).zip(w.chunks_exact(row_bytes)) {
            for (c, px) in col.iter_mut().zip(&pxs) {
                *c = px.dot(row);
            }
        }
    };
    let team = Team::global();
    if weights.len().saturating_mul(n) < SERIAL_BYTES || team.size() == 1 {
        task(0, &mut out_t);
    } else {
        let per_task = balanced_rows_per_task(n_rows, row_bytes, team.size());
        team.for_each_chunk_mut(&mut out_t, per_task * n, |i, o| task(i * per_task, o));
    }
    untranspose(&out_t, n, n_rows, out);
    Ok(())
}

/// Writes the `[n_rows, n]` block `out_t` (tasks own weight rows) as the `[n, n_rows]` result.
fn untranspose(out_t: &[f32], n: usize, n_rows: usize, out: &mut [f32]) {
    for (r, col) in out_t.chunks_exact(n).enumerate() {
        for (i, &v) in col.iter().enumerate() {
            out[i * n_rows + r] = v;
        }
    }
}

/// `o[r * n + i] = d[r] · xs[i]` for the `rows` rows of `d` and the `n` rows of `xs`, each
/// pair summed in an order that does not depend on the other rows.
fn gemm_f32(d: &[f32], rows: usize, xs: &[f32], n: usize, k: usize, o: &mut [f32]) {
    assert!(d.len() >= rows * k && xs.len() >= n * k && o.len() >= rows * n);
    #[cfg(target_arch = "x86_64")]
    if Isa::detected() == Isa::Avx2 {
        // SAFETY: AVX2/FMA/F16C are present; the asserted lengths cover every access.
        return unsafe { super::dot_avx2::gemm_f32(d.as_ptr(), rows, xs.as_ptr(), n, k, o.as_mut_ptr(), n) };
    }
    for (i, x) in xs.chunks_exact(k).take(n).enumerate() {
        for (r, dr) in d.chunks_exact(k).take(rows).enumerate() {
            o[r * n + i] = dot_f32_scalar(dr, x);
        }
    }
}

/// Batched product for prompt processing: `out[i * n_rows + r] = weights[r] · xs[i]` for
/// the `n` activation rows of `xs` (row-major `n x k`).
///
/// Each tile of weight rows is dequantized once (exactly, as [`dequantize`]) and multiplied
/// in f32 with every activation row, so results can differ from [`matvec`]'s in the last bits.
pub fn matmul(
    ty: GgmlType,
    weights: &[u8],
    n_rows: usize,
    xs: &[f32],
    n: usize,
    out: &mut [f32],
) -> Result<(), QuantError> {
    if n == 0 {
        // No activation rows: nothing to compute, and the row length is unknown.
        if !out.is_empty() {
            return Err(QuantError::LengthMismatch {
                ty,
                what: "output",
                expected: 0,
                actual: out.len(),
            });
        }
        return Ok(());
    }
    if xs.len() % n != 0 {
        return Err(QuantError::LengthMismatch {
            ty,
            what: "activations",
            expected: xs.len() / n * n,
            actual: xs.len(),
        });
    }
    let k = xs.len() / n;
    let row_bytes = check_weights(ty, weights, n_rows, k)?;
    let expected = n.checked_mul(n_rows).ok_or(QuantError::Overflow {
        what: "output",
        a: n,
        b: n_rows,
    })?;
    if out.len() != expected {
        return Err(QuantError::LengthMismatch {
            ty,
            what: "output",
            expected,
            actual: out.len(),
        });
    }
    if n == 1 {
        return matvec(ty, weights, n_rows, xs, out);
    }
    if row_bytes == 0 {
        out.fill(0.0);
        return Ok(());
    }
    // Each tile writes a contiguous `tile_rows x n` block of the transposed result.
    let mut out_t = vec![0.0f32; expected];
    let tile = |(w, o): (&[u8], &mut [f32])| {
        let rows = w.len() / row_bytes;
        let mut deq = vec![0.0f32; rows * k];
        for (row, d) in w.chunks_exact(row_bytes).zip(deq.chunks_exact_mut(k)) {
            // Shapes were checked above, so this cannot fail.
            let _ = dequantize(ty, row, d);
        }
        gemm_f32(&deq, rows, xs, n, k, o);
    };
    let tile_rows = MATMUL_TILE_ROWS.min(rows_per_task(row_bytes).max(4));
    let work = weights.len().saturating_mul(n);
    if work < SERIAL_BYTES {
        weights
            .chunks(tile_rows * row_bytes)
            .zip(out_t.chunks_mut(tile_rows * n))
            .for_each(tile);
    } else {
        Team::global().for_each_chunk_mut(&mut out_t, tile_rows * n, |i, o| {
            let start = i * tile_rows * row_bytes;
            let end = (start + tile_rows * row_bytes).min(weights.len());
            tile((&weights[start..end], o));
        });
    }
    untranspose(&out_t, n, n_rows, out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Batch invariance rests on this: each row of a batched matvec is exactly (bit for bit)
    /// the one-row matvec, for every row position and batch size, serial or on the team.
    #[test]
    fn batched_matvec_rows_are_bit_identical_to_single_matvecs() {
        for (ty, k, n_rows) in [(GgmlType::Q4_1, 576, 64), (GgmlType::Q8_0, 576, 600), (GgmlType::Q4K, 512, 40), (GgmlType::Q6K, 256, 700)] {
            let w: Vec<f32> = (0..k * n_rows).map(|i| ((i * 2654435761usize) % 1999) as f32 / 1000.0 - 1.0).collect();
            let wq: Vec<u8> = w.chunks(k).flat_map(|r| super::super::quantize(ty, r).expect("quantize")).collect();
            for n in [2, 5, 32] {
                let xs: Vec<f32> = (0..n * k).map(|i| ((i * 40503) % 997) as f32 / 500.0 - 1.0).collect();
                let mut batched = vec![0.0f32; n * n_rows];
                matvec_rows(ty, &wq, n_rows, &xs, n, &mut batched).expect("batched");
                for (i, x) in xs.chunks(k).enumerate() {
                    let mut one = vec![0.0f32; n_rows];
                    matvec(ty, &wq, n_rows, x, &mut one).expect("single");
                    let same = one.iter().zip(&batched[i * n_rows..(i + 1) * n_rows]).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{ty}: row {i} of {n} differs from its own matvec");
                }
            }
        }
    }
}
