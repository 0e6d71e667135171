//! Computes the build fingerprint a plugin exports and the host checks: the plugin ABI
//! version, the exact compiler, the target, and a hash of the engine sources whose types
//! cross the boundary. Rust has no stable ABI, so only a plugin built by the same compiler
//! against the same engine source can share trait objects with the host.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, fs};

/// Bumped whenever the registrar or the entry points change shape.
const ABI_VERSION: u32 = 2;

fn fnv1a(hash: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *hash ^= u64::from(*b);
        *hash = hash.wrapping_mul(0x100_0000_01b3);
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let engine_src = manifest.join("../../engine/src");
    println!("cargo:rerun-if-changed={}", engine_src.display());
    println!("cargo:rerun-if-changed=build.rs");

    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let verbose = Command::new(&rustc)
        .arg("-vV")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let field = |name: &str| {
        verbose
            .lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| "unknown".into())
    };

    let mut files = Vec::new();
    rust_files(&engine_src, &mut files);
    files.sort();
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for f in &files {
        let rel = f.strip_prefix(&engine_src).unwrap_or(f);
        fnv1a(&mut hash, rel.to_string_lossy().as_bytes());
        fnv1a(&mut hash, &fs::read(f).unwrap_or_default());
    }

    let fingerprint = format!(
        "hangar-plugin-abi={ABI_VERSION};rustc={} ({});target={};engine={}+{hash:016x}",
        field("release:"),
        field("commit-hash:"),
        env::var("TARGET").unwrap_or_default(),
        env::var("CARGO_PKG_VERSION").unwrap_or_default(),
    );
    println!("cargo:rustc-env=HANGAR_PLUGIN_FINGERPRINT={fingerprint}");
    println!("cargo:rustc-env=HANGAR_PLUGIN_ABI_VERSION={ABI_VERSION}");
}
