//! The one wgpu device of the process. Every model's backend holds an `Arc<Gpu>`, so weights of
//! several models share one queue and one set of compiled pipelines' driver caches.

use std::sync::{Arc, Mutex, OnceLock};

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no Vulkan adapter found (is a Vulkan driver such as Mesa lavapipe installed?)")]
    NoAdapter,
    #[error("HANGAR_ADAPTER={wanted:?} matches none of the adapters: {available}")]
    NoMatchingAdapter { wanted: String, available: String },
    #[error("requesting the device failed: {0}")]
    RequestDevice(String),
}

/// How the process-wide device is chosen and which optional features it may use.
#[derive(Clone, Debug)]
pub struct GpuOptions {
    /// Substring of the adapter name, or "cpu" / "discrete" / "integrated". `None` reads the
    /// `HANGAR_ADAPTER` environment variable.
    pub adapter: Option<String>,
    /// Use SHADER_F16 when the adapter has it.
    pub allow_f16: bool,
    /// Use subgroup operations when the adapter has them.
    pub allow_subgroups: bool,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions { adapter: None, allow_f16: true, allow_subgroups: true }
    }
}

pub struct Gpu {
    pub adapter_info: wgpu::AdapterInfo,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub limits: wgpu::Limits,
    /// SHADER_F16 was requested and granted.
    pub f16: bool,
    /// SUBGROUP was requested and granted.
    pub subgroups: bool,
    /// Timestamp queries inside passes were requested (HANGAR_PROFILE set) and granted.
    pub timestamps: bool,
    /// Largest storage binding, a multiple of 4.
    pub max_binding: u64,
    /// Serializes submit-and-wait so two models on two threads don't interleave polls.
    pub(crate) submit_lock: Mutex<()>,
    pub(crate) pipelines: crate::pipelines::Pipelines,
}

fn type_rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

fn matches(info: &wgpu::AdapterInfo, wanted: &str) -> bool {
    match wanted.to_ascii_lowercase().as_str() {
        "cpu" => info.device_type == wgpu::DeviceType::Cpu,
        "discrete" => info.device_type == wgpu::DeviceType::DiscreteGpu,
        "integrated" => info.device_type == wgpu::DeviceType::IntegratedGpu,
        w => info.name.to_ascii_lowercase().contains(w),
    }
}

impl Gpu {
    /// The process-wide device with default options, created on first use. An error is not
    /// cached, so a later call retries.
    pub fn shared() -> Result<Arc<Gpu>, GpuError> {
        static SHARED: OnceLock<Arc<Gpu>> = OnceLock::new();
        static INIT: Mutex<()> = Mutex::new(());
        if let Some(g) = SHARED.get() {
            return Ok(g.clone());
        }
        let _guard = INIT.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(g) = SHARED.get() {
            return Ok(g.clone());
        }
        let g = Arc::new(Gpu::new(&GpuOptions::default())?);
        Ok(SHARED.get_or_init(|| g).clone())
    }

    /// A device of its own (tests use this to exercise fallbacks); servers use [`Gpu::shared`].
    pub fn new(opts: &GpuOptions) -> Result<Gpu, GpuError> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = wgpu::Backends::VULKAN;
        let instance = wgpu::Instance::new(desc);
        let mut adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::VULKAN));
        if adapters.is_empty() {
            return Err(GpuError::NoAdapter);
        }
        adapters.sort_by_key(|a| type_rank(a.get_info().device_type));
        let wanted = opts.adapter.clone().or_else(|| std::env::var("HANGAR_ADAPTER").ok()).filter(|s| !s.is_empty());
        let adapter = match &wanted {
            None => adapters.swap_remove(0),
            Some(w) => match adapters.iter().position(|a| matches(&a.get_info(), w)) {
                Some(i) => adapters.swap_remove(i),
                None => {
                    let available = adapters.iter().map(|a| a.get_info().name).collect::<Vec<_>>().join(", ");
                    return Err(GpuError::NoMatchingAdapter { wanted: w.clone(), available });
                }
            },
        };
        let info = adapter.get_info();
        let have = adapter.features();
        let mut features = wgpu::Features::empty();
        let f16 = opts.allow_f16 && have.contains(wgpu::Features::SHADER_F16);
        let subgroups = opts.allow_subgroups && have.contains(wgpu::Features::SUBGROUP);
        if f16 {
            features |= wgpu::Features::SHADER_F16;
        }
        if subgroups {
            features |= wgpu::Features::SUBGROUP;
        }
        let ts = wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES;
        let timestamps = std::env::var_os("HANGAR_PROFILE").is_some() && have.contains(ts);
        if timestamps {
            features |= ts;
        }
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("hangar"),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| GpuError::RequestDevice(e.to_string()))?;
        let max_binding = (limits.max_storage_buffer_binding_size as u64).min(limits.max_buffer_size) & !3;
        // Subgroup kernels lay rows out as 64 / size per workgroup, so the size must be fixed.
        let (smin, smax) = (info.subgroup_min_size, info.subgroup_max_size);
        let sg = (subgroups && smin == smax && smin > 0 && smin <= 64 && 64 % smin == 0).then_some(smin);
        let pipelines = crate::pipelines::Pipelines::new(&device, sg);
        tracing::info!(
            adapter = %info.name,
            kind = ?info.device_type,
            driver = %info.driver,
            f16,
            subgroups,
            subgroup_size = sg,
            max_binding,
            "wgpu device"
        );
        Ok(Gpu { adapter_info: info, device, queue, limits, f16, subgroups, timestamps, max_binding, submit_lock: Mutex::new(()), pipelines })
    }

    /// Waits for submission `index`, maps the first `len` bytes of the MAP_READ buffer `buf`
    /// and hands them to `f`.
    pub(crate) fn read_mapped<T>(
        &self,
        buf: &wgpu::Buffer,
        len: u64,
        index: wgpu::SubmissionIndex,
        f: impl FnOnce(&[u8]) -> T,
    ) -> Result<T, hangar_engine::backend::BackendError> {
        let dev = |e: String| hangar_engine::backend::BackendError::Device(e);
        let slice = buf.slice(0..len);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device.poll(wgpu::PollType::Wait { submission_index: Some(index), timeout: None }).map_err(|e| dev(e.to_string()))?;
        rx.recv().map_err(|e| dev(e.to_string()))?.map_err(|e| dev(e.to_string()))?;
        let out = {
            let view = slice.get_mapped_range().map_err(|e| dev(e.to_string()))?;
            f(&view)
        };
        buf.unmap();
        Ok(out)
    }

    /// "llvmpipe (LLVM 15…) [Cpu], subgroups of 8".
    pub fn describe(&self) -> String {
        let sg = match self.pipelines.subgroup_size {
            Some(s) => format!("subgroups of {s}"),
            None => "no subgroups".to_string(),
        };
        format!("{} [{:?}], {sg}", self.adapter_info.name, self.adapter_info.device_type)
    }
}
