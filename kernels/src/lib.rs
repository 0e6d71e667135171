//! The shared bindless wgpu backend. Not built yet: the GPU issue fills this crate, and nothing here claims to run.
