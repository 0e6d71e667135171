//! The plugin loader against real cdylibs built from `plugins/examples/`: the example plugin
//! loads and serves a model end to end; a plugin with a foreign fingerprint and one that
//! panics while registering are refused, and the host goes on working.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use hangar_engine::cpu::CpuBackend;
use hangar_engine::gguf::{GgufFile, GgufWriter, MetaValue, TensorDesc};
use hangar_engine::Model;

const EXAMPLES: [&str; 3] = ["hangar-plugin-example", "hangar-plugin-bad-fingerprint", "hangar-plugin-panics"];

/// Builds the example cdylibs (cargo does not build a cdylib member for another crate's tests)
/// and returns the directory they land in.
fn built_plugins() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test> -> target/<profile>
        let profile_dir = exe.parent().and_then(Path::parent).expect("target profile dir").to_path_buf();
        let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
        let mut cmd = Command::new(env!("CARGO"));
        cmd.arg("build").arg("--quiet").arg("--locked").arg("--target-dir").arg(&target_dir);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        for p in EXAMPLES {
            cmd.args(["-p", p]);
        }
        let status = cmd.current_dir(env!("CARGO_MANIFEST_DIR")).status().expect("run cargo");
        assert!(status.success(), "building the example plugins failed");
        profile_dir
    })
}

fn lib_path(crate_name: &str) -> PathBuf {
    let file = format!("{}{}{}", std::env::consts::DLL_PREFIX, crate_name.replace('-', "_"), std::env::consts::DLL_SUFFIX);
    built_plugins().join(file)
}

/// A plugin directory holding copies of the named plugins.
fn plugin_dir(crates: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for c in crates {
        let src = lib_path(c);
        let dst = dir.path().join(src.file_name().expect("file name"));
        std::fs::copy(&src, &dst).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
    }
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
    assert_eq!(info.architectures, vec!["hangar-llama"]);
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
    after.retain(|a| *a != "hangar-llama");
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

/// Rewrites a llama GGUF under another architecture name: `general.architecture` and every
/// `llama.*` key move to `arch`, tensors are copied unchanged.
fn rename_architecture(src: &Path, dst: &Path, arch: &str) {
    let file = GgufFile::open(src).expect("open model");
    let mut w = GgufWriter::new();
    for (k, v) in file.metadata() {
        let key = match k.strip_prefix("llama.") {
            Some(rest) => format!("{arch}.{rest}"),
            None => k.to_string(),
        };
        let value = if k == "general.architecture" { MetaValue::String(arch.to_string()) } else { v.clone() };
        w.set(&key, value);
    }
    for t in file.tensors() {
        w.add_tensor(TensorDesc { name: t.name.clone(), ty: t.ty, dims: t.dims.clone() }).expect("tensor");
    }
    let out = std::fs::File::create(dst).expect("create");
    w.write::<_, hangar_engine::gguf::GgufError>(out, |i, _| Ok(file.view(&file.tensors()[i]).data.to_vec())).expect("write");
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
    rename_architecture(&smol, &renamed, "hangar-llama");

    let mut registry = hangar_families::registry();
    // Without the plugin the architecture is unknown, and the error lists what is supported.
    let err = match Model::load(&renamed, &registry, Box::new(CpuBackend::new()), |_, _| {}) {
        Ok(_) => panic!("an unregistered architecture loaded"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("hangar-llama") && err.contains("llama"), "{err}");

    let plugins = plugin_dir(&["hangar-plugin-example"]);
    let set = hangar_plugins::load_dir(plugins.path(), &mut registry);
    assert!(set.refused.is_empty(), "{:?}", set.refused.iter().map(|e| e.to_string()).collect::<Vec<_>>());

    // The oracle for the plugin family is the in-tree llama family, itself held to llama.cpp
    // by the parity tests: same weights, same greedy tokens.
    let prompt = "The three primary colours are";
    assert_eq!(greedy(&renamed, &registry, prompt), greedy(&smol, &registry, prompt));
}
