//! Model loading shared by the subcommands: backend choice and a progress bar.

use std::path::Path;

use anyhow::Context;
use hangar_engine::cpu::CpuBackend;
use hangar_engine::Model;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum BackendKind {
    Cpu,
    Gpu,
}

/// The backend to use: the one asked for, else the GPU when an adapter opens, else the CPU.
/// The adapter chosen is reported on stderr.
pub fn resolve_backend(asked: Option<BackendKind>) -> anyhow::Result<BackendKind> {
    match asked {
        Some(BackendKind::Cpu) => Ok(BackendKind::Cpu),
        Some(BackendKind::Gpu) => {
            let gpu = hangar_kernels::Gpu::shared().context("opening the GPU (set HANGAR_ADAPTER to choose one)")?;
            eprintln!("hangar: GPU adapter {}", gpu.describe());
            Ok(BackendKind::Gpu)
        }
        None => match hangar_kernels::Gpu::shared() {
            Ok(gpu) => {
                eprintln!("hangar: GPU adapter {}", gpu.describe());
                Ok(BackendKind::Gpu)
            }
            Err(e) => {
                eprintln!("hangar: no GPU ({e}); using the CPU backend");
                Ok(BackendKind::Cpu)
            }
        },
    }
}

pub fn load_model(path: &Path, asked: Option<BackendKind>, quiet: bool) -> anyhow::Result<Model> {
    let backend: Box<dyn hangar_engine::backend::Backend> = match resolve_backend(asked)? {
        BackendKind::Cpu => Box::new(CpuBackend::new()),
        BackendKind::Gpu => Box::new(hangar_kernels::GpuBackend::new(hangar_kernels::Gpu::shared()?)),
    };
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(0) };
    bar.set_style(ProgressStyle::with_template("loading {msg} [{bar:30}] {pos}/{len} tensors").unwrap_or_else(|_| ProgressStyle::default_bar()));
    bar.set_message(path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    let registry = hangar_families::registry();
    let model = Model::load(path, &registry, backend, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })
    .with_context(|| format!("loading {}", path.display()))?;
    bar.finish_and_clear();
    Ok(model)
}
