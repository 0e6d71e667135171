//! The Qwen2 family (Qwen1.5, Qwen2, Qwen2.5 and their Coder variants): a Llama-style block with
//! biases on q, k and v and halves-style rotary.

use hangar_engine::family::{Family, FamilyError};
use hangar_engine::gguf::GgufFile;
use hangar_engine::spec::{Activation, ModelSpec, NormKind, RopeStyle};
use hangar_engine::wiring::{self, BlockWiring, Presence, Tensors};

pub struct Qwen2;

impl Family for Qwen2 {
    fn name(&self) -> &'static str {
        "qwen2"
    }

    fn architectures(&self) -> &'static [&'static str] {
        &["qwen2"]
    }

    fn build_spec(&self, file: &GgufFile) -> Result<ModelSpec, FamilyError> {
        let (hp, d) = wiring::open(file)?;
        let rope = wiring::rope(&hp, RopeStyle::Neox, d.n_rot)?;
        let wiring = BlockWiring { activation: Activation::SwiGlu, ffn_norm: Presence::Required, post_norms: false, qk_norm: Presence::Absent };
        let t = Tensors::new(file, &d);
        let layers = (0..d.n_layer).map(|i| t.block(i, &wiring, rope.clone(), None)).collect::<Result<_, _>>()?;
        let eps = wiring::norm_eps(&hp, NormKind::Rms, 1e-6)?;
        t.model("qwen2", d.hparams(NormKind::Rms, eps), layers)
    }
}
