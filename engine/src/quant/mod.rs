//! Block formats: dequantization (bit-identical to gguf-py), quantization and dot products.

mod types;

pub use types::{GgmlType, QK_K};
