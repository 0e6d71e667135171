//! The Llama family: llama-architecture GGUFs (Llama 1-3, SmolLM, TinyLlama, and Mistral, whose
//! converters also write `llama`). Hparams plus wiring; the engine's graph does the rest.

use hangar_engine::family::{Family, FamilyError};
use hangar_engine::gguf::GgufFile;
use hangar_engine::spec::{Activation, ModelSpec, NormKind, RopeStyle};
use hangar_engine::wiring::{self, BlockWiring, Presence, Tensors};

pub struct Llama;

impl Family for Llama {
    fn name(&self) -> &'static str {
        "llama"
    }

    fn architectures(&self) -> &'static [&'static str] {
        &["llama"]
    }

    fn build_spec(&self, file: &GgufFile) -> Result<ModelSpec, FamilyError> {
        let (hp, d) = wiring::open(file)?;
        let rope = wiring::rope(&hp, RopeStyle::Normal, d.n_rot)?;
        // Mistral's sliding window, when a file declares one. llama.cpp's llama graph ignores the
        // key, so it only matters past `window` positions (4096 for Mistral 7B v0.1).
        let window = hp.opt_usize("attention.sliding_window")?.filter(|&w| w > 0);
        let wiring = BlockWiring { activation: Activation::SwiGlu, ffn_norm: Presence::Required, post_norms: false, qk_norm: Presence::Absent };
        let t = Tensors::new(file, &d);
        let layers = (0..d.n_layer).map(|i| t.block(i, &wiring, rope.clone(), window)).collect::<Result<_, _>>()?;
        let eps = wiring::norm_eps(&hp, NormKind::Rms, 1e-5)?;
        t.model("llama", d.hparams(NormKind::Rms, eps), layers)
    }
}
