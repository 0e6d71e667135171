//! The Llama family: llama-architecture GGUFs (Llama 1-3, SmolLM, TinyLlama, Mistral-style
//! files that declare `llama`). Hparams plus wiring; the engine's graph does the rest.

use std::sync::Arc;

use hangar_engine::family::{check_tensor, Family, FamilyError, Hp};
use hangar_engine::gguf::GgufFile;
use hangar_engine::quant;
use hangar_engine::spec::{
    Activation, AttentionSpec, FfnSpec, Hparams, LayerSpec, Linear, ModelSpec, NormKind, NormWeights, Qkv,
    RopeConfig, RopeStyle,
};

pub struct Llama;

impl Family for Llama {
    fn name(&self) -> &'static str {
        "llama"
    }

    fn architectures(&self) -> &'static [&'static str] {
        &["llama"]
    }

    fn build_spec(&self, file: &GgufFile) -> Result<ModelSpec, FamilyError> {
        let hp = Hp::new(file)?;
        let n_embd = hp.count("embedding_length")?;
        let n_layer = hp.count("block_count")?;
        let n_head = hp.count("attention.head_count")?;
        let n_head_kv = hp.opt_usize("attention.head_count_kv")?.unwrap_or(n_head);
        let head_dim = hp.opt_usize("attention.key_length")?.unwrap_or(n_embd / n_head);
        if n_head_kv == 0 || n_head % n_head_kv != 0 || head_dim == 0 {
            return Err(FamilyError::BadValue {
                key: "llama.attention.head_count_kv".into(),
                why: format!("{n_head} heads cannot share {n_head_kv} KV heads of {head_dim}"),
            });
        }
        let n_rot = hp.opt_usize("rope.dimension_count")?.unwrap_or(head_dim);
        if n_rot > head_dim || n_rot % 2 != 0 {
            return Err(FamilyError::BadValue { key: "llama.rope.dimension_count".into(), why: format!("{n_rot} with head_dim {head_dim}") });
        }
        let n_ff = hp.count("feed_forward_length")?;
        let embd = file.tensor_info("token_embd.weight").ok_or_else(|| FamilyError::MissingTensor("token_embd.weight".into()))?;
        let n_vocab = embd.dims.get(1).copied().unwrap_or(0) as usize;
        check_tensor(file, "token_embd.weight", &[n_embd, n_vocab])?;

        let freq_scale = match hp.opt_str("rope.scaling.type") {
            Some("linear") => 1.0 / hp.opt_f32("rope.scaling.factor")?.filter(|f| *f > 0.0).unwrap_or(1.0),
            _ => 1.0,
        };
        let freq_factors = match file.tensor("rope_freqs.weight") {
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
        let rope = RopeConfig {
            style: RopeStyle::Normal,
            n_rot,
            freq_base: hp.opt_f32("rope.freq_base")?.unwrap_or(10000.0),
            freq_scale,
            llama3: None,
            freq_factors,
        };
        let window = hp.opt_usize("attention.sliding_window")?.filter(|&w| w > 0);

        let (q_dim, kv_dim) = (n_head * head_dim, n_head_kv * head_dim);
        let mut layers = Vec::with_capacity(n_layer);
        for i in 0..n_layer {
            let t = |s: &str| format!("blk.{i}.{s}.weight");
            check_tensor(file, &t("attn_norm"), &[n_embd])?;
            check_tensor(file, &t("attn_q"), &[n_embd, q_dim])?;
            check_tensor(file, &t("attn_k"), &[n_embd, kv_dim])?;
            check_tensor(file, &t("attn_v"), &[n_embd, kv_dim])?;
            check_tensor(file, &t("attn_output"), &[q_dim, n_embd])?;
            check_tensor(file, &t("ffn_norm"), &[n_embd])?;
            check_tensor(file, &t("ffn_gate"), &[n_embd, n_ff])?;
            check_tensor(file, &t("ffn_up"), &[n_embd, n_ff])?;
            check_tensor(file, &t("ffn_down"), &[n_ff, n_embd])?;
            layers.push(LayerSpec {
                attn_norm: NormWeights::weight(t("attn_norm")),
                attention: AttentionSpec {
                    qkv: Qkv::Separate { q: Linear::new(t("attn_q")), k: Linear::new(t("attn_k")), v: Linear::new(t("attn_v")) },
                    output: Linear::new(t("attn_output")),
                    q_norm: None,
                    k_norm: None,
                    rope: rope.clone(),
                    window,
                },
                ffn_norm: Some(NormWeights::weight(t("ffn_norm"))),
                ffn: FfnSpec {
                    gate: Some(Linear::new(t("ffn_gate"))),
                    up: Linear::new(t("ffn_up")),
                    down: Linear::new(t("ffn_down")),
                    activation: Activation::SwiGlu,
                },
                post_attn_norm: None,
                post_ffn_norm: None,
            });
        }
        check_tensor(file, "output_norm.weight", &[n_embd])?;
        let output = if file.tensor_info("output.weight").is_some() {
            check_tensor(file, "output.weight", &[n_embd, n_vocab])?;
            "output.weight"
        } else {
            "token_embd.weight"
        };
        Ok(ModelSpec {
            architecture: "llama".into(),
            hparams: Hparams {
                n_vocab,
                n_embd,
                n_layer,
                n_head,
                n_head_kv,
                head_dim,
                n_ff,
                n_ctx_train: hp.opt_usize("context_length")?.unwrap_or(2048),
                norm: NormKind::Rms,
                norm_eps: hp.opt_f32("attention.layer_norm_rms_epsilon")?.unwrap_or(1e-5),
                norm_add_one: false,
                embed_scale: None,
                attn_scale: 1.0 / (head_dim as f32).sqrt(),
                attn_softcap: None,
                final_softcap: None,
                parallel_residual: false,
            },
            token_embd: "token_embd.weight".into(),
            output_norm: NormWeights::weight("output_norm.weight"),
            output: output.into(),
            layers,
        })
    }
}
