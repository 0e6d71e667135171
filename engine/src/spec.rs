//! The declarative description of a transformer that a family produces from GGUF metadata:
//! typed hparams plus the tensor names each block reads. The engine's one graph (`graph.rs`)
//! interprets it on any backend, so a family is hparams plus wiring and never a forward pass.

/// How a norm normalizes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NormKind {
    /// x / rms(x) * w
    Rms,
    /// (x - mean) / std * w + b
    Layer,
}

/// Which elements a rotary embedding pairs up.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RopeStyle {
    /// Adjacent pairs (x0, x1), (x2, x3)... (llama, mistral).
    Normal,
    /// Halves: (x_i, x_{i + n_rot/2}) (neox, qwen2, phi, gemma, falcon).
    Neox,
}

/// Llama-3.1's frequency-dependent rope scaling (`rope_freqs` in llama.cpp's terms).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Llama3Scaling {
    pub factor: f32,
    pub low_freq_factor: f32,
    pub high_freq_factor: f32,
    pub original_context: f32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RopeConfig {
    pub style: RopeStyle,
    /// Dimensions of each head that are rotated (partial rotary rotates fewer than head_dim).
    pub n_rot: usize,
    pub freq_base: f32,
    /// Linear position scale (1 / rope.scaling.factor for linear scaling).
    pub freq_scale: f32,
    pub llama3: Option<Llama3Scaling>,
    /// Per-pair divisors of the frequency (llama.cpp's `rope_freqs.weight`), which converters
    /// write for Llama-3.1-style scaling instead of the hparams.
    pub freq_factors: Option<std::sync::Arc<[f32]>>,
}

