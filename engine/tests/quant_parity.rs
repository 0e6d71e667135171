//! The block formats against their oracles, through the committed goldens of
//! `scripts/gen_quant_goldens.py`: gguf-py 0.19 for dequantization and the 32-element
//! quantizers, llama.cpp's `ggml_quantize_chunk` for the K-quant quantizers.

use std::path::{Path, PathBuf};

use hangar_engine::gguf::GgufFile;
use hangar_engine::quant::{self, GgmlType};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn golden(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/golden/quant")
        .join(name);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("golden {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("golden {}: {e}", path.display()))
}

fn hex(s: &Value) -> Vec<u8> {
    let s = s.as_str().expect("hex string");
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex digit"))
        .collect()
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn ty(name: &str) -> GgmlType {
    GgmlType::parse(name).unwrap_or_else(|| panic!("unknown type {name}"))
}

/// Index and bit pattern of the first difference, if any.
fn first_bit_difference(a: &[f32], b: &[f32]) -> Option<(usize, u32, u32)> {
    a.iter()
        .zip(b)
        .enumerate()
        .find(|(_, (x, y))| x.to_bits() != y.to_bits())
        .map(|(i, (x, y))| (i, x.to_bits(), y.to_bits()))
}

#[test]
fn dequantize_matches_gguf_py_on_random_blocks() {
    let g = golden("random_blocks.json");
    let types = g["types"].as_object().expect("types");
    assert_eq!(
        types.len(),
        13,
        "every dequantizable type has random blocks"
    );
    for (name, case) in types {
        let t = ty(name);
        let bytes = hex(&case["bytes_hex"]);
        let expected = f32s(&hex(&case["f32_hex"]));
        let got = quant::dequantize_to_vec(t, &bytes).unwrap();
        assert_eq!(got.len(), expected.len(), "{name}");
        if let Some((i, a, b)) = first_bit_difference(&got, &expected) {
            panic!(
                "{name}: element {i} is {:e} ({a:#010x}), gguf-py gives {:e} ({b:#010x})",
                f32::from_bits(a),
                f32::from_bits(b)
            );
        }
    }
}

fn check_quantize(types: &[&str]) {
    let g = golden("quantize.json");
    let inputs = g["inputs_f32_hex"].as_object().expect("inputs");
    for &name in types {
        let t = ty(name);
        let outputs = g["outputs_hex"][name]
            .as_object()
            .unwrap_or_else(|| panic!("no golden for {name}"));
        assert_eq!(outputs.len(), inputs.len(), "{name}");
        for (case, input) in inputs {
            let x = f32s(&hex(input));
            let got = quant::quantize(t, &x).unwrap();
            let expected = hex(&outputs[case]);
            assert_eq!(got.len(), expected.len(), "{name} {case}");
            if let Some(i) = got.iter().zip(&expected).position(|(a, b)| a != b) {
                let block = i / t.type_size();
                panic!(
                    "{name} {case}: byte {i} (block {block}) is {:#04x}, oracle gives {:#04x}",
                    got[i], expected[i]
                );
            }
        }
    }
}

#[test]
fn quantize_matches_gguf_py_on_float_and_legacy_types() {
    check_quantize(&["F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"]);
}

#[test]
fn quantize_matches_llama_cpp_on_k_quant_edge_cases() {
    check_quantize(&["Q4_K", "Q5_K", "Q6_K"]);
}

#[test]
fn quantize_f32_is_the_input_bytes() {
    let x = [1.5f32, -0.0, f32::MIN_POSITIVE, 3.0e38];
    let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(quant::quantize(GgmlType::F32, &x).unwrap(), bytes);
}

// ------------------------------------------------------------------------------ real models

fn model_dir() -> PathBuf {
    match std::env::var_os("HANGAR_MODEL_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/hangar/models")
        }
    }
}

