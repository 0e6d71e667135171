//! Token choice on the device: argmax (kept on the device for the next step's embedding, or
//! read back), the logits mask of banned tokens, the sparse edits of logit bias and penalties,
//! and the device sampler's chain (top-k, top-p, min-p, temperature) for one row or every row
//! of a batched step, in the same submission as the step. Only token ids come back to the host.

use hangar_engine::backend::{Act, BackendError, DeviceSampling, LogitEdit};

use crate::backend::{shape, u, ActInfo, GpuBackend};
use crate::pipelines::Op;
use crate::recorder::{Binds, PendingWord, TOKEN_SLOT};

/// A decode step's token id on its way back (see `GpuBackend::argmax_to_device`).
pub struct PendingToken(PendingWord);

impl GpuBackend {
    /// Picks the argmax of the one-row logits `x` on the device, leaves it where the next
    /// step's embedding can read it (`set_token_from_device`) and submits the step without
    /// waiting, so the host can record the next step while this one runs.
    pub fn argmax_to_device(&mut self, x: Act) -> Result<PendingToken, BackendError> {
        let a = self.ready(x)?;
        if a.rows != 1 || a.cols == 0 {
            return Err(shape("argmax", format!("{}x{} logits; one row expected", a.rows, a.cols)));
        }
        self.dispatch_argmax(a, TOKEN_SLOT)?;
        Ok(PendingToken(self.rec.flush_async(&self.arenas, TOKEN_SLOT)?))
    }

    /// Each row's argmax of `a` as f32 at `out`: a row wider than one workgroup walks well is
    /// split into slices of at least 2,048 values (at most 256 of them) reduced by a second pass.
    fn dispatch_argmax(&mut self, a: ActInfo, out: u32) -> Result<(), BackendError> {
        let rows = u(a.rows, "rows")?;
        let cols = u(a.cols, "columns")?;
        if cols <= 4096 {
            self.rec.dispatch(Op::Argmax, None, &[a.off, cols, out, 0], [rows, 1, 1], Binds::default());
            return Ok(());
        }
        let chunk = cols.div_ceil(256).max(2048);
        let parts = cols.div_ceil(chunk);
        let (_, pairs) = self.new_act(a.rows, 2 * parts as usize)?;
        self.rec.dispatch(Op::Argmax, None, &[a.off, cols, pairs, 1, chunk, parts], [parts, rows, 1], Binds::default());
        self.rec.dispatch(Op::Argmax, None, &[pairs, cols, out, 2, chunk, parts], [rows, 1, 1], Binds::default());
        Ok(())
    }

    /// The token id of an `argmax_to_device` step, waiting for it if needed.
    pub fn wait_token(&mut self, p: PendingToken) -> Result<u32, BackendError> {
        Ok(self.rec.wait_word(p.0)? as u32)
    }

    /// Each row's argmax, read back (`Backend::argmax`).
    pub(crate) fn argmax_rows(&mut self, x: Act, cols: usize) -> Result<Vec<u32>, BackendError> {
        let a = self.ready(x)?;
        if cols != a.cols || a.cols == 0 {
            return Err(shape("argmax", format!("{cols} columns asked of a {}-wide activation", a.cols)));
        }
        let (_, off) = self.new_act(a.rows, 1)?;
        self.dispatch_argmax(a, off)?;
        let ids = self.flush(Some((off, a.rows)))?.unwrap_or_default();
        Ok(ids.into_iter().map(|v| v as u32).collect())
    }

    /// Logits with the banned bitset's tokens set to -inf (`Backend::mask_logits`).
    pub(crate) fn mask(&mut self, x: Act, banned: &[u32]) -> Result<Act, BackendError> {
        if banned.is_empty() {
            return Ok(x);
        }
        self.dispatch_mask(x, banned, banned.len(), 0)
    }

