//! The plugin loader against real cdylibs built from `plugins/examples/`: the example plugin
//! loads and serves a model end to end; a plugin with a foreign fingerprint and one that
//! panics while registering are refused, and the host goes on working.

use std::path::Path;

use hangar_engine::cpu::CpuBackend;
use hangar_engine::Model;
use hangar_tests::plugins::{fill_plugin_dir, rename_architecture, ALL as EXAMPLES, EXAMPLE, PLUGIN_ARCH};

/// A plugin directory holding copies of the named plugins.
fn plugin_dir(crates: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    fill_plugin_dir(dir.path(), crates);
    dir
}

#[test]
fn refused_plugins_are_reported_and_the_good_one_still_loads() {
    let dir = plugin_dir(&EXAMPLES);
    let mut registry = hangar_families::registry();
    let before = registry.architectures();
    let set = hangar_plugins::load_dir(dir.path(), &mut registry);

    assert_eq!(set.loaded.len(), 1, "loaded: {:?}", set.loaded);
    let info = &set.loaded[0];
    assert_eq!(info.name, "example");
    assert_eq!(info.architectures, vec![PLUGIN_ARCH]);
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"), "the example shares the workspace version");
    assert_eq!(info.rule_sources, vec!["example-no-secrets"]);
    assert_eq!(info.logits_processors, vec!["ban-token"]);

    assert_eq!(set.refused.len(), 2);
    let messages: Vec<String> = set.refused.iter().map(|e| e.to_string()).collect();
    assert!(
        set.refused.iter().any(|e| matches!(e, hangar_plugins::PluginError::FingerprintMismatch { found, .. } if found.contains("rustc=1.0.0"))),
        "{messages:?}"
    );
    assert!(
        set.refused.iter().any(|e| matches!(e, hangar_plugins::PluginError::RegistrationPanicked { message, .. } if message.contains("on purpose"))),
        "{messages:?}"
    );
    // The panicking plugin registered a family before it panicked; none of it was kept.
    let mut after = registry.architectures();
    after.retain(|a| *a != PLUGIN_ARCH);
    assert_eq!(after, before);
}

#[test]
fn plugins_load_in_file_name_order() {
    let dir = plugin_dir(&EXAMPLES);
    let files = hangar_plugins::plugin_files(dir.path()).expect("list");
    let mut sorted = files.clone();
    sorted.sort();
    assert_eq!(files, sorted);
    assert_eq!(files.len(), 3);
}

#[test]
fn a_directory_that_does_not_exist_is_an_error_not_a_panic() {
    let mut registry = hangar_families::registry();
    let set = hangar_plugins::load_dir(Path::new("/nonexistent/hangar-plugins"), &mut registry);
    assert!(set.loaded.is_empty());
    assert!(matches!(set.refused.as_slice(), [hangar_plugins::PluginError::ReadDir { .. }]));
}

#[test]
fn a_file_that_is_not_a_plugin_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fake = dir.path().join(format!("junk{}", std::env::consts::DLL_SUFFIX));
    std::fs::write(&fake, b"not a shared object").expect("write");
    let mut registry = hangar_families::registry();
    let set = hangar_plugins::load_dir(dir.path(), &mut registry);
    assert!(set.loaded.is_empty());
    assert!(matches!(set.refused.as_slice(), [hangar_plugins::PluginError::Open { .. }]));
}

fn greedy(path: &Path, registry: &hangar_engine::family::Registry, prompt: &str) -> Vec<u32> {
    let mut model = Model::load(path, registry, Box::new(CpuBackend::new()), |_, _| {}).expect("load");
    let tokens = model.tokenizer.encode(prompt, true, false).expect("encode");
    let params = hangar_engine::GenerateParams {
        max_tokens: 12,
        sampling: hangar_engine::sampling::SamplingParams::greedy(),
        ..Default::default()
    };
    let mut s = model.session(256).expect("session");
    s.generate(&tokens, &params, |_, _| true).expect("generate").tokens
}

#[test]
fn the_example_plugin_family_serves_a_renamed_llama_like_the_in_tree_family() {
    let smol = hangar_tests::model_path("SmolLM2-135M-Instruct.Q4_1.gguf");
    let dir = tempfile::tempdir().expect("temp dir");
    let renamed = dir.path().join("renamed.gguf");
    rename_architecture(&smol, &renamed, PLUGIN_ARCH);

    let mut registry = hangar_families::registry();
    // Without the plugin the architecture is unknown, and the error lists what is supported.
    let err = match Model::load(&renamed, &registry, Box::new(CpuBackend::new()), |_, _| {}) {
        Ok(_) => panic!("an unregistered architecture loaded"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(PLUGIN_ARCH) && err.contains("llama"), "{err}");

    let plugins = plugin_dir(&[EXAMPLE]);
    let set = hangar_plugins::load_dir(plugins.path(), &mut registry);
    assert!(set.refused.is_empty(), "{:?}", set.refused.iter().map(|e| e.to_string()).collect::<Vec<_>>());

    // The oracle for the plugin family is the in-tree llama family, itself held to llama.cpp
    // by the parity tests: same weights, same greedy tokens.
    let prompt = "The three primary colours are";
    assert_eq!(greedy(&renamed, &registry, prompt), greedy(&smol, &registry, prompt));
}
