//! The registry and the fixtures agree: every architecture the registry claims has tiny
//! fixtures of every covered type with llama.cpp goldens, and every fixture's architecture
//! (read from the file itself) is registered.

use std::collections::{BTreeMap, BTreeSet};

use hangar_engine::gguf::GgufFile;
use hangar_tests::families::{fixture_dir, index};
use sha2::{Digest, Sha256};

const COVERED_TYPES: [&str; 4] = ["F32", "Q8_0", "Q4_0", "Q4_K_M"];

#[test]
fn every_registered_architecture_has_fixtures_and_every_fixture_is_registered() {
    let registry = hangar_families::registry();
    let mut on_disk: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in std::fs::read_dir(fixture_dir()).expect("fixture dir") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_none_or(|e| e != "gguf") {
            continue;
        }
        let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let arch = file.architecture().expect("general.architecture").to_string();
        assert!(registry.resolve(&arch).is_ok(), "{}: architecture {arch:?} is not registered", path.display());
        registry.build_spec(&file).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        on_disk.entry(arch).or_default().insert(path.file_name().unwrap().to_string_lossy().into_owned());
    }

    let idx = index();
    let mut golden_types: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for e in idx["fixtures"].as_array().expect("fixtures") {
        let file = e["file"].as_str().expect("file");
        let bytes = std::fs::read(fixture_dir().join(file)).unwrap_or_else(|err| panic!("golden names {file}: {err}"));
        assert_eq!(format!("{:x}", Sha256::digest(&bytes)), e["sha256"].as_str().expect("sha256"), "{file} is not the file the golden was made from");
        golden_types.entry(e["arch"].as_str().expect("arch").to_string()).or_default().insert(e["type"].as_str().expect("type").to_string());
    }
    let golden_files: BTreeSet<String> = idx["fixtures"].as_array().unwrap().iter().map(|e| e["file"].as_str().unwrap().to_string()).collect();
    let disk_files: BTreeSet<String> = on_disk.values().flatten().cloned().collect();
    assert_eq!(disk_files, golden_files, "fixtures on disk and in the golden index differ");

    for arch in registry.architectures() {
        let types = golden_types.get(arch).unwrap_or_else(|| panic!("registered architecture {arch:?} has no fixture"));
        for t in COVERED_TYPES {
            assert!(types.contains(t), "{arch}: no {t} fixture");
        }
    }
    let registered: BTreeSet<&str> = registry.architectures().into_iter().collect();
    for arch in on_disk.keys() {
        assert!(registered.contains(arch.as_str()));
    }
}