    /// Each row masked with its own bitset, in one dispatch (`Backend::mask_logits_rows`): the
    /// bitsets are packed at the longest one's stride, the shorter ones padded with zero words
    /// (which ban nothing, as a short bitset does).
    pub(crate) fn mask_rows(&mut self, x: Act, banned: &[&[u32]]) -> Result<Act, BackendError> {
        let rows = self.ready(x)?.rows;
        if banned.len() != rows {
            return Err(shape("mask_logits_rows", format!("{} bitsets for {rows} rows", banned.len())));
        }
        if banned.iter().all(|b| b.iter().all(|&w| w == 0)) {
            return Ok(x);
        }
        let stride = banned.iter().map(|b| b.len()).max().unwrap_or(0);
        let mut words = vec![0u32; rows * stride];
        for (dst, b) in words.chunks_exact_mut(stride).zip(banned) {
            dst[..b.len()].copy_from_slice(b);
        }
        self.dispatch_mask(x, &words, stride, stride)
    }

    /// A copy of `x` with sparse edits (`Backend::edit_logits`): mask.wgsl copies it (a
    /// bitset that bans nothing), then rewrites the edited elements in its edit mode.
    pub(crate) fn edit(&mut self, x: Act, edits: &[LogitEdit]) -> Result<Act, BackendError> {
        let a = self.ready(x)?;
        let total = a.rows * a.cols;
        if let Some(e) = edits.iter().find(|e| e.index as usize >= total) {
            return Err(shape("edit_logits", format!("element {} of {}x{} logits", e.index, a.rows, a.cols)));
        }
        let out = self.dispatch_mask(x, &[0], 1, 0)?;
        if edits.is_empty() {
            return Ok(out);
        }
        let out_off = self.ready(out)?.off;
        let words: Vec<u32> = edits.iter().flat_map(|e| [e.index, e.add.to_bits(), e.rep.to_bits(), e.inv_rep.to_bits(), e.sub.to_bits()]).collect();
        // Raw words in the f32 scratch, as the mask's bitset travels.
        let edits_off = self.rec.upload(bytemuck::cast_slice(&words))?;
        let n = u(edits.len(), "edits")?;
        let p = [a.off, a.cols as u32, edits_off, n, out_off, u(total, "logits")?, 0, 1];
        let wg = self.threads(edits.len())?;
        self.rec.dispatch(Op::Mask, None, &p, wg, Binds::default());
        Ok(out)
    }

    /// mask.wgsl over `x` with the bitset words `words` (`len` words a bitset; `row_words` apart
    /// per row, or 0 for one bitset for every row).
    fn dispatch_mask(&mut self, x: Act, words: &[u32], len: usize, row_words: usize) -> Result<Act, BackendError> {
        let a = self.ready(x)?;
        let total = a.rows * a.cols;
        // The words travel as f32 bit patterns (the scratch is f32) and are reinterpreted in
        // the shader; nothing reads them as numbers.
        let mask_off = self.rec.upload(bytemuck::cast_slice(words))?;
        let (out, off) = self.new_act(a.rows, a.cols)?;
        let p = [a.off, a.cols as u32, mask_off, u(len, "mask words")?, off, u(total, "logits")?, u(row_words, "mask words")?, 0];
        let wg = self.threads(total)?;
        self.rec.dispatch(Op::Mask, None, &p, wg, Binds::default());
        Ok(out)
    }

    /// A token drawn on the device from one row of logits (`Backend::sample`).
    pub(crate) fn sample_one(&mut self, x: Act, p: &DeviceSampling, u01: f32) -> Result<u32, BackendError> {
        let a = self.ready(x)?;
        if a.rows != 1 || a.cols == 0 {
            return Err(shape("sample", format!("{}x{} logits; one row expected", a.rows, a.cols)));
        }
        Ok(self.draw_rows(x, a.cols, &[(*p, u01)])?[0])
    }

