//! An out-of-tree family: GGUFs that declare `general.architecture = "hangar-llama"` (with
//! their hparams under `hangar-llama.*`) are llama models under another name, the way vendors
//! ship renamed variants. The plugin reuses the llama wiring rather than copying it.

use hangar_plugin_api::hangar_engine::family::{Family, FamilyError};
use hangar_plugin_api::hangar_engine::gguf::GgufFile;
use hangar_plugin_api::hangar_engine::spec::ModelSpec;
use hangar_plugin_api::{export_plugin, LogitsProcessor, Registrar};

pub const ARCHITECTURE: &str = "hangar-llama";

struct RenamedLlama;

impl Family for RenamedLlama {
    fn name(&self) -> &'static str {
        "hangar-llama (plugin)"
    }

    fn architectures(&self) -> &'static [&'static str] {
        &[ARCHITECTURE]
    }

    fn build_spec(&self, file: &GgufFile) -> Result<ModelSpec, FamilyError> {
        // The llama family reads `{general.architecture}.*` keys, so it serves the renamed
        // file unchanged.
        hangar_family_llama::Llama.build_spec(file)
    }
}

/// Bans one token id outright: the smallest useful processor, for the loader's tests.
struct BanToken(u32);

impl LogitsProcessor for BanToken {
    fn name(&self) -> &str {
        "ban-token"
    }

    fn process(&self, _history: &[u32], logits: &mut [f32]) -> Result<(), String> {
        let slot = logits.get_mut(self.0 as usize).ok_or_else(|| format!("token {} is outside the vocabulary", self.0))?;
        *slot = f32::NEG_INFINITY;
        Ok(())
    }
}

fn register(r: &mut dyn Registrar) {
    r.plugin_name("example");
    r.family(Box::new(RenamedLlama));
    r.rule_source(
        "example-no-secrets",
        "[[rule]]\nid = \"no-aws-keys\"\npattern = \"AKIA[0-9A-Z]{16}\"\nkind = \"regex\"\naction = \"deny\"\n",
    );
    r.logits_processor(Box::new(BanToken(0)));
}

export_plugin!(register);