impl RopeConfig {
    /// Inverse frequency of rotary pair `i` (0-based, `i < n_rot / 2`), scaling included.
    pub fn inv_freq(&self, i: usize) -> f32 {
        let theta = self.freq_base.powf(-2.0 * i as f32 / self.n_rot as f32);
        if let Some(f) = self.freq_factors.as_ref().and_then(|f| f.get(i)) {
            return theta / f;
        }
        match self.llama3 {
            None => theta,
            Some(s) => {
                let wavelen = 2.0 * std::f32::consts::PI / theta;
                let low_wavelen = s.original_context / s.low_freq_factor;
                let high_wavelen = s.original_context / s.high_freq_factor;
                if wavelen < high_wavelen {
                    theta
                } else if wavelen > low_wavelen {
                    theta / s.factor
                } else {
                    let smooth = (s.original_context / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
                    (1.0 - smooth) * theta / s.factor + smooth * theta
                }
            }
        }
    }
}

/// The feed-forward nonlinearity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    /// silu(gate) * up
    SwiGlu,
    /// gelu_tanh(gate) * up
    GeGlu,
    /// gelu_tanh(up), no gate
    Gelu,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NormWeights {
    pub weight: String,
    pub bias: Option<String>,
}

impl NormWeights {
    pub fn weight(name: impl Into<String>) -> Self {
        NormWeights { weight: name.into(), bias: None }
    }
}

/// A projection: weight plus optional bias.
#[derive(Clone, Debug, PartialEq)]
pub struct Linear {
    pub weight: String,
    pub bias: Option<String>,
}

impl Linear {
    pub fn new(weight: impl Into<String>) -> Self {
        Linear { weight: weight.into(), bias: None }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Qkv {
    Separate { q: Linear, k: Linear, v: Linear },
    /// One projection producing [q | k | v] along the output dimension.
    Fused(Linear),
}

#[derive(Clone, Debug, PartialEq)]
pub struct AttentionSpec {
    pub qkv: Qkv,
    pub output: Linear,
    /// Per-head RMS norms on q and k before rope (Gemma-3, Qwen-3 style).
    pub q_norm: Option<NormWeights>,
    pub k_norm: Option<NormWeights>,
    pub rope: RopeConfig,
    /// Attend only to the last `window` positions (sliding-window layers).
    pub window: Option<usize>,
}

/// Where a gated FFN's gate comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Gate {
    /// Not gated: `act(up)`.
    None,
    Separate(Linear),
    /// `up` produces `[gate | up]` along its output dimension (Phi-3's fused gate_up_proj).
    FusedWithUp,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FfnSpec {
    pub gate: Gate,
    pub up: Linear,
    pub down: Linear,
    pub activation: Activation,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LayerSpec {
    pub attn_norm: NormWeights,
    pub attention: AttentionSpec,
    /// With `parallel_residual`, `None` makes the FFN read the attention norm's output (Falcon-7B,
    /// Phi-2) and `Some` normalizes the block input separately (GPT-NeoX, Falcon-40B).
    pub ffn_norm: Option<NormWeights>,
    pub ffn: FfnSpec,
    pub post_attn_norm: Option<NormWeights>,
    pub post_ffn_norm: Option<NormWeights>,
}

/// Numbers every block shares.
#[derive(Clone, Debug, PartialEq)]
pub struct Hparams {
    pub n_vocab: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub n_ctx_train: usize,
    pub norm: NormKind,
    pub norm_eps: f32,
    /// Gemma stores norm weights as w - 1.
    pub norm_add_one: bool,
    /// Multiply embeddings by this (Gemma: sqrt(n_embd)).
    pub embed_scale: Option<f32>,
    /// Attention logits are scaled by this before softmax (usually 1/sqrt(head_dim)).
    pub attn_scale: f32,
    pub attn_softcap: Option<f32>,
    pub final_softcap: Option<f32>,
    /// Attention and FFN read the same normed input and add to the residual together.
    pub parallel_residual: bool,
}

impl Hparams {
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    pub architecture: String,
    pub hparams: Hparams,
    pub token_embd: String,
    pub output_norm: NormWeights,
    /// The LM head; equals `token_embd` when embeddings are tied.
    pub output: String,
    /// The LM head's bias (Phi-2).
    pub output_bias: Option<String>,
    pub layers: Vec<LayerSpec>,
}

impl ModelSpec {
    /// Some layer adds a bias to its keys (a separate k bias, or a fused QKV bias).
    pub fn biased_keys(&self) -> bool {
        self.layers.iter().any(|l| match &l.attention.qkv {
            Qkv::Separate { k, .. } => k.bias.is_some(),
            Qkv::Fused(f) => f.bias.is_some(),
        })
    }

    /// Every tensor the spec reads, each once, in a stable order.
    pub fn tensor_names(&self) -> Vec<&str> {
        let mut out: Vec<&str> = vec![&self.token_embd, &self.output];
        out.extend(self.output_bias.as_deref());
        fn norm<'a>(n: &'a NormWeights, out: &mut Vec<&'a str>) {
            out.push(&n.weight);
            out.extend(n.bias.as_deref());
        }
        fn lin<'a>(l: &'a Linear, out: &mut Vec<&'a str>) {
            out.push(&l.weight);
            out.extend(l.bias.as_deref());
        }
        norm(&self.output_norm, &mut out);
        for l in &self.layers {
            norm(&l.attn_norm, &mut out);
            match &l.attention.qkv {
                Qkv::Separate { q, k, v } => [q, k, v].into_iter().for_each(|x| lin(x, &mut out)),
                Qkv::Fused(f) => lin(f, &mut out),
            }
            lin(&l.attention.output, &mut out);
            for n in [&l.attention.q_norm, &l.attention.k_norm, &l.ffn_norm, &l.post_attn_norm, &l.post_ffn_norm]
                .into_iter()
                .flatten()
            {
                norm(n, &mut out);
            }
            if let Gate::Separate(g) = &l.ffn.gate {
                lin(g, &mut out);
            }
            lin(&l.ffn.up, &mut out);
            lin(&l.ffn.down, &mut out);
        }
        let mut seen = std::collections::HashSet::new();
        out.retain(|n| seen.insert(*n));
        out
    }
}
