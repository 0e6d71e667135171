//! The shared bindless wgpu backend.
//!
//! - One device per process ([`Gpu::shared`]); every model's [`GpuBackend`] holds an `Arc` of it.
//! - A model's weights live quantized in a few large arenas (storage buffers no bigger than a
//!   binding); a tensor is an (arena, offset, type, shape) handle and kernels receive offsets
//!   through one params ring per step, so bind groups are made once per model. Where the
//!   adapter has storage binding arrays, all of a model's arenas are bound once and each
//!   dispatch selects its arenas by index; elsewhere a dispatch binds the one arena it reads.
//! - One WGSL file per op under `src/shaders/`, each with a CPU twin in the engine.
//! - A step is one command-buffer submission; decode reads back one token id.

mod arena;
mod backend;
pub mod bench;
mod device;
mod fuse;
mod kv_cache;
mod kv_ops;
pub mod layout;
pub mod parity;
mod pick;
pub mod pipelines;
pub mod profile;
mod recorder;

pub use backend::{BackendOptions, GpuBackend};
pub use fuse::MV_Q8_FROM;
pub use pick::PendingToken;
pub use device::{choose_weight_binding, Gpu, GpuError, GpuOptions, WeightBinding, BINDING_ARRAY_FEATURES};
