//! deploy/Dockerfile: hadolint passes, and what it builds and copies exists in the workspace.
//! (No Docker engine runs in CI, so the image itself is not built here.)

mod tools;

use std::time::Duration;

use tools::{repo_path, run};

#[test]
fn dockerfile_passes_hadolint() {
    run("hadolint", &["deploy/Dockerfile"], None, Duration::from_secs(60)).assert_success("hadolint deploy/Dockerfile");
}

#[test]
fn dockerfile_builds_the_hangar_binary_of_an_existing_package() {
    let dockerfile = std::fs::read_to_string(repo_path("deploy/Dockerfile")).expect("Dockerfile");
    let services = std::fs::read_to_string(repo_path("services/Cargo.toml")).expect("services/Cargo.toml");
    assert!(dockerfile.contains("cargo build --release --locked -p hangar-services --bin hangar"), "build line changed");
    assert!(services.contains("name = \"hangar-services\""), "services package was renamed; fix deploy/Dockerfile");
    assert!(services.contains("[[bin]]\nname = \"hangar\""), "the hangar binary moved; fix deploy/Dockerfile");
    // The baked config file must be in the build context.
    assert!(dockerfile.contains("COPY deploy/hangar.toml /etc/hangar/hangar.toml"));
    assert!(repo_path("deploy/hangar.toml").is_file());
    // The pinned builder toolchain is part of the plugin ABI fingerprint; it must be at least the
    // workspace's rust-version.
    let pinned = dockerfile.lines().find_map(|l| l.strip_prefix("ARG RUST_VERSION=")).expect("ARG RUST_VERSION");
    let workspace = std::fs::read_to_string(repo_path("Cargo.toml")).expect("Cargo.toml");
    let msrv = workspace.lines().find_map(|l| l.strip_prefix("rust-version = ")).expect("rust-version").trim_matches('"');
    let parse = |v: &str| v.split('.').map(|p| p.parse::<u32>().expect("numeric version")).collect::<Vec<_>>();
    assert!(parse(pinned) >= parse(msrv), "builder rustc {pinned} is older than rust-version {msrv}");
}
