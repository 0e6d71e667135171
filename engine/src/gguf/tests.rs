use proptest::prelude::*;

use super::*;

/// A small but complete file: every metadata type, nested arrays, and three tensors of
/// different types, written by our own writer.
fn sample_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.set("general.architecture", MetaValue::String("llama".into()));
    w.set("u8", MetaValue::U8(7));
    w.set("i8", MetaValue::I8(-7));
    w.set("u16", MetaValue::U16(700));
    w.set("i16", MetaValue::I16(-700));
    w.set("u32", MetaValue::U32(70000));
    w.set("i32", MetaValue::I32(-70000));
    w.set("u64", MetaValue::U64(1 << 40));
    w.set("i64", MetaValue::I64(-(1 << 40)));
    w.set("f32", MetaValue::F32(1.5));
    w.set("f64", MetaValue::F64(-2.25));
    w.set("bool", MetaValue::Bool(true));
    w.set(
        "strs",
        MetaValue::Array(MetaArray::String(vec![
            "a".into(),
            "ü".into(),
            String::new(),
        ])),
    );
    w.set(
        "nested",
        MetaValue::Array(MetaArray::Array(vec![
            MetaArray::I32(vec![1, 2]),
            MetaArray::F32(vec![0.5]),
        ])),
    );
    let tensors = [
        ("a", GgmlType::F32, vec![4u64, 2]),
        ("b", GgmlType::Q8_0, vec![64, 3]),
        ("c", GgmlType::F16, vec![3]),
    ];
    for (name, ty, dims) in &tensors {
        w.add_tensor(TensorDesc {
            name: name.to_string(),
            ty: *ty,
            dims: dims.clone(),
        })
        .unwrap();
    }
    let mut out = Vec::new();
    w.write::<_, GgufError>(&mut out, |i, d| {
        Ok((0..d.size()? as usize)
            .map(|b| (b * 31 + i) as u8)
            .collect())
    })
    .unwrap();
    out
}

#[test]
fn written_file_reads_back_with_every_value_type() {
    let f = GgufFile::from_bytes(sample_file()).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.architecture(), Some("llama"));
    assert_eq!(f.get("i8"), Some(&MetaValue::I8(-7)));
    assert_eq!(f.get("i16"), Some(&MetaValue::I16(-700)));
    assert_eq!(f.get_u32("u32"), Some(70000));
    assert_eq!(
        f.get_u32("u64"),
        None,
        "a u64 that does not fit in u32 is not silently truncated"
    );
    assert_eq!(f.get_u64("u64"), Some(1 << 40));
    assert_eq!(f.get("i64").and_then(MetaValue::as_i64), Some(-(1 << 40)));
    assert_eq!(f.get_f32("f32"), Some(1.5));
    assert_eq!(f.get("f64"), Some(&MetaValue::F64(-2.25)));
    assert_eq!(f.get_bool("bool"), Some(true));
    assert_eq!(
        f.get_array("strs")
            .and_then(MetaArray::as_strings)
            .map(|s| s.len()),
        Some(3)
    );
    assert_eq!(
        f.get_array("nested"),
        Some(&MetaArray::Array(vec![
            MetaArray::I32(vec![1, 2]),
            MetaArray::F32(vec![0.5])
        ]))
    );
    let b = f.tensor("b").unwrap();
    assert_eq!(b.info.ty, GgmlType::Q8_0);
    assert_eq!(b.data.len(), 3 * 2 * 34);
    assert_eq!(b.data[5], (5 * 31 + 1) as u8);
    assert_eq!(b.row(2).map(<[u8]>::len), Some(68));
    assert!(b.row(3).is_none());
    assert_eq!(f.tensor("c").unwrap().data.len(), 6);
    for t in f.tensors() {
        assert_eq!(t.offset % f.alignment(), 0);
    }
}

#[test]
fn custom_alignment_is_honoured() {
    let mut w = GgufWriter::new();
    w.set("general.alignment", MetaValue::U32(64));
    w.add_tensor(TensorDesc {
        name: "x".into(),
        ty: GgmlType::F32,
        dims: vec![3],
    })
    .unwrap();
    w.add_tensor(TensorDesc {
        name: "y".into(),
        ty: GgmlType::F32,
        dims: vec![5],
    })
    .unwrap();
    let mut out = Vec::new();
    w.write::<_, GgufError>(&mut out, |_, d| Ok(vec![1u8; d.size()? as usize]))
        .unwrap();
    let f = GgufFile::from_bytes(out).unwrap();
    assert_eq!(f.alignment(), 64);
    assert_eq!(f.tensor_info("y").unwrap().offset, 64);
}

