//! The one transformer graph, interpreted from a `ModelSpec` on any `Backend`. Every family's
//! variation (norm kind, parallel residual, fused QKV and gate+up, biases, QK-norm, post-norms,
//! soft-capping, sliding window, per-layer rope) is a branch here, written once.

use std::collections::HashMap;
use std::sync::Arc;

use crate::backend::{Act, AttnParams, Backend, BackendError, NormParams, SeqId, WeightId};
use crate::gguf::GgufFile;
use crate::spec::{Activation, Gate, Linear, ModelSpec, NormWeights, Qkv};

/// A spec whose tensors have been loaded onto a backend.
pub struct Weights {
    ids: HashMap<String, WeightId>,
}

impl Weights {
    /// Loads every tensor the spec names, calling `progress(done, total)` as it goes.
    pub fn load(
        spec: &ModelSpec,
        file: &Arc<GgufFile>,
        backend: &mut dyn Backend,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Weights, BackendError> {
        let names = spec.tensor_names();
        let mut ids = HashMap::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            ids.insert(name.to_string(), backend.load_weight(file, name)?);
            progress(i + 1, names.len());
        }
        Ok(Weights { ids })
    }

    fn id(&self, name: &str) -> Result<WeightId, BackendError> {
        self.ids.get(name).copied().ok_or_else(|| BackendError::MissingTensor(name.to_string()))
    }

    fn opt(&self, name: Option<&str>) -> Result<Option<WeightId>, BackendError> {
        name.map(|n| self.id(n)).transpose()
    }
}

/// Which logits a forward pass returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last position's: `[n_vocab]`.
    Last,
    /// Every position's: `[n_tokens * n_vocab]`.
    All,
}

/// Runs `tokens` (at positions `pos0..`) through the model, appending to `seq`'s KV cache.
pub fn forward(
    spec: &ModelSpec,
    w: &Weights,
    be: &mut dyn Backend,
    seq: SeqId,
    tokens: &[u32],
    pos0: usize,
    logits: Logits,
) -> Result<Vec<f32>, BackendError> {
    let out = forward_act(spec, w, be, seq, tokens, pos0, logits)?;
    be.read(out)
}

/// [`forward`] without the read-back: the logits stay on the backend (`[rows, n_vocab]`),
/// for `Backend::argmax` / `Backend::sample` to pick tokens on the device.
pub fn forward_act(
    spec: &ModelSpec,
    w: &Weights,
    be: &mut dyn Backend,
    seq: SeqId,
    tokens: &[u32],
    pos0: usize,
    logits: Logits,
) -> Result<Act, BackendError> {
    graph(spec, w, be, Rows::One { seq, pos0 }, tokens, logits)
}

/// One decode token for each of several sequences, `(seq, token, position)`, in one pass on
/// a backend that [batches rows](Backend::batches_rows). Returns the rows' logits, row after
/// row (`[rows, n_vocab]`); each row is bit-identical to a one-sequence [`forward`] of that
/// token, whatever the batch holds.
pub fn forward_decode_batch(
    spec: &ModelSpec,
    w: &Weights,
    be: &mut dyn Backend,
    rows: &[(SeqId, u32, usize)],
) -> Result<Vec<f32>, BackendError> {
    let out = forward_decode_batch_act(spec, w, be, rows)?;
    be.read(out)
}

/// [`forward_decode_batch`] leaving the logits on the backend (for a device argmax or sampler).
pub fn forward_decode_batch_act(
    spec: &ModelSpec,
    w: &Weights,
    be: &mut dyn Backend,
    rows: &[(SeqId, u32, usize)],
) -> Result<Act, BackendError> {
    if !be.batches_rows() {
        return Err(BackendError::Shape { op: "forward_decode_batch", detail: format!("the {} backend does not batch rows", be.name()) });
    }
    let tokens: Vec<u32> = rows.iter().map(|r| r.1).collect();
    graph(spec, w, be, Rows::Batch(rows), &tokens, Logits::All)
}

/// Whose rows a pass runs: one sequence's run of tokens, or one token of each of several.
#[derive(Clone, Copy)]
enum Rows<'a> {
    One { seq: SeqId, pos0: usize },
    Batch(&'a [(SeqId, u32, usize)]),
}

