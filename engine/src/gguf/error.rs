use crate::quant::GgmlType;

/// Why a GGUF file could not be read or written. Every malformed input maps to one of these;
/// the reader never panics on file contents.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("i/o error on {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("not a GGUF file (magic {0:#010x})")]
    BadMagic(u32),
    #[error("unsupported GGUF version {0} (supported: 2, 3)")]
    UnsupportedVersion(u32),
    #[error("file truncated: needed {needed} bytes at offset {offset}, file has {len}")]
    Truncated { offset: u64, needed: u64, len: u64 },
    #[error("{what} count {count} exceeds the limit {limit}")]
    TooMany {
        what: &'static str,
        count: u64,
        limit: u64,
    },
    #[error("string of {len} bytes at offset {offset} exceeds the limit {limit}")]
    StringTooLong { offset: u64, len: u64, limit: u64 },
    #[error("string at offset {0} is not valid UTF-8")]
    InvalidUtf8(u64),
    #[error("unknown metadata value type {0}")]
    BadValueType(u32),
    #[error("arrays nested deeper than {0}")]
    NestingTooDeep(usize),
    #[error("duplicate metadata key {0:?}")]
    DuplicateKey(String),
    #[error("duplicate tensor name {0:?}")]
    DuplicateTensor(String),
    #[error("general.alignment must be a non-zero power of two, got {0}")]
    BadAlignment(u64),
    #[error("tensor {name:?}: unknown ggml type id {id}")]
    UnknownTensorType { name: String, id: u32 },
    #[error("tensor {name:?}: {n_dims} dimensions (at most 4)")]
    TooManyDims { name: String, n_dims: u32 },
    #[error("tensor {name:?}: shape {dims:?} is invalid for {ty} ({why})")]
    BadShape {
        name: String,
        dims: Vec<u64>,
        ty: GgmlType,
        why: &'static str,
    },
    #[error("tensor {name:?}: offset {offset} is not aligned to {alignment}")]
    Misaligned {
        name: String,
        offset: u64,
        alignment: u64,
    },
    #[error("tensor {name:?}: data [{offset}, +{size}) lies outside the data section of {data_len} bytes")]
    OutOfBounds {
        name: String,
        offset: u64,
        size: u64,
        data_len: u64,
    },
    #[error("metadata key {key:?}: expected {expected}")]
    WrongType { key: String, expected: &'static str },
    #[error("writer: tensor {name:?} got {got} bytes of data, expected {expected}")]
    WrongDataSize {
        name: String,
        got: u64,
        expected: u64,
    },
}

impl From<std::io::Error> for GgufError {
    fn from(source: std::io::Error) -> Self {
        GgufError::Io {
            path: String::from("<stream>"),
            source,
        }
    }
}
