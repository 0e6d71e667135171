//! What families share: the standard hparam keys and llama.cpp's tensor-naming conventions, read
//! with typed errors and shape checks. A family states only how its architecture differs (norm
//! kind, rope style, residual layout, extra norms, soft-capping); it never re-reads the common parts.

use std::sync::Arc;

use crate::family::{check_tensor, FamilyError, Hp};
use crate::gguf::GgufFile;
use crate::quant;
use crate::spec::{
    Activation, AttentionSpec, FfnSpec, Gate, Hparams, LayerSpec, Linear, ModelSpec, NormKind, NormWeights, Qkv,
    RopeConfig, RopeStyle,
};

/// The sizes every architecture declares, checked against each other and the embedding table.
#[derive(Clone, Debug, PartialEq)]
pub struct Dims {
    pub n_vocab: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    /// Rotated dimensions per head (partial rotary when below `head_dim`).
    pub n_rot: usize,
    pub n_ff: usize,
    pub n_ctx_train: usize,
}

fn bad(hp: &Hp, k: &str, why: String) -> FamilyError {
    FamilyError::BadValue { key: hp.key(k), why }
}

impl Dims {
    pub fn read(hp: &Hp) -> Result<Dims, FamilyError> {
        let n_embd = hp.count("embedding_length")?;
        let n_layer = hp.count("block_count")?;
        let n_head = hp.count("attention.head_count")?;
        let n_head_kv = hp.opt_usize("attention.head_count_kv")?.unwrap_or(n_head);
        let head_dim = hp.opt_usize("attention.key_length")?.unwrap_or(n_embd / n_head);
        if n_head_kv == 0 || n_head % n_head_kv != 0 || head_dim == 0 {
            return Err(bad(hp, "attention.head_count_kv", format!("{n_head} heads cannot share {n_head_kv} KV heads of {head_dim}")));
        }
        let v_dim = hp.opt_usize("attention.value_length")?.unwrap_or(head_dim);
        if v_dim != head_dim {
            return Err(bad(hp, "attention.value_length", format!("{v_dim} differs from the key length {head_dim}")));
        }
        let n_rot = hp.opt_usize("rope.dimension_count")?.unwrap_or(head_dim);
        if n_rot > head_dim || n_rot % 2 != 0 {
            return Err(bad(hp, "rope.dimension_count", format!("{n_rot} with head_dim {head_dim}")));
        }
        let n_ff = hp.count("feed_forward_length")?;
        let embd = hp.file.tensor_info("token_embd.weight").ok_or_else(|| FamilyError::MissingTensor("token_embd.weight".into()))?;
        let n_vocab = embd.dims.get(1).copied().unwrap_or(0) as usize;
        if n_vocab == 0 {
            return Err(FamilyError::BadTensorShape { name: "token_embd.weight".into(), got: embd.dims.clone(), expected: vec![n_embd as u64, 0] });
        }
        check_tensor(hp.file, "token_embd.weight", &[n_embd, n_vocab])?;
        let n_ctx_train = hp.opt_usize("context_length")?.unwrap_or(2048);
        Ok(Dims { n_vocab, n_embd, n_layer, n_head, n_head_kv, head_dim, n_rot, n_ff, n_ctx_train })
    }

    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    /// Hparams with the common defaults: sequential pre-norm blocks, a 1/sqrt(head_dim) attention
    /// scale, no soft-capping and no embedding scale. Families override what differs.
    pub fn hparams(&self, norm: NormKind, norm_eps: f32) -> Hparams {
        Hparams {
            n_vocab: self.n_vocab,
            n_embd: self.n_embd,
            n_layer: self.n_layer,
            n_head: self.n_head,
            n_head_kv: self.n_head_kv,
            head_dim: self.head_dim,
            n_ff: self.n_ff,
            n_ctx_train: self.n_ctx_train,
            norm,
            norm_eps,
            norm_add_one: false,
            embed_scale: None,
            attn_scale: 1.0 / (self.head_dim as f32).sqrt(),
            attn_softcap: None,
            final_softcap: None,
            parallel_residual: false,
        }
    }
}

/// The norm epsilon under llama.cpp's key for the norm kind.
pub fn norm_eps(hp: &Hp, kind: NormKind, default: f32) -> Result<f32, FamilyError> {
    let key = match kind {
        NormKind::Rms => "attention.layer_norm_rms_epsilon",
        NormKind::Layer => "attention.layer_norm_epsilon",
    };
    Ok(hp.opt_f32(key)?.unwrap_or(default))
}