fn graph(spec: &ModelSpec, w: &Weights, be: &mut dyn Backend, rows: Rows<'_>, tokens: &[u32], logits: Logits) -> Result<Act, BackendError> {
    let hp = &spec.hparams;
    be.begin_step();
    let mut x = be.embed(w.id(&spec.token_embd)?, tokens)?;
    if let Some(s) = hp.embed_scale {
        x = be.scale(x, s)?;
    }
    let norm_params = |group| NormParams { kind: hp.norm, eps: hp.norm_eps, add_one: hp.norm_add_one, group };
    let norm = |be: &mut dyn Backend, x: Act, n: &NormWeights, group: usize| -> Result<Act, BackendError> {
        be.norm(x, Some(w.id(&n.weight)?), w.opt(n.bias.as_deref())?, norm_params(group))
    };
    let linear_named = |be: &mut dyn Backend, x: Act, weight: &str, bias: Option<&str>| match rows {
        Rows::One { .. } => be.linear(x, w.id(weight)?, w.opt(bias)?),
        Rows::Batch(_) => be.linear_rows(x, w.id(weight)?, w.opt(bias)?),
    };
    let linear = |be: &mut dyn Backend, x: Act, l: &Linear| linear_named(be, x, &l.weight, l.bias.as_deref());

    for (li, layer) in spec.layers.iter().enumerate() {
        let a = &layer.attention;
        let h = norm(be, x, &layer.attn_norm, hp.n_embd)?;
        let (mut q, mut k, v) = match &a.qkv {
            Qkv::Separate { q, k, v } => (linear(be, h, q)?, linear(be, h, k)?, linear(be, h, v)?),
            Qkv::Fused(f) => {
                let qkv = linear(be, h, f)?;
                let parts = be.split_cols(qkv, &[hp.q_dim(), hp.kv_dim(), hp.kv_dim()])?;
                (parts[0], parts[1], parts[2])
            }
        };
        if let Some(n) = &a.q_norm {
            q = norm(be, q, n, hp.head_dim)?;
        }
        if let Some(n) = &a.k_norm {
            k = norm(be, k, n, hp.head_dim)?;
        }
        let params = AttnParams {
            n_head: hp.n_head,
            n_head_kv: hp.n_head_kv,
            head_dim: hp.head_dim,
            scale: hp.attn_scale,
            softcap: hp.attn_softcap,
            window: a.window,
        };
        let attn = match rows {
            Rows::One { seq, pos0 } => {
                q = be.rope(q, hp.head_dim, pos0, &a.rope)?;
                k = be.rope(k, hp.head_dim, pos0, &a.rope)?;
                be.attention(seq, li, pos0, q, k, v, &params)?
            }
            Rows::Batch(batch) => {
                // Position and cache differ per row, so rope and attention run row by row.
                let mut out = Vec::with_capacity(batch.len());
                for (r, &(seq, _, pos)) in batch.iter().enumerate() {
                    let (qr, kr, vr) = (be.row_slice(q, r, 1)?, be.row_slice(k, r, 1)?, be.row_slice(v, r, 1)?);
                    let qr = be.rope(qr, hp.head_dim, pos, &a.rope)?;
                    let kr = be.rope(kr, hp.head_dim, pos, &a.rope)?;
                    out.push(be.attention(seq, li, pos, qr, kr, vr, &params)?);
                }
                be.concat_rows(&out)?
            }
        };
        let mut o = linear(be, attn, &a.output)?;
        if let Some(n) = &layer.post_attn_norm {
            o = norm(be, o, n, hp.n_embd)?;
        }
        let ffn_in = match (hp.parallel_residual, &layer.ffn_norm) {
            (true, None) => h,
            (true, Some(n)) => norm(be, x, n, hp.n_embd)?,
            (false, n) => {
                x = be.add(x, o)?;
                match n {
                    Some(n) => norm(be, x, n, hp.n_embd)?,
                    None => x,
                }
            }
        };
        let f = &layer.ffn;
        let up = linear(be, ffn_in, &f.up)?;
        let (gate, up) = match &f.gate {
            Gate::None => (None, up),
            Gate::Separate(g) => (Some(linear(be, ffn_in, g)?), up),
            Gate::FusedWithUp => {
                let parts = be.split_cols(up, &[hp.n_ff, hp.n_ff])?;
                (Some(parts[0]), parts[1])
            }
        };
        let act = match (gate, f.activation) {
            (None, Activation::SwiGlu | Activation::GeGlu) => {
                return Err(BackendError::Shape { op: "ffn", detail: "gated activation without a gate tensor".into() })
            }
            (g, a) => be.ffn_act(g, up, a)?,
        };
        let mut down = linear(be, act, &f.down)?;
        if let Some(n) = &layer.post_ffn_norm {
            down = norm(be, down, n, hp.n_embd)?;
        }
        x = if hp.parallel_residual {
            let xo = be.add(x, o)?;
            be.add(xo, down)?
        } else {
            be.add(x, down)?
        };
        be.retain(&[x])?;
    }

    if logits == Logits::Last {
        x = be.last_row(x)?;
    }
    x = norm(be, x, &spec.output_norm, hp.n_embd)?;
    let mut out = linear_named(be, x, &spec.output, spec.output_bias.as_deref())?;
    if let Some(cap) = hp.final_softcap {
        out = be.softcap(out, cap)?;
    }
    Ok(out)
}
