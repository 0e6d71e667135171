//! GPU against CPU on one model: greedy continuations (tokens picked by `argmax` on the
//! device; on the GPU every prompt decodes in one batched step per token, one submission each,
//! which batch invariance makes the same as decoding each alone) and teacher-forced top-1
//! agreement over prompt plus continuation. Used by the SmolLM2 test on lavapipe and by
//! `hangar bench --check-cpu` on real GPUs.

use hangar_engine::backend::{Backend, BackendError};
use hangar_engine::graph::{forward, forward_act, forward_decode_batch_act, Logits, Weights};
use hangar_engine::spec::ModelSpec;

use crate::GpuBackend;

#[derive(Clone, Debug, Default)]
pub struct ParityReport {
    pub prompts: usize,
    /// Prompts whose greedy continuations are identical on both backends.
    pub identical: usize,
    /// (prompt index, first differing step) of the others.
    pub divergences: Vec<(usize, usize)>,
    pub top1_agree: usize,
    pub top1_total: usize,
    /// Submissions per batched decode step on the GPU (each step decodes a token of every prompt).
    pub submissions_per_step: f64,
}

impl ParityReport {
    pub fn greedy_rate(&self) -> f64 {
        self.identical as f64 / self.prompts.max(1) as f64
    }
    pub fn top1_rate(&self) -> f64 {
        self.top1_agree as f64 / self.top1_total.max(1) as f64
    }
}

/// A sequence with the default (f32) KV cache, which both backends hold exactly alike.
fn new_seq(be: &mut dyn Backend, spec: &ModelSpec, n_ctx: usize) -> Result<hangar_engine::backend::SeqId, BackendError> {
    let hp = &spec.hparams;
    be.new_sequence(hp.n_layer, hp.kv_dim(), n_ctx, hangar_engine::backend::KvFormat { policy: Default::default(), head_dim: hp.head_dim })
}

/// The one id of a one-row argmax.
fn first_id(ids: Vec<u32>) -> Result<u32, BackendError> {
    ids.first().copied().ok_or_else(|| BackendError::Device("argmax returned nothing".into()))
}

/// Greedy decoding where every token is picked by `be.argmax` (on the device for the GPU).
pub fn greedy(be: &mut dyn Backend, spec: &ModelSpec, w: &Weights, prompt: &[u32], n: usize, n_ctx: usize) -> Result<Vec<u32>, BackendError> {
    let hp = &spec.hparams;
    let seq = new_seq(be, spec, n_ctx)?;
    let mut out = Vec::with_capacity(n);
    let mut pos = 0;
    let mut input = prompt.to_vec();
    let r = (|| {
        while out.len() < n {
            let logits = forward_act(spec, w, be, seq, &input, pos, Logits::Last)?;
            let tok = first_id(be.argmax(logits, hp.n_vocab)?)?;
            pos += input.len();
            out.push(tok);
            input = vec![tok];
        }
        Ok(())
    })();
    be.free_sequence(seq);
    r.map(|_| out)
}

/// Greedy continuations of `n` tokens for every prompt at once: each prompt's prefill, then
/// one batched decode step per token covering all of them, every token picked by `argmax` on
/// the device. Also returns the submissions per decode step.
pub fn greedy_batch(be: &mut GpuBackend, spec: &ModelSpec, w: &Weights, prompts: &[Vec<u32>], n: usize) -> Result<(Vec<Vec<u32>>, f64), BackendError> {
    let hp = &spec.hparams;
    let mut seqs = Vec::with_capacity(prompts.len());
    let mut outs: Vec<Vec<u32>> = vec![Vec::with_capacity(n); prompts.len()];
    let r = (|| {
        for (p, out) in prompts.iter().zip(outs.iter_mut()) {
            let seq = new_seq(be, spec, p.len() + n + 1)?;
            seqs.push(seq);
            let logits = forward_act(spec, w, be, seq, p, 0, Logits::Last)?;
            out.push(first_id(be.argmax(logits, hp.n_vocab)?)?);
        }
        let before = be.submissions();
        for step in 1..n {
            // Each sequence's newest token sits right after its prompt and earlier tokens.
            let rows: Vec<_> = seqs.iter().zip(&outs).zip(prompts).map(|((&s, o), p)| (s, o[step - 1], p.len() + step - 1)).collect();
            let logits = forward_decode_batch_act(spec, w, be, &rows)?;
            for (o, id) in outs.iter_mut().zip(be.argmax(logits, hp.n_vocab)?) {
                o.push(id);
            }
        }
        Ok((be.submissions() - before) as f64 / n.saturating_sub(1).max(1) as f64)
    })();
    for s in seqs {
        be.free_sequence(s);
    }
    r.map(|subs| (outs, subs))
}

/// Top-1 of every position of `tokens` in one forward pass (on the device for the GPU).
fn top1_all(be: &mut dyn Backend, spec: &ModelSpec, w: &Weights, tokens: &[u32], n_ctx: usize, on_device: bool) -> Result<Vec<u32>, BackendError> {
    let hp = &spec.hparams;
    let seq = new_seq(be, spec, n_ctx)?;
    let r = if on_device {
        forward_act(spec, w, be, seq, tokens, 0, Logits::All).and_then(|l| be.argmax(l, hp.n_vocab))
    } else {
        forward(spec, w, be, seq, tokens, 0, Logits::All).map(|l| l.chunks(hp.n_vocab).map(hangar_engine::cpu::ops::argmax).collect())
    };
    be.free_sequence(seq);
    r
}

/// Runs every prompt on both backends: `n_gen` greedy tokens each, then teacher forcing over
/// prompt + the CPU's continuation.
pub fn compare(
    spec: &ModelSpec,
    gpu: &mut GpuBackend,
    gw: &Weights,
    cpu: &mut dyn Backend,
    cw: &Weights,
    prompts: &[Vec<u32>],
    n_gen: usize,
) -> Result<ParityReport, BackendError> {
    let mut rep = ParityReport { prompts: prompts.len(), ..Default::default() };
    let (gs, subs) = greedy_batch(gpu, spec, gw, prompts, n_gen)?;
    rep.submissions_per_step = subs;
    for (i, (prompt, g)) in prompts.iter().zip(gs).enumerate() {
        let n_ctx = prompt.len() + n_gen + 1;
        let c = greedy(cpu, spec, cw, prompt, n_gen, n_ctx)?;
        match g.iter().zip(&c).position(|(a, b)| a != b) {
            None => rep.identical += 1,
            Some(at) => rep.divergences.push((i, at)),
        }
        let all: Vec<u32> = prompt.iter().chain(&c[..c.len().saturating_sub(1)]).copied().collect();
        let want = top1_all(cpu, spec, cw, &all, n_ctx, false)?;
        let got = top1_all(gpu, spec, gw, &all, n_ctx, true)?;
        rep.top1_total += want.len();
        rep.top1_agree += got.iter().zip(&want).filter(|(a, b)| a == b).count();
    }
    Ok(rep)
}
