//! Errors of the block-format functions.

use super::GgmlType;

/// Why a (de)quantization or a product could not run. Lengths are in bytes for packed data and
/// in elements for f32 data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    #[error("{ty} data of {bytes} bytes is not a whole number of {type_size}-byte blocks")]
    PartialBlock {
        ty: GgmlType,
        bytes: usize,
        type_size: usize,
    },

    #[error("{ty} input of {elements} values is not a whole number of {block_size}-value blocks")]
    PartialInputBlock {
        ty: GgmlType,
        elements: usize,
        block_size: usize,
    },

    #[error("{ty}: {what} has {actual} elements, expected {expected}")]
    LengthMismatch {
        ty: GgmlType,
        what: &'static str,
        expected: usize,
        actual: usize,
    },

    #[error("dequantizing {0} is not supported")]
    UnsupportedDequantize(GgmlType),

    #[error("quantizing to {0} is not supported")]
    UnsupportedQuantize(GgmlType),

    #[error("{0} rows have no product with 8-bit inputs")]
    Unsupported8BitInput(GgmlType),

    #[error("{what} of {a} x {b} overflows usize")]
    Overflow {
        what: &'static str,
        a: usize,
        b: usize,
    },
}
