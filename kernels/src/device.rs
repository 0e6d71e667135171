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
    /// Bind weight arenas as binding arrays when the adapter has them. Off by default: on the
    /// H100 they made decode 3-4% slower than one arena per dispatch (bench/RESULTS.md,
    /// session 14). HANGAR_BINDING_ARRAYS=1 switches them on, =0 off, whatever this says.
    pub allow_binding_arrays: bool,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions { adapter: None, allow_f16: true, allow_subgroups: true, allow_binding_arrays: false }
    }
}

/// The features binding arrays of storage buffers need. Non-uniform indexing is not among
/// them: a dispatch's arena index comes from a uniform, so it is dynamically uniform.
pub const BINDING_ARRAY_FEATURES: wgpu::Features =
    wgpu::Features::BUFFER_BINDING_ARRAY.union(wgpu::Features::STORAGE_RESOURCE_BINDING_ARRAY);

/// Arena slots of each binding array at most: 64 arenas of up to 2 GiB hold more than any
/// adapter's memory, and unused slots cost descriptors in every model's bind group.
pub const MAX_ARENA_SLOTS: u32 = 64;

/// Views of the arenas each kernel declares as binding arrays (u32 words, vec4 words, f32).
pub const ARENA_VIEWS: u32 = 3;

/// How kernels reach a model's weight arenas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WeightBinding {
    /// All of a model's arenas are bound once, as binding arrays of `slots` arenas; each
    /// dispatch names its arenas by index in its params slot.
    BindingArrays { slots: u32 },
    /// One weight arena and one vector arena are bound per dispatch; `why` says why binding
    /// arrays are not used.
    PerDispatch { why: String },
}

impl std::fmt::Display for WeightBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WeightBinding::BindingArrays { slots } => write!(f, "binding arrays of {slots} arenas"),
            WeightBinding::PerDispatch { why } => write!(f, "one arena per dispatch ({why})"),
        }
    }
}

/// Which weight-binding path a device with features `have` and limits `limits` takes.
pub fn choose_weight_binding(have: wgpu::Features, limits: &wgpu::Limits, allow: bool) -> WeightBinding {
    let per_dispatch = |why: String| WeightBinding::PerDispatch { why };
    if !allow {
        return per_dispatch("binding arrays switched off".into());
    }
    if !have.contains(BINDING_ARRAY_FEATURES) {
        return per_dispatch(format!("the adapter lacks {:?}", BINDING_ARRAY_FEATURES.difference(have)));
    }
    let slots = (limits.max_binding_array_elements_per_shader_stage / ARENA_VIEWS).min(MAX_ARENA_SLOTS);
    if slots == 0 {
        let n = limits.max_binding_array_elements_per_shader_stage;
        return per_dispatch(format!("max_binding_array_elements_per_shader_stage is {n}, under the {ARENA_VIEWS} arena views"));
    }
    WeightBinding::BindingArrays { slots }
}

/// The start-up line saying which weight-binding path the device took.
pub(crate) fn log_weight_binding(adapter: &str, wb: &WeightBinding) {
    tracing::info!(adapter, weight_binding = %wb, "weight arenas: {wb}");
}

pub struct Gpu {
    pub adapter_info: wgpu::AdapterInfo,
    /// What the adapter offers (the device holds only what was requested of it).
    pub adapter_features: wgpu::Features,
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
    /// How kernels reach weight arenas: binding arrays where granted, else one per dispatch.
    pub weight_binding: WeightBinding,
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
        // Every limit is requested at the adapter's own value, which includes
        // max_binding_array_elements_per_shader_stage (0 unless requested).
        let limits = adapter.limits();
        let allow = match std::env::var("HANGAR_BINDING_ARRAYS").as_deref() {
            Ok("1") => true,
            Ok("0") => false,
            _ => opts.allow_binding_arrays,
        };
        let weight_binding = choose_weight_binding(have, &limits, allow);
        if matches!(weight_binding, WeightBinding::BindingArrays { .. }) {
            features |= BINDING_ARRAY_FEATURES;
        }
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
        let slots = match weight_binding {
            WeightBinding::BindingArrays { slots } => Some(slots),
            WeightBinding::PerDispatch { .. } => None,
        };
        let pipelines = crate::pipelines::Pipelines::new(&device, sg, slots);
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
        log_weight_binding(&info.name, &weight_binding);
        Ok(Gpu {
            adapter_info: info,
            adapter_features: have,
            device,
            queue,
            limits,
            f16,
            subgroups,
            timestamps,
            max_binding,
            weight_binding,
            submit_lock: Mutex::new(()),
            pipelines,
        })
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn limits(elements: u32) -> wgpu::Limits {
        wgpu::Limits { max_binding_array_elements_per_shader_stage: elements, ..wgpu::Limits::default() }
    }

    /// What `f` logs, as the fmt subscriber writes it.
    fn logged(f: impl FnOnce()) -> String {
        #[derive(Clone)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink(Arc::new(Mutex::new(Vec::new())));
        let out = sink.clone();
        let sub = tracing_subscriber::fmt().with_ansi(false).with_writer(move || sink.clone()).finish();
        tracing::subscriber::with_default(sub, f);
        let bytes = out.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn an_adapter_without_binding_arrays_binds_one_arena_per_dispatch_and_says_so() {
        for have in [wgpu::Features::SUBGROUP, wgpu::Features::BUFFER_BINDING_ARRAY] {
            let wb = choose_weight_binding(have, &limits(1 << 20), true);
            let WeightBinding::PerDispatch { why } = &wb else { panic!("{have:?}: {wb}") };
            assert!(why.contains("STORAGE_RESOURCE_BINDING_ARRAY"), "{why}");
            let log = logged(|| log_weight_binding("llvmpipe", &wb));
            assert!(log.contains("INFO") && log.contains("one arena per dispatch") && log.contains("lacks"), "{log}");
        }
    }

    #[test]
    fn binding_arrays_are_chosen_where_features_and_limits_allow() {
        let wb = choose_weight_binding(BINDING_ARRAY_FEATURES | wgpu::Features::SUBGROUP, &limits(1 << 20), true);
        assert_eq!(wb, WeightBinding::BindingArrays { slots: MAX_ARENA_SLOTS });
        assert!(logged(|| log_weight_binding("H100", &wb)).contains("binding arrays of 64 arenas"));
        // Slots follow the limit, each arena counting once per view.
        assert_eq!(choose_weight_binding(BINDING_ARRAY_FEATURES, &limits(30), true), WeightBinding::BindingArrays { slots: 10 });
    }

    #[test]
    fn binding_arrays_fall_back_when_the_limit_is_too_low_or_switched_off() {
        let low = choose_weight_binding(BINDING_ARRAY_FEATURES, &limits(2), true);
        assert!(matches!(&low, WeightBinding::PerDispatch { why } if why.contains("max_binding_array_elements_per_shader_stage")), "{low}");
        let off = choose_weight_binding(BINDING_ARRAY_FEATURES, &limits(1 << 20), false);
        assert!(matches!(&off, WeightBinding::PerDispatch { why } if why.contains("switched off")), "{off}");
    }
}
