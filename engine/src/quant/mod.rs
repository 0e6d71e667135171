//! Block formats: dequantization (bit-identical to gguf-py), quantization and dot products.
//!
//! - [`dequantize`]: packed bytes of F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and
//!   Q2_K..Q6_K to f32, bit-identical to gguf-py 0.19's `gguf.quants.dequantize`.
//! - [`quantize`]: f32 to F32, F16, BF16, the 32-element types (byte-identical to gguf-py) and
//!   Q4_K, Q5_K, Q6_K (ggml's reference quantizers).
//! - [`vec_dot`], [`matvec`], [`matmul`]: products of packed weight rows with f32
//!   activations for the CPU backend, on AVX2+FMA+F16C when the CPU has it (detected once,
//!   see [`Isa`]) and portable scalar code otherwise. [`vec_dot`] and [`matmul`] agree with
//!   dequantize-then-f64-dot to 1e-6 of `sum |w x|`. For Q4_0, Q4_1 and Q8_0 on AVX2,
//!   [`matvec`] (decode) rounds activations to 16 bits per 32 elements first (see
//!   `dot_i16`), adding at most 2^-16 of each block's largest activation per element.
//!
//! - [`Q8Input`]: the GPU decode matvec's 8-bit input for Q4_0 rows, as its CPU twin.
//!
//! Oracle goldens: `scripts/gen_quant_goldens.py` -> `tests/golden/quant/`, checked by
//! `engine/tests/quant_parity.rs`.

mod dequant;
mod dot;
#[cfg(target_arch = "x86_64")]
mod dot_avx2;
#[cfg(target_arch = "x86_64")]
mod dot_i16;
mod error;
mod floats;
mod kquantize;
mod kquants;
mod legacy;
mod matvec;
mod q8_input;
mod quantize;
mod types;

pub use dequant::{dequantize, dequantize_to_vec, element_count, supports_dequantize};
pub use dot::{vec_dot, vec_dot_with, Isa};
pub use error::QuantError;
pub use matvec::{matmul, matvec, matvec_rows};
pub use q8_input::Q8Input;
pub use quantize::{quantize, supports_quantize};
pub use types::{GgmlType, QK_K};

#[cfg(test)]
mod tests;
