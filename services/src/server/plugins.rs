//! The server's plugins: loaded once at start-up from `plugin_dir` into the family registry
//! every model load uses, and kept for the life of the process. Requests can name a plugin's
//! logits processor but can never make the server load a library.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use hangar_engine::family::Registry as Families;
use hangar_plugins::{LogitsProcessor, PluginSet};

use super::config::Config;
use super::error::ServiceError;
use super::pb;

pub struct Plugins {
    families: Families,
    set: PluginSet,
    dir: String,
}

impl Plugins {
    /// The in-tree families plus whatever the plugins in `dir` register; `dir` empty loads
    /// none. A plugin that fails is logged (by the loader) and listed as refused.
    pub fn load(dir: &Path) -> Plugins {
        let mut families = hangar_families::registry();
        let set = if dir.as_os_str().is_empty() {
            PluginSet::default()
        } else {
            let set = hangar_plugins::load_dir(dir, &mut families);
            tracing::info!(dir = %dir.display(), loaded = set.loaded.len(), refused = set.refused.len(), "plugins loaded");
            set
        };
        Plugins { families, set, dir: dir.display().to_string() }
    }

    /// The registry models load with: in-tree families and plugin families alike.
    pub fn families(&self) -> &Families {
        &self.families
    }

    /// The family serving `arch` and the plugin that registered it (empty when in-tree).
    pub fn family_of(&self, arch: &str) -> (String, String) {
        let family = self.families.resolve(arch).map(|f| f.name().to_string()).unwrap_or_default();
        let plugin = self.set.plugin_for_architecture(arch).map(|p| p.name.clone()).unwrap_or_default();
        (family, plugin)
    }

    /// The processors `names` (from `field`) name, in order; an unknown name is
    /// INVALID_ARGUMENT.
    pub fn processors(&self, field: &str, names: &[String]) -> Result<Vec<Arc<dyn LogitsProcessor>>, ServiceError> {
        names
            .iter()
            .map(|n| {
                self.set.processor(n).ok_or_else(|| {
                    let known: Vec<&str> = self.set.logits_processors.iter().map(|p| p.name()).collect();
                    ServiceError::invalid(field, format!("no plugin registered a logits processor named {n:?}; known: {known:?}"))
                })
            })
            .collect()
    }

    /// What one request for `model` runs: the model's configured processors (checked when it
    /// loaded), then those the request names that are not already among them.
    pub fn for_request(&self, config: &Config, model: &str, requested: &[String]) -> Result<Vec<Arc<dyn LogitsProcessor>>, ServiceError> {
        let configured = config.models.get(model).map(|e| e.logits_processors.as_slice()).unwrap_or_default();
        let mut out = self.processors(&format!("models.{model}.logits_processors"), configured)?;
        let extra: Vec<String> = requested.iter().filter(|n| !configured.contains(n)).cloned().collect();
        out.extend(self.processors("logits_processors", &extra)?);
        Ok(out)
    }

    /// Policy rule sets the plugins registered, as (name, rule-set TOML text), in load
    /// order; for the policy store to add beside the operator's rule files.
    pub fn rule_sources(&self) -> &[(String, String)] {
        &self.set.rule_sources
    }

    /// What `GetServerInfo` reports.
    pub fn server_info(&self) -> pb::ServerInfo {
        let plugins = self
            .set
            .loaded
            .iter()
            .map(|p| pb::PluginInfo {
                name: p.name.clone(),
                version: p.version.clone(),
                path: p.path.display().to_string(),
                architectures: p.architectures.iter().map(|a| a.to_string()).collect(),
                rule_sources: p.rule_sources.clone(),
                logits_processors: p.logits_processors.clone(),
            })
            .collect();
        let refused_plugins = self
            .set
            .refused
            .iter()
            .map(|e| pb::RefusedPlugin { path: e.path().display().to_string(), error: e.to_string(), kind: e.kind().into() })
            .collect();
        // The registry lists architectures; group them under the family that serves each.
        let mut by_family: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for arch in self.families.architectures() {
            by_family.entry(self.family_of(arch)).or_default().push(arch.to_string());
        }
        let families = by_family.into_iter().map(|((name, plugin), architectures)| pb::FamilyInfo { name, architectures, plugin }).collect();
        pb::ServerInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            plugin_dir: self.dir.clone(),
            plugins,
            refused_plugins,
            families,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_plugin_dir_every_in_tree_family_is_listed_and_no_processor_exists() {
        let p = Plugins::load(Path::new(""));
        let info = p.server_info();
        assert!(info.plugins.is_empty() && info.refused_plugins.is_empty() && info.plugin_dir.is_empty());
        let listed: usize = info.families.iter().map(|f| f.architectures.len()).sum();
        assert_eq!(listed, hangar_families::registry().architectures().len());
        assert!(info.families.iter().all(|f| f.plugin.is_empty() && !f.name.is_empty()));
        assert_eq!(p.family_of("llama"), ("llama".to_string(), String::new()));
        match p.processors("logits_processors", &["ban-token".into()]) {
            Err(ServiceError::InvalidArgument { field, .. }) => assert_eq!(field, "logits_processors"),
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("a processor no plugin registered was found"),
        }
        assert!(p.processors("logits_processors", &[]).is_ok_and(|v| v.is_empty()));
    }

    #[test]
    fn the_example_plugin_rule_source_is_exposed_as_a_rule_set_the_policy_crate_compiles() {
        let dir = std::env::temp_dir().join(format!("hangar-plugin-rule-source-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("plugin dir");
        hangar_tests::plugins::fill_plugin_dir(&dir, &[hangar_tests::plugins::EXAMPLE]);
        let p = Plugins::load(&dir);
        let [(name, toml)] = p.rule_sources() else { panic!("one rule source: {:?}", p.rule_sources()) };
        assert_eq!(name, "example-no-secrets");
        let set = hangar_policy::RuleSet::from_toml(name, toml).unwrap_or_else(|e| panic!("{name} does not compile: {e}"));
        assert_eq!(set.name(), name);
        assert_eq!(p.family_of(hangar_tests::plugins::PLUGIN_ARCH).1, "example");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unreadable_plugin_dir_is_reported_and_the_in_tree_families_still_load() {
        let p = Plugins::load(Path::new("/nonexistent/hangar-plugins"));
        let info = p.server_info();
        assert_eq!(info.refused_plugins.len(), 1);
        assert_eq!(info.refused_plugins[0].kind, "read_dir");
        assert!(p.families().resolve("llama").is_ok());
    }
}
