//! The GPT-NeoX family. GPT-NeoX (Pythia): fused biased QKV, partial rotary, LayerNorm with
//! biases, and (by `use_parallel_residual`, default on) attention and a GELU MLP in parallel,
//! each with its own norm. StableLM: separate biased q/k/v, partial rotary and a SwiGLU FFN;
//! files without `ffn_norm` (StableLM-2-12B) run attention and FFN in parallel from one norm.

use hangar_engine::family::{Family, FamilyError};
use hangar_engine::gguf::GgufFile;
use hangar_engine::spec::{Activation, ModelSpec, NormKind, RopeStyle};
use hangar_engine::wiring::{self, blk, BlockWiring, Presence, Tensors};

pub struct NeoX;

impl Family for NeoX {
    fn name(&self) -> &'static str {
        "neox"
    }

    fn architectures(&self) -> &'static [&'static str] {
        &["gptneox", "stablelm"]
    }

    fn build_spec(&self, file: &GgufFile) -> Result<ModelSpec, FamilyError> {
        let (hp, d) = wiring::open(file)?;
        let rope = wiring::rope(&hp, RopeStyle::Neox, d.n_rot)?;
        let t = Tensors::new(file, &d);
        let (wiring, parallel) = if hp.arch == "gptneox" {
            let parallel = hp.opt_bool("use_parallel_residual")?.unwrap_or(true);
            (BlockWiring { activation: Activation::Gelu, ffn_norm: Presence::Required, post_norms: false, qk_norm: Presence::Absent }, parallel)
        } else {
            if t.has(&blk(0, "attn_q_norm.weight")) {
                // StableLM-2-12B normalizes each head with its own weights, which a per-head
                // norm sharing one weight vector cannot express.
                return Err(FamilyError::BadValue { key: "blk.0.attn_q_norm.weight".into(), why: "per-head q/k LayerNorm is not supported".into() });
            }
            let parallel = !t.has(&blk(0, "ffn_norm.weight"));
            (BlockWiring { activation: Activation::SwiGlu, ffn_norm: Presence::Optional, post_norms: false, qk_norm: Presence::Absent }, parallel)
        };
        let layers = (0..d.n_layer).map(|i| t.block(i, &wiring, rope.clone(), None)).collect::<Result<Vec<_>, _>>()?;
        if layers.iter().any(|l| l.ffn_norm.is_none() != parallel && hp.arch == "stablelm") {
            return Err(FamilyError::BadValue { key: "blk.*.ffn_norm.weight".into(), why: "present in some blocks only".into() });
        }
        let mut hparams = d.hparams(NormKind::Layer, wiring::norm_eps(&hp, NormKind::Layer, 1e-5)?);
        hparams.parallel_residual = parallel;
        t.model(hp.arch, hparams, layers)
    }
}
