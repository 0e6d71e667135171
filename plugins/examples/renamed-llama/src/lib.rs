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

/// Bans one token id outright: the smallest useful processor, for the loader's and the
/// server's tests.
struct BanToken(u32);

/// Where the operator configures the banned id. A plugin has no config section of its own in
/// `hangar.toml`, so it reads its settings from its own environment variable at registration.
pub const BANNED_TOKEN_ENV: &str = "HANGAR_EXAMPLE_PLUGIN_BANNED_TOKEN";

/// The configured id, 0 when unset. An unparsable value fails registration (the host reports
/// the plugin as refused) rather than silently banning some other token.
fn banned_token() -> u32 {
    match std::env::var(BANNED_TOKEN_ENV) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{BANNED_TOKEN_ENV}={v:?} is not a token id")),
        Err(_) => 0,
    }
}

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
    r.logits_processor(Box::new(BanToken(banned_token())));
}

export_plugin!(register);
