//! The numeric and text core of Hangar. It knows nothing of gRPC or wgpu: services drive it,
//! families describe models to it, and backends (the CPU reference here, wgpu in `kernels/`)
//! execute its graph.

pub mod backend;
pub mod batch;
pub mod budget;
pub mod chat;
pub mod constraint;
pub mod cpu;
pub mod error;
pub mod family;
pub mod generate;
pub mod gguf;
pub mod graph;
pub mod kv;
pub mod logprobs;
pub mod model;
pub mod perplexity;
pub mod quant;
pub mod sampling;
pub mod spec;
pub mod threads;
pub mod tokenizer;
pub mod wiring;

pub use error::EngineError;
pub use generate::{GenerateOutput, GenerateParams, SampleOnDevice, Session, StopReason, Timings};
pub use model::Model;