/// Rotary settings from `rope.freq_base` (default 10000), linear `rope.scaling` and the optional
/// `rope_freqs.weight` divisors. YaRN and LongRoPE are refused rather than silently ignored,
/// because a file that asks for them would otherwise decode wrongly past short contexts.
pub fn rope(hp: &Hp, style: RopeStyle, n_rot: usize) -> Result<RopeConfig, FamilyError> {
    let factor = hp.opt_f32("rope.scaling.factor")?.filter(|f| *f != 0.0);
    let freq_scale = match (hp.opt_str("rope.scaling.type"), factor) {
        (Some("none"), _) | (_, None) => 1.0,
        (None | Some("linear"), Some(f)) if f > 0.0 => 1.0 / f,
        (t, f) => return Err(bad(hp, "rope.scaling.type", format!("{t:?} with factor {f:?} is not supported"))),
    };
    let freq_factors = match hp.file.tensor("rope_freqs.weight") {
        None => None,
        Some(v) => {
            let f = quant::dequantize_to_vec(v.info.ty, v.data)
                .map_err(|e| FamilyError::BadValue { key: "rope_freqs.weight".into(), why: e.to_string() })?;
            if f.len() != n_rot / 2 {
                return Err(FamilyError::BadTensorShape { name: "rope_freqs.weight".into(), got: v.info.dims.clone(), expected: vec![(n_rot / 2) as u64] });
            }
            Some(Arc::<[f32]>::from(f))
        }
    };
    Ok(RopeConfig { style, n_rot, freq_base: hp.opt_f32("rope.freq_base")?.unwrap_or(10000.0), freq_scale, llama3: None, freq_factors })
}

/// Which layers use sliding-window attention: `attention.sliding_window_pattern` as a per-layer
/// bool array, or as a period `n` where every `n`-th layer (the last of each run) is global; a
/// missing key uses `default_period`, the architecture's own (Gemma 2: 2, Gemma 3: 6).
pub fn swa_layers(hp: &Hp, n_layer: usize, default_period: usize) -> Result<Vec<bool>, FamilyError> {
    let key = "attention.sliding_window_pattern";
    let period = match hp.file.get(&hp.key(key)) {
        None => default_period,
        Some(v) => match v.as_array() {
            Some(a) => {
                let bools: Vec<bool> = match a {
                    crate::gguf::MetaArray::Bool(b) => b.clone(),
                    _ => a.to_i64s().ok_or_else(|| bad(hp, key, "expected booleans".into()))?.into_iter().map(|x| x != 0).collect(),
                };
                if bools.len() < n_layer {
                    return Err(bad(hp, key, format!("{} entries for {n_layer} layers", bools.len())));
                }
                return Ok(bools[..n_layer].to_vec());
            }
            None => v.as_u32().ok_or_else(|| bad(hp, key, "expected a count or a bool array".into()))? as usize,
        },
    };
    Ok((0..n_layer).map(|i| period == 0 || i % period < period - 1).collect())
}

/// `blk.{i}.{name}`
pub fn blk(i: usize, name: &str) -> String {
    format!("blk.{i}.{name}")
}

/// Whether a block carries a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    Required,
    /// Used when the file has it.
    Optional,
    Absent,
}

/// How a family's blocks differ from the plain pre-norm transformer block.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockWiring {
    pub activation: Activation,
    /// The FFN's own norm (`ffn_norm`). With a parallel residual an absent one means the FFN
    /// reads the attention norm's output.
    pub ffn_norm: Presence,
    /// Gemma 2/3's `post_attention_norm` and `post_ffw_norm`.
    pub post_norms: bool,
    /// Per-head `attn_q_norm` / `attn_k_norm` before rope (Gemma 3).
    pub qk_norm: Presence,
}

/// The tensors of one file, read by llama.cpp's names with shape checks. Biases are taken
/// wherever the file has them (llama.cpp treats them as optional too).
pub struct Tensors<'a> {
    pub file: &'a GgufFile,
    pub dims: &'a Dims,
}

impl<'a> Tensors<'a> {
    pub fn new(file: &'a GgufFile, dims: &'a Dims) -> Self {
        Tensors { file, dims }
    }

    pub fn has(&self, name: &str) -> bool {
        self.file.tensor_info(name).is_some()
    }

    /// `name` if the file has it, after checking its shape.
    fn optional(&self, name: String, shape: &[usize]) -> Result<Option<String>, FamilyError> {
        if !self.has(&name) {
            return Ok(None);
        }
        check_tensor(self.file, &name, shape)?;
        Ok(Some(name))
    }

    /// `{base}.weight` of `len`, with `{base}.bias` when present.
    pub fn norm(&self, base: &str, len: usize) -> Result<NormWeights, FamilyError> {
        let weight = format!("{base}.weight");
        check_tensor(self.file, &weight, &[len])?;
        Ok(NormWeights { weight, bias: self.optional(format!("{base}.bias"), &[len])? })
    }

    pub fn norm_if(&self, p: Presence, base: &str, len: usize) -> Result<Option<NormWeights>, FamilyError> {
        match p {
            Presence::Absent => Ok(None),
            Presence::Optional if !self.has(&format!("{base}.weight")) => Ok(None),
            _ => self.norm(base, len).map(Some),
        }
    }

