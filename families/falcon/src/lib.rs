//! The Falcon family: fused QKV with multi-query attention, LayerNorm with biases, and attention
//! and a GELU MLP in parallel. Falcon-7B feeds both from `attn_norm`; Falcon-40B gives the MLP
//! its own `attn_norm_2`.

use hangar_engine::family::{Family, FamilyError};
use hangar_engine::gguf::GgufFile;
use hangar_engine::spec::{Activation, ModelSpec, NormKind, RopeStyle};
use hangar_engine::wiring::{self, blk, BlockWiring, Presence, Tensors};

pub struct Falcon;

impl Family for Falcon {
    fn name(&self) -> &'static str {
        "falcon"
    }

    fn architectures(&self) -> &'static [&'static str] {
        &["falcon"]
    }

    fn build_spec(&self, file: &GgufFile) -> Result<ModelSpec, FamilyError> {
        let (hp, d) = wiring::open(file)?;
        let rope = wiring::rope(&hp, RopeStyle::Neox, d.n_rot)?;
        let wiring = BlockWiring { activation: Activation::Gelu, ffn_norm: Presence::Absent, post_norms: false, qk_norm: Presence::Absent };
        let t = Tensors::new(file, &d);
        let mut layers = Vec::with_capacity(d.n_layer);
        for i in 0..d.n_layer {
            let mut layer = t.block(i, &wiring, rope.clone(), None)?;
            layer.ffn_norm = t.norm_if(Presence::Optional, &blk(i, "attn_norm_2"), d.n_embd)?;
            layers.push(layer);
        }
        let mut hparams = d.hparams(NormKind::Layer, wiring::norm_eps(&hp, NormKind::Layer, 1e-5)?);
        hparams.parallel_residual = true;
        t.model("falcon", hparams, layers)
    }
}