fn open_model(g: &Value) -> GgufFile {
    let file = g["file"].as_str().expect("file");
    let path = model_dir().join(file);
    assert!(
        path.exists(),
        "model {} is missing: set HANGAR_MODEL_DIR or fetch it with scripts/fetch-models.sh",
        path.display()
    );
    let size = std::fs::metadata(&path).unwrap().len();
    assert_eq!(
        size,
        g["file_bytes"].as_u64().unwrap(),
        "{} is not the file the goldens were made from",
        path.display()
    );
    GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Dequantizes `data` a slice of rows at a time, feeding the f32 little-endian bytes to a
/// sha256 and picking out the requested sample indices.
fn hash_dequantized(
    t: GgmlType,
    data: &[u8],
    samples: &[(usize, u32)],
) -> (String, Vec<(usize, u32)>) {
    const CHUNK_BLOCKS: usize = 4096;
    let mut hasher = Sha256::new();
    let mut got = Vec::new();
    let mut buf = vec![0.0f32; CHUNK_BLOCKS * t.block_size()];
    let mut bytes = Vec::with_capacity(buf.len() * 4);
    let mut base = 0;
    for chunk in data.chunks(CHUNK_BLOCKS * t.type_size()) {
        let n = chunk.len() / t.type_size() * t.block_size();
        quant::dequantize(t, chunk, &mut buf[..n]).unwrap();
        bytes.clear();
        bytes.extend(buf[..n].iter().flat_map(|v| v.to_le_bytes()));
        hasher.update(&bytes);
        for &(i, _) in samples.iter().filter(|(i, _)| (base..base + n).contains(i)) {
            got.push((i, buf[i - base].to_bits()));
        }
        base += n;
    }
    (format!("{:x}", hasher.finalize()), got)
}

fn check_every_tensor(model: &str) {
    let g = golden(&format!("model_{model}.json"));
    let f = open_model(&g);
    let tensors = g["tensors"].as_array().expect("tensors");
    assert_eq!(tensors.len(), f.tensors().len(), "tensor count");
    let mut failures = Vec::new();
    for t in tensors {
        let name = t["name"].as_str().unwrap();
        let view = f
            .tensor(name)
            .unwrap_or_else(|| panic!("{model}: no tensor {name}"));
        assert_eq!(view.info.ty, ty(t["type"].as_str().unwrap()), "{name}");
        assert_eq!(
            view.info.n_elements(),
            t["n_elements"].as_u64().unwrap(),
            "{name}"
        );
        let samples: Vec<(usize, u32)> = t["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s[0].as_u64().unwrap() as usize,
                    s[1].as_u64().unwrap() as u32,
                )
            })
            .collect();
        let (sha, got) = hash_dequantized(view.info.ty, view.data, &samples);
        if got != samples {
            failures.push(format!(
                "{name} ({}): samples {got:?}, gguf-py {samples:?}",
                view.info.ty
            ));
        } else if sha != t["sha256"].as_str().unwrap() {
            failures.push(format!("{name} ({}): sha256 differs", view.info.ty));
        }
    }
    assert!(
        failures.is_empty(),
        "{model}: {} of {} tensors differ from gguf-py:\n{}",
        failures.len(),
        tensors.len(),
        failures.join("\n")
    );
}

#[test]
fn dequantize_matches_gguf_py_on_every_tensor_of_smollm2() {
    check_every_tensor("smollm2");
}

#[test]
fn dequantize_matches_gguf_py_on_every_tensor_of_gemma3() {
    check_every_tensor("gemma3");
}

#[test]
fn dequantize_matches_gguf_py_on_every_tensor_of_qwen05() {
    check_every_tensor("qwen05");
}

/// Re-quantizes prefixes of real dequantized tensors to Q4_K/Q5_K/Q6_K and compares with
/// llama.cpp's bytes: realistic data for the scale searches, where the edge cases of
/// `quantize.json` are synthetic.
fn check_requantize(model: &str) {
    let g = golden(&format!("model_{model}.json"));
    let f = open_model(&g);
    let cases = g["requantize"].as_array().expect("requantize");
    assert!(!cases.is_empty());
    let mut failures = Vec::new();
    for c in cases {
        let name = c["tensor"].as_str().unwrap();
        let target = ty(c["type"].as_str().unwrap());
        let n = c["n_elements"].as_u64().unwrap() as usize;
        let view = f
            .tensor(name)
            .unwrap_or_else(|| panic!("{model}: no tensor {name}"));
        let src_bytes = n / view.info.ty.block_size() * view.info.ty.type_size();
        let x = quant::dequantize_to_vec(view.info.ty, &view.data[..src_bytes]).unwrap();
        let q = quant::quantize(target, &x).unwrap();
        let sha = format!("{:x}", Sha256::digest(&q));
        if sha != c["sha256"].as_str().unwrap() {
            failures.push(format!("{name} -> {target}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{model}: quantization differs from llama.cpp for {failures:?}"
    );
}

#[test]
fn k_quantize_matches_llama_cpp_on_tensors_of_smollm2() {
    check_requantize("smollm2");
}

#[test]
fn k_quantize_matches_llama_cpp_on_tensors_of_gemma3() {
    check_requantize("gemma3");
}

#[test]
fn k_quantize_matches_llama_cpp_on_tensors_of_qwen05() {
    check_requantize("qwen05");
}