    /// A token per row of `x`, drawn as `picks` say (`Backend::sample_rows`), in one submission
    /// that reads back only the ids: argmax.wgsl answers the greedy rows (exactly as `argmax`
    /// would alone), sample_topk.wgsl the rows whose top-k is at most `TOP_K_MAX` (two
    /// dispatches for all of them: every chunk of every row, then one workgroup a row), and
    /// sample.wgsl the others, one workgroup a row.
    pub(crate) fn draw_rows(&mut self, x: Act, cols: usize, picks: &[(DeviceSampling, f32)]) -> Result<Vec<u32>, BackendError> {
        let a = self.ready(x)?;
        if a.rows != picks.len() || a.cols != cols || cols == 0 {
            return Err(shape("sample_rows", format!("{} draws of {cols} columns from {}x{} logits", picks.len(), a.rows, a.cols)));
        }
        // Ids travel as f32, exact up to 2^24.
        if cols > 1 << 24 {
            return Err(shape("sample_rows", format!("{cols} columns; token ids past 2^24 do not fit an f32")));
        }
        if picks.iter().all(|(p, _)| p.is_greedy()) {
            return self.argmax_rows(x, cols);
        }
        let (_, off) = self.new_act(a.rows, 1)?;
        if picks.iter().any(|(p, _)| p.is_greedy()) {
            self.dispatch_argmax(a, off)?;
        }
        // The row settings both samplers read, as bit patterns (the scratch is f32; the
        // shaders reinterpret them); the path word says which kernel draws the row.
        let mut words = Vec::with_capacity(picks.len() * SAMPLE_ROW_WORDS);
        let mut stride = 0;
        let mut general = false;
        for (p, u01) in picks {
            let path = match p {
                p if p.is_greedy() => Path::Greedy,
                p if p.is_top_k_bounded() => Path::TopK,
                _ => Path::General,
            };
            general |= path == Path::General;
            if path == Path::TopK {
                stride = stride.max(p.top_k);
            }
            let top_k = p.top_k.min(u32::MAX as usize) as u32;
            words.extend([p.inv_temperature().to_bits(), top_k, p.top_p.to_bits(), p.min_p.to_bits(), u01.to_bits(), path as u32, 0, 0]);
        }
        let set_off = self.rec.upload(bytemuck::cast_slice(&words))?;
        let (rows, ncols) = (u(a.rows, "rows")?, u(cols, "columns")?);
        if general {
            self.rec.dispatch(Op::Sample, None, &[a.off, ncols, off, set_off], [rows, 1, 1], Binds::default());
        }
        if stride > 0 {
            let (chunk, chunks) = top_k_chunks(cols, stride);
            let (_, cand_off) = self.new_act(a.rows, 2 * chunks * stride)?;
            let mut params = [a.off, ncols, off, set_off, cand_off, u(chunk, "chunk")?, u(chunks, "chunks")?, u(stride, "top-k")?, 1];
            self.rec.dispatch(Op::SampleTopK, None, &params, [params[6], rows, 1], Binds::default());
            params[8] = 2;
            self.rec.dispatch(Op::SampleTopK, None, &params, [rows, 1, 1], Binds::default());
        }
        let ids = self.flush(Some((off, a.rows)))?.unwrap_or_default();
        Ok(ids.into_iter().map(|v| v as u32).collect())
    }
}

/// Which kernel draws a row (the settings' path word in sample.wgsl and sample_topk.wgsl).
#[derive(Clone, Copy, PartialEq)]
enum Path {
    Greedy = 0,
    General = 1,
    TopK = 2,
}

/// Words of one row's settings in sample.wgsl and sample_topk.wgsl (`ROW_WORDS` there).
const SAMPLE_ROW_WORDS: usize = 8;

// sample_topk.wgsl sorts the survivors with one invocation a slot, in its 256-wide workgroup.
const _: () = assert!(DeviceSampling::TOP_K_MAX == 256);

/// sample_topk.wgsl's first stage over a row of `cols` logits for a top-k of `k`: (logits per
/// chunk, chunks). Each chunk passes on k candidates, so chunks of at least 16k logits leave
/// the one-workgroup second stage at most a sixteenth of the row, while 1,024 logits (four per
/// invocation) at least keep each first-stage workgroup's fixed cost of barriers worth paying,
/// with a 128k vocabulary spread over about as many workgroups as an H100 has SMs.
fn top_k_chunks(cols: usize, k: usize) -> (usize, usize) {
    let chunk = (16 * k).max(1024).next_multiple_of(256);
    (chunk, cols.div_ceil(chunk))
}
