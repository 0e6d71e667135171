//! The Gemma family. All three: embeddings scaled by √n_embd, tied LM head, RMSNorm, GeGLU,
//! halves-style rotary. Gemma 2 adds post-attention/post-FFN norms, attention and final-logit
//! soft-capping, and sliding-window attention on every other layer. Gemma 3 drops attention
//! soft-capping, adds per-head QK-norm, and makes five of every six layers sliding-window, with
//! their own rope base.
//!
//! Gemma's checkpoints store norm weights as `w - 1`; llama.cpp's converter adds the 1 back
//! when writing the GGUF, so these specs use plain `w` (`norm_add_one` stays off).

use hangar_engine::family::{Family, FamilyError, Hp};
use hangar_engine::gguf::GgufFile;
use hangar_engine::spec::{Activation, ModelSpec, NormKind, RopeStyle};
use hangar_engine::wiring::{self, BlockWiring, Dims, Presence, Tensors};

pub struct Gemma;

/// What separates the generations.
struct Variant {
    post_norms: bool,
    qk_norm: bool,
    /// The sliding-window period when the file names none (see `wiring::swa_layers`).
    swa_period: usize,
    /// Window when the file names none; `None`: no sliding window unless the file declares one.
    default_window: Option<usize>,
    /// The rope base of sliding-window layers when the file names none; `None`: the global base.
    default_swa_base: Option<f32>,
    attn_softcap: Option<f32>,
    final_softcap: Option<f32>,
    /// Layer count of the 27B model, which scales attention by 1/√(n_embd / n_head).
    n_layer_27b: usize,
}

fn variant(arch: &str) -> Variant {
    match arch {
        "gemma2" => Variant {
            post_norms: true,
            qk_norm: false,
            swa_period: 2,
            default_window: Some(4096),
            default_swa_base: None,
            attn_softcap: Some(50.0),
            final_softcap: Some(30.0),
            n_layer_27b: 46,
        },
        "gemma3" => Variant {
            post_norms: true,
            qk_norm: true,
            swa_period: 6,
            default_window: None,
            default_swa_base: Some(10000.0),
            attn_softcap: None,
            final_softcap: None,
            n_layer_27b: 62,
        },
        _ => Variant {
            post_norms: false,
            qk_norm: false,
            swa_period: 0,
            default_window: None,
            default_swa_base: None,
            attn_softcap: None,
            final_softcap: None,
            n_layer_27b: 0,
        },
    }
}

/// A soft-cap from the file or the default; 0 in the file turns it off.
fn softcap(hp: &Hp, key: &str, default: Option<f32>) -> Result<Option<f32>, FamilyError> {
    Ok(match hp.opt_f32(key)? {
        Some(c) if c > 0.0 => Some(c),
        Some(_) => None,
        None => default,
    })
}

impl Family for Gemma {
    fn name(&self) -> &'static str {
        "gemma"
    }

    fn architectures(&self) -> &'static [&'static str] {
        &["gemma", "gemma2", "gemma3"]
    }

    fn build_spec(&self, file: &GgufFile) -> Result<ModelSpec, FamilyError> {
        let (hp, d) = wiring::open(file)?;
        let v = variant(hp.arch);
        let global = wiring::rope(&hp, RopeStyle::Neox, d.n_rot)?;
        let window = match hp.opt_usize("attention.sliding_window")? {
            Some(0) => None,
            Some(w) => Some(w),
            None => v.default_window,
        };
        let swa = match window {
            Some(_) if v.swa_period > 0 => wiring::swa_layers(&hp, d.n_layer, v.swa_period)?,
            _ => vec![false; d.n_layer],
        };
        // Sliding-window layers may rotate with their own base; Gemma 3's also skip the
        // position scaling of its long-context global layers.
        let mut local = global.clone();
        if let Some(base) = hp.opt_f32("rope.freq_base_swa")?.or(v.default_swa_base) {
            local.freq_base = base;
        }
        if v.default_swa_base.is_some() {
            local.freq_scale = 1.0;
        }
        let wiring = BlockWiring {
            activation: Activation::GeGlu,
            ffn_norm: Presence::Required,
            post_norms: v.post_norms,
            qk_norm: if v.qk_norm { Presence::Required } else { Presence::Absent },
        };
        let t = Tensors::new(file, &d);
        let layers = (0..d.n_layer)
            .map(|i| match swa[i] {
                true => t.block(i, &wiring, local.clone(), window),
                false => t.block(i, &wiring, global.clone(), None),
            })
            .collect::<Result<_, _>>()?;
        let mut hparams = d.hparams(NormKind::Rms, wiring::norm_eps(&hp, NormKind::Rms, 1e-6)?);
        hparams.embed_scale = Some((d.n_embd as f32).sqrt());
        hparams.attn_scale = attn_scale(&d, v.n_layer_27b);
        hparams.attn_softcap = softcap(&hp, "attn_logit_softcapping", v.attn_softcap)?;
        hparams.final_softcap = softcap(&hp, "final_logit_softcapping", v.final_softcap)?;
        let mut spec = t.model(hp.arch, hparams, layers)?;
        // llama.cpp always reads the LM head from the embedding table for Gemma.
        (spec.output, spec.output_bias) = ("token_embd.weight".into(), None);
        Ok(spec)
    }
}

fn attn_scale(d: &Dims, n_layer_27b: usize) -> f32 {
    let width = if d.n_layer == n_layer_27b { d.n_embd / d.n_head } else { d.head_dim };
    1.0 / (width as f32).sqrt()
}
