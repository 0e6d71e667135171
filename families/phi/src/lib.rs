//! The Phi family. Phi-2: LayerNorm with biases, one norm feeding attention and a GELU MLP in
//! parallel, partial rotary, biased projections and LM head. Phi-3: RMSNorm, fused QKV, and
//! `[gate | up]` fused into `ffn_up`.

use hangar_engine::family::{Family, FamilyError};
use hangar_engine::gguf::GgufFile;
use hangar_engine::spec::{Activation, ModelSpec, NormKind, RopeStyle};
use hangar_engine::wiring::{self, BlockWiring, Presence, Tensors};

pub struct Phi;

impl Family for Phi {
    fn name(&self) -> &'static str {
        "phi"
    }

    fn architectures(&self) -> &'static [&'static str] {
        &["phi2", "phi3"]
    }

    fn build_spec(&self, file: &GgufFile) -> Result<ModelSpec, FamilyError> {
        let (hp, d) = wiring::open(file)?;
        let phi2 = hp.arch == "phi2";
        if file.tensor_info("rope_factors_long.weight").is_some() {
            // Phi-3 128k's LongRoPE switches factor tables by context length and rescales
            // attention; decoding it with plain rope would be silently wrong.
            return Err(FamilyError::BadValue { key: "rope_factors_long.weight".into(), why: "LongRoPE is not supported".into() });
        }
        let rope = wiring::rope(&hp, RopeStyle::Neox, d.n_rot)?;
        let (norm, wiring) = if phi2 {
            (NormKind::Layer, BlockWiring { activation: Activation::Gelu, ffn_norm: Presence::Absent, post_norms: false, qk_norm: Presence::Absent })
        } else {
            (NormKind::Rms, BlockWiring { activation: Activation::SwiGlu, ffn_norm: Presence::Required, post_norms: false, qk_norm: Presence::Absent })
        };
        // Phi-3's `sliding_window` is ignored, as llama.cpp ignores it (its converters set it
        // inconsistently), so that outputs stay comparable.
        let t = Tensors::new(file, &d);
        let layers = (0..d.n_layer).map(|i| t.block(i, &wiring, rope.clone(), None)).collect::<Result<_, _>>()?;
        let mut hparams = d.hparams(norm, wiring::norm_eps(&hp, norm, 1e-5)?);
        hparams.parallel_residual = phi2;
        t.model(hp.arch, hparams, layers)
    }
}