fn header(version: u32, n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut v = GGUF_MAGIC.to_le_bytes().to_vec();
    v.extend(version.to_le_bytes());
    v.extend(n_tensors.to_le_bytes());
    v.extend(n_kv.to_le_bytes());
    v
}

#[test]
fn bad_magic_and_versions_are_typed_errors() {
    assert!(matches!(
        GgufFile::from_bytes(b"GGML\0\0\0\0".to_vec()),
        Err(GgufError::BadMagic(_))
    ));
    assert!(matches!(
        GgufFile::from_bytes(header(1, 0, 0)),
        Err(GgufError::UnsupportedVersion(1))
    ));
    assert!(matches!(
        GgufFile::from_bytes(header(4, 0, 0)),
        Err(GgufError::UnsupportedVersion(4))
    ));
    assert!(GgufFile::from_bytes(header(2, 0, 0)).is_ok());
}

#[test]
fn huge_counts_are_refused_before_allocating() {
    assert!(matches!(
        GgufFile::from_bytes(header(3, u64::MAX, 0)),
        Err(GgufError::TooMany { .. })
    ));
    // Under the cap but larger than the file could hold.
    assert!(matches!(
        GgufFile::from_bytes(header(3, 1000, 0)),
        Err(GgufError::Truncated { .. })
    ));
    let mut v = header(3, 0, 1);
    v.extend(3u64.to_le_bytes());
    v.extend(b"key");
    v.extend(9u32.to_le_bytes()); // array
    v.extend(8u32.to_le_bytes()); // of strings
    v.extend((MAX_ARRAY_LEN - 1).to_le_bytes());
    assert!(matches!(
        GgufFile::from_bytes(v),
        Err(GgufError::Truncated { .. })
    ));
    let mut v = header(3, 0, 1);
    v.extend(u64::MAX.to_le_bytes()); // key length
    v.extend([0u8; 64]);
    assert!(matches!(
        GgufFile::from_bytes(v),
        Err(GgufError::StringTooLong { .. })
    ));
}

#[test]
fn tensors_outside_the_data_section_are_refused() {
    let mut bytes = sample_file();
    let f = GgufFile::from_bytes(bytes.clone()).unwrap();
    let data_len = f.tensors().iter().map(|t| t.offset + t.size).max().unwrap();
    // Cut the last tensor short.
    bytes.truncate(bytes.len() - (bytes.len() - f.data_offset) + data_len as usize - 1);
    assert!(matches!(
        GgufFile::from_bytes(bytes),
        Err(GgufError::OutOfBounds { .. })
    ));
}

#[test]
fn duplicate_keys_are_refused() {
    let mut v = header(3, 0, 2);
    for _ in 0..2 {
        v.extend(1u64.to_le_bytes());
        v.extend(b"k");
        v.extend(0u32.to_le_bytes());
        v.push(1);
    }
    assert!(matches!(
        GgufFile::from_bytes(v),
        Err(GgufError::DuplicateKey(_))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn truncated_files_give_errors_not_panics(cut in 0usize..2000) {
        let bytes = sample_file();
        let f = GgufFile::from_bytes(bytes.clone()).unwrap();
        // Bytes past the last tensor are alignment padding, which a file may omit.
        let end = f.data_offset + f.tensors().iter().map(|t| (t.offset + t.size) as usize).max().unwrap();
        let cut = cut.min(end - 1);
        let r = GgufFile::from_bytes(bytes[..cut].to_vec());
        prop_assert!(r.is_err());
    }

    #[test]
    fn bit_flipped_files_never_panic(flips in proptest::collection::vec((0usize..4096, 0u8..8), 1..6)) {
        let mut bytes = sample_file();
        let len = bytes.len();
        for (pos, bit) in flips {
            bytes[pos % len] ^= 1 << bit;
        }
        if let Ok(f) = GgufFile::from_bytes(bytes) {
            for t in f.tensors() {
                prop_assert_eq!(f.view(t).data.len() as u64, t.size);
            }
        }
    }

    #[test]
    fn random_bytes_after_a_valid_header_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..512),
                                                     n_tensors in 0u64..4, n_kv in 0u64..4) {
        let mut bytes = header(3, n_tensors, n_kv);
        bytes.extend(tail);
        let _ = GgufFile::from_bytes(bytes);
    }
}
