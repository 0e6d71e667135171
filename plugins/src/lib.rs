//! The host side of the plugin boundary: loads `cdylib` plugins from the configured plugin
//! directory at startup, checks each one's build fingerprint before calling anything else in
//! it, and adds what it registers (families, policy rule sources, logits processors).
//!
//! Plugins are never unloaded: the families they register hand out `&'static` data that
//! lives in the library's memory, so a loaded library is kept for the life of the process.
//! Loading runs the library's static initializers (the dynamic loader does that), which is
//! why plugins come only from the operator's directory, never from a request.

use std::ffi::{c_void, CStr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hangar_engine::family::{Family, Registry};
use hangar_plugin_api::{FingerprintFn, RegisterFn, Registrar};

mod hook;
pub use hangar_plugin_api::LogitsProcessor;
pub use hook::ProcessorHooks;

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot read plugin directory {dir}: {source}")]
    ReadDir { dir: PathBuf, source: std::io::Error },
    #[error("cannot load {path}: {source}")]
    Open { path: PathBuf, source: libloading::Error },
    #[error("{path} is not a Hangar plugin: no `{symbol}` symbol")]
    MissingSymbol { path: PathBuf, symbol: &'static str },
    #[error("{path} was built for another host: its fingerprint is {found:?}, this host's is {expected:?}")]
    FingerprintMismatch { path: PathBuf, expected: String, found: String },
    #[error("{path} panicked during registration: {message}")]
    RegistrationPanicked { path: PathBuf, message: String },
    #[error("{path} registers architecture {arch:?}, which is already claimed")]
    ArchitectureClash { path: PathBuf, arch: String },
    /// Requests and policies address processors and rule sources by name, so a second
    /// plugin may not take a name a first one holds.
    #[error("{path} registers {what} {name:?}, which an earlier plugin already registered")]
    NameClash { path: PathBuf, what: &'static str, name: String },
}

impl PluginError {
    /// A stable label for the kind of failure, for listings and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            PluginError::ReadDir { .. } => "read_dir",
            PluginError::Open { .. } => "open",
            PluginError::MissingSymbol { .. } => "missing_symbol",
            PluginError::FingerprintMismatch { .. } => "fingerprint_mismatch",
            PluginError::RegistrationPanicked { .. } => "registration_panicked",
            PluginError::ArchitectureClash { .. } => "architecture_clash",
            PluginError::NameClash { .. } => "name_clash",
        }
    }

    /// The plugin file (or, for [`PluginError::ReadDir`], the directory) the error is about.
    pub fn path(&self) -> &Path {
        match self {
            PluginError::ReadDir { dir, .. } => dir,
            PluginError::Open { path, .. }
            | PluginError::MissingSymbol { path, .. }
            | PluginError::FingerprintMismatch { path, .. }
            | PluginError::RegistrationPanicked { path, .. }
            | PluginError::ArchitectureClash { path, .. }
            | PluginError::NameClash { path, .. } => path,
        }
    }
}

/// One loaded plugin and what it added.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    pub name: String,
    /// The plugin crate's version, as its `export_plugin!` reported it.
    pub version: String,
    pub path: PathBuf,
    pub architectures: Vec<&'static str>,
    pub rule_sources: Vec<String>,
    pub logits_processors: Vec<String>,
}

/// Everything loaded from a plugin directory, and what was refused and why.
#[derive(Default)]
pub struct PluginSet {
    pub loaded: Vec<PluginInfo>,
    pub refused: Vec<PluginError>,
    /// Policy rule sets as (name, TOML text).
    pub rule_sources: Vec<(String, String)>,
    pub logits_processors: Vec<Arc<dyn LogitsProcessor>>,
}

impl PluginSet {
    /// The logits processor registered under `name`, if a loaded plugin has one.
    pub fn processor(&self, name: &str) -> Option<Arc<dyn LogitsProcessor>> {
        self.logits_processors.iter().find(|p| p.name() == name).cloned()
    }

    /// The loaded plugin that registered architecture `arch`, if one did.
    pub fn plugin_for_architecture(&self, arch: &str) -> Option<&PluginInfo> {
        self.loaded.iter().find(|p| p.architectures.contains(&arch))
    }
}

/// What one plugin's registration produced, held back until it has fully succeeded so a
/// plugin that fails halfway adds nothing.
#[derive(Default)]
struct Collected {
    name: Option<String>,
    version: String,
    families: Vec<Box<dyn Family>>,
    rule_sources: Vec<(String, String)>,
    processors: Vec<Box<dyn LogitsProcessor>>,
}

impl Registrar for Collected {
    fn plugin_name(&mut self, name: &str) {
        self.name = Some(name.to_string());
    }
    fn plugin_version(&mut self, version: &str) {
        self.version = version.to_string();
    }
    fn family(&mut self, family: Box<dyn Family>) {
        self.families.push(family);
    }
    fn rule_source(&mut self, name: &str, toml: &str) {
        self.rule_sources.push((name.to_string(), toml.to_string()));
    }
    fn logits_processor(&mut self, processor: Box<dyn LogitsProcessor>) {
        self.processors.push(processor);
    }
}

/// The plugin files of `dir`, in a stable order (by file name).
pub fn plugin_files(dir: &Path) -> Result<Vec<PathBuf>, PluginError> {
    let entries = std::fs::read_dir(dir).map_err(|source| PluginError::ReadDir { dir: dir.to_path_buf(), source })?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == std::env::consts::DLL_EXTENSION))
        .collect();
    files.sort();
    Ok(files)
}

