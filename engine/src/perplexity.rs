//! Perplexity the way llama.cpp's `perplexity` tool computes it, so figures compare directly:
//! non-overlapping windows of `n_ctx` tokens, each starting from BOS (when the model adds one)
//! with a fresh cache, scoring only the second half of each window.

use crate::error::EngineError;
use crate::graph::Logits;
use crate::model::Model;

#[derive(Clone, Debug)]
pub struct PerplexityOutput {
    pub ppl: f64,
    /// Negative log-likelihood of each scored token, in order.
    pub nll: Vec<f64>,
    pub n_tokens: usize,
}

/// `tokens` is the whole text, tokenized with BOS as the model wants it.
pub fn perplexity(
    model: &mut Model,
    tokens: &[u32],
    n_ctx: usize,
    batch: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<PerplexityOutput, EngineError> {
    if n_ctx < 4 {
        return Err(EngineError::InvalidArgument(format!("perplexity needs a context of at least 4, got {n_ctx}")));
    }
    let n_chunk = tokens.len() / n_ctx;
    if n_chunk == 0 {
        return Err(EngineError::InvalidArgument(format!("{} tokens are fewer than one window of {n_ctx}", tokens.len())));
    }
    let bos = model.tokenizer.add_bos().then(|| model.tokenizer.bos()).flatten();
    let n_vocab = model.spec.hparams.n_vocab;
    let first = n_ctx / 2;
    let mut nll = Vec::with_capacity(n_chunk * (n_ctx - first - 1));
    for c in 0..n_chunk {
        let mut window = tokens[c * n_ctx..(c + 1) * n_ctx].to_vec();
        if let Some(b) = bos {
            window[0] = b;
        }
        let mut session = model.session(n_ctx)?;
        let logits = session.eval(&window, batch, Logits::All)?;
        for j in first..n_ctx - 1 {
            let row = &logits[j * n_vocab..(j + 1) * n_vocab];
            let target = tokens[c * n_ctx + j + 1] as usize;
            nll.push(-log_softmax_at(row, target));
        }
        progress(c + 1, n_chunk);
    }
    let mean = nll.iter().sum::<f64>() / nll.len() as f64;
    Ok(PerplexityOutput { ppl: mean.exp(), n_tokens: nll.len(), nll })
}

/// log softmax(row)[i], accumulated in f64.
pub fn log_softmax_at(row: &[f32], i: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    row.get(i).map_or(f64::NEG_INFINITY, |&v| v as f64 - max - sum.ln())
}
