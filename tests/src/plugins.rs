//! The example plugins under `plugins/examples/`, built as cdylibs for tests, and a llama GGUF
//! renamed to an architecture only a plugin claims.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use hangar_engine::gguf::{GgufFile, GgufWriter, MetaValue, TensorDesc};

/// The good example plugin: a renamed-llama family, a rule source and a logits processor.
pub const EXAMPLE: &str = "hangar-plugin-example";
/// Built for another compiler; the host must refuse it unread.
pub const BAD_FINGERPRINT: &str = "hangar-plugin-bad-fingerprint";
/// Panics in registration after registering a family.
pub const PANICS: &str = "hangar-plugin-panics";
pub const ALL: [&str; 3] = [EXAMPLE, BAD_FINGERPRINT, PANICS];
/// The architecture string the example plugin's family claims.
pub const PLUGIN_ARCH: &str = "hangar-llama";

/// Builds the example cdylibs into the running test's target directory, once per process
/// (cargo does not build a cdylib member for another crate's tests), and returns the profile
/// directory they land in.
pub fn built_plugins() -> &'static Path {
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
        for p in ALL {
            cmd.args(["-p", p]);
        }
        let status = cmd.current_dir(env!("CARGO_MANIFEST_DIR")).status().expect("run cargo");
        assert!(status.success(), "building the example plugins failed");
        profile_dir
    })
}

/// The built library of plugin crate `crate_name`.
pub fn plugin_lib(crate_name: &str) -> PathBuf {
    let file = format!("{}{}{}", std::env::consts::DLL_PREFIX, crate_name.replace('-', "_"), std::env::consts::DLL_SUFFIX);
    built_plugins().join(file)
}

/// Copies the named plugins into `dir`, which becomes a plugin directory.
pub fn fill_plugin_dir(dir: &Path, crates: &[&str]) {
    for c in crates {
        let src = plugin_lib(c);
        let dst = dir.join(src.file_name().expect("file name"));
        std::fs::copy(&src, &dst).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
    }
}

/// Rewrites a llama GGUF under another architecture name: `general.architecture` and every
/// `llama.*` key move to `arch`, tensors are copied unchanged.
pub fn rename_architecture(src: &Path, dst: &Path, arch: &str) {
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