/// Loads every plugin in `dir` into `registry`. A plugin that cannot be loaded is logged and
/// listed in `refused`; the others still load.
pub fn load_dir(dir: &Path, registry: &mut Registry) -> PluginSet {
    let mut set = PluginSet::default();
    let files = match plugin_files(dir) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!("{e}");
            set.refused.push(e);
            return set;
        }
    };
    for path in files {
        match load_file(&path, registry, &mut set) {
            Ok(info) => {
                tracing::info!(
                    plugin = %info.name,
                    version = %info.version,
                    path = %info.path.display(),
                    architectures = ?info.architectures,
                    rule_sources = ?info.rule_sources,
                    logits_processors = ?info.logits_processors,
                    "plugin loaded"
                );
                set.loaded.push(info);
            }
            Err(e) => {
                tracing::error!(path = %e.path().display(), "plugin refused: {e}");
                set.refused.push(e);
            }
        }
    }
    set
}

/// Loads one plugin file. Public for tests and tools; servers use [`load_dir`].
pub fn load_file(path: &Path, registry: &mut Registry, set: &mut PluginSet) -> Result<PluginInfo, PluginError> {
    // SAFETY: loading runs the library's initializers; plugin files come only from the
    // operator's plugin directory (see the module docs).
    let lib = unsafe { libloading::Library::new(path) }
        .map_err(|source| PluginError::Open { path: path.to_path_buf(), source })?;
    let found = {
        // SAFETY: the symbol is declared with this C signature by every Hangar plugin; a
        // library without it is refused before anything is called.
        let f = unsafe { lib.get::<FingerprintFn>(hangar_plugin_api::FINGERPRINT_SYMBOL) }
            .map_err(|_| PluginError::MissingSymbol { path: path.to_path_buf(), symbol: "hangar_plugin_fingerprint" })?;
        // SAFETY: a C function with no arguments returning a NUL-terminated static string.
        let p = unsafe { f() };
        if p.is_null() {
            String::new()
        } else {
            // SAFETY: non-null and NUL-terminated per the contract above.
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
    };
    let expected = hangar_plugin_api::fingerprint();
    if found != expected {
        return Err(PluginError::FingerprintMismatch { path: path.to_path_buf(), expected: expected.to_string(), found });
    }
    // SAFETY: same ABI as this host, established by the fingerprint check just above.
    let register = unsafe { lib.get::<RegisterFn>(hangar_plugin_api::REGISTER_SYMBOL) }
        .map_err(|_| PluginError::MissingSymbol { path: path.to_path_buf(), symbol: "hangar_plugin_register" })?;
    let mut collected = Collected::default();
    let mut message = vec![0u8; 1024];
    let status = {
        let mut host: &mut dyn Registrar = &mut collected;
        let ptr = &mut host as *mut &mut dyn Registrar as *mut c_void;
        // SAFETY: `ptr` points at a live `&mut dyn Registrar` for the call; `message` has
        // the capacity passed. Panics are caught inside the plugin (see hangar-plugin-api).
        unsafe { register(ptr, message.as_mut_ptr(), message.len()) }
    };
    if status != 0 {
        let end = message.iter().position(|&b| b == 0).unwrap_or(message.len());
        return Err(PluginError::RegistrationPanicked {
            path: path.to_path_buf(),
            message: String::from_utf8_lossy(&message[..end]).into_owned(),
        });
    }
    // All or nothing: check every architecture before registering any, against the registry
    // and against the plugin's own other families, as the names below are checked.
    let architectures: Vec<&'static str> = collected.families.iter().flat_map(|f| f.architectures().iter().copied()).collect();
    for (i, arch) in architectures.iter().enumerate() {
        if registry.resolve(arch).is_ok() || architectures[..i].contains(arch) {
            return Err(PluginError::ArchitectureClash { path: path.to_path_buf(), arch: arch.to_string() });
        }
    }
    let clash = |what, name: &str| PluginError::NameClash { path: path.to_path_buf(), what, name: name.to_string() };
    for p in &collected.processors {
        if set.processor(p.name()).is_some() || collected.processors.iter().filter(|q| q.name() == p.name()).count() > 1 {
            return Err(clash("logits processor", p.name()));
        }
    }
    for (name, _) in &collected.rule_sources {
        if set.rule_sources.iter().chain(&collected.rule_sources).filter(|(n, _)| n == name).count() > 1 {
            return Err(clash("rule source", name));
        }
    }
    // From here on the plugin's code and data are referenced by the host: keep the library
    // for the life of the process, whatever happens next.
    std::mem::forget(lib);
    for f in collected.families {
        let arch = f.architectures().first().copied().unwrap_or_default();
        registry
            .register(f)
            .map_err(|_| PluginError::ArchitectureClash { path: path.to_path_buf(), arch: arch.to_string() })?;
    }
    let info = PluginInfo {
        name: collected.name.unwrap_or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()),
        version: collected.version,
        path: path.to_path_buf(),
        architectures,
        rule_sources: collected.rule_sources.iter().map(|(n, _)| n.clone()).collect(),
        logits_processors: collected.processors.iter().map(|p| p.name().to_string()).collect(),
    };
    set.rule_sources.extend(collected.rule_sources);
    set.logits_processors.extend(collected.processors.into_iter().map(Arc::from));
    Ok(info)
}