    /// `{base}.weight` mapping `n_in` to `n_out`, with `{base}.bias` when present.
    pub fn linear(&self, base: &str, n_in: usize, n_out: usize) -> Result<Linear, FamilyError> {
        let weight = format!("{base}.weight");
        check_tensor(self.file, &weight, &[n_in, n_out])?;
        Ok(Linear { weight, bias: self.optional(format!("{base}.bias"), &[n_out])? })
    }

    /// Block `i`'s q/k/v: one fused `attn_qkv` ([q | k | v] rows) when the file has it.
    pub fn qkv(&self, i: usize) -> Result<Qkv, FamilyError> {
        let d = self.dims;
        if self.has(&blk(i, "attn_qkv.weight")) {
            return Ok(Qkv::Fused(self.linear(&blk(i, "attn_qkv"), d.n_embd, d.q_dim() + 2 * d.kv_dim())?));
        }
        Ok(Qkv::Separate {
            q: self.linear(&blk(i, "attn_q"), d.n_embd, d.q_dim())?,
            k: self.linear(&blk(i, "attn_k"), d.n_embd, d.kv_dim())?,
            v: self.linear(&blk(i, "attn_v"), d.n_embd, d.kv_dim())?,
        })
    }

    /// Block `i`'s FFN: gated with `ffn_gate`, gated with `[gate | up]` fused into `ffn_up`
    /// (2 * n_ff rows, no `ffn_gate`), or ungated.
    pub fn ffn(&self, i: usize, activation: Activation) -> Result<FfnSpec, FamilyError> {
        let d = self.dims;
        let gated = matches!(activation, Activation::SwiGlu | Activation::GeGlu);
        let up_rows = self.file.tensor_info(&blk(i, "ffn_up.weight")).and_then(|t| t.dims.get(1).copied());
        let (gate, up) = if !gated {
            (Gate::None, self.linear(&blk(i, "ffn_up"), d.n_embd, d.n_ff)?)
        } else if !self.has(&blk(i, "ffn_gate.weight")) && up_rows == Some(2 * d.n_ff as u64) {
            (Gate::FusedWithUp, self.linear(&blk(i, "ffn_up"), d.n_embd, 2 * d.n_ff)?)
        } else {
            (Gate::Separate(self.linear(&blk(i, "ffn_gate"), d.n_embd, d.n_ff)?), self.linear(&blk(i, "ffn_up"), d.n_embd, d.n_ff)?)
        };
        Ok(FfnSpec { gate, up, down: self.linear(&blk(i, "ffn_down"), d.n_ff, d.n_embd)?, activation })
    }

    /// Block `i` wired as `w` says, attending with `rope` over `window` positions (all if None).
    pub fn block(&self, i: usize, w: &BlockWiring, rope: RopeConfig, window: Option<usize>) -> Result<LayerSpec, FamilyError> {
        let d = self.dims;
        let e = d.n_embd;
        Ok(LayerSpec {
            attn_norm: self.norm(&blk(i, "attn_norm"), e)?,
            attention: AttentionSpec {
                qkv: self.qkv(i)?,
                output: self.linear(&blk(i, "attn_output"), d.q_dim(), e)?,
                q_norm: self.norm_if(w.qk_norm, &blk(i, "attn_q_norm"), d.head_dim)?,
                k_norm: self.norm_if(w.qk_norm, &blk(i, "attn_k_norm"), d.head_dim)?,
                rope,
                window,
            },
            ffn_norm: self.norm_if(w.ffn_norm, &blk(i, "ffn_norm"), e)?,
            ffn: self.ffn(i, w.activation)?,
            post_attn_norm: if w.post_norms { Some(self.norm(&blk(i, "post_attention_norm"), e)?) } else { None },
            post_ffn_norm: if w.post_norms { Some(self.norm(&blk(i, "post_ffw_norm"), e)?) } else { None },
        })
    }

    /// The spec around `layers`: `output_norm`, and `output` (with its bias if present) or the
    /// embedding table when the head is tied.
    pub fn model(&self, architecture: &str, hparams: Hparams, layers: Vec<LayerSpec>) -> Result<ModelSpec, FamilyError> {
        let d = self.dims;
        let (output, output_bias) = match self.optional("output.weight".into(), &[d.n_embd, d.n_vocab])? {
            Some(o) => (o, self.optional("output.bias".into(), &[d.n_vocab])?),
            None => ("token_embd.weight".to_string(), None),
        };
        Ok(ModelSpec {
            architecture: architecture.to_string(),
            hparams,
            token_embd: "token_embd.weight".into(),
            output_norm: self.norm("output_norm", d.n_embd)?,
            output,
            output_bias,
            layers,
        })
    }
}

/// Parses the file's common sizes and reader: the start of every family's `build_spec`.
pub fn open(file: &GgufFile) -> Result<(Hp<'_>, Dims), FamilyError> {
    let hp = Hp::new(file)?;
    let dims = Dims::read(&hp)?;
    Ok((hp, dims))
}
