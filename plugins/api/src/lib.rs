//! The plugin side of Hangar's plugin boundary.
//!
//! A plugin is a `cdylib` that calls [`export_plugin!`] once. That exports two C-ABI
//! symbols:
//! - `hangar_plugin_fingerprint`, returning a NUL-terminated string naming the plugin ABI
//!   version, the exact rustc, the target and a hash of the engine sources. The host reads it
//!   before anything else and refuses any mismatch, because what crosses the boundary next
//!   are Rust trait objects (`Box<dyn Family>`), which only the same compiler and the same
//!   type definitions lay out alike.
//! - `hangar_plugin_register`, which hands the plugin a [`Registrar`].
//!
//! A plugin links its own copy of std, and a panic raised by one copy of std cannot be
//! caught by another (the host would abort). So everything a plugin registers is wrapped,
//! inside the plugin, in guards that catch its panics with the plugin's own std and turn
//! them into errors: the registration call itself, every `Family` method and every logits
//! processor call.

use std::any::Any;
use std::ffi::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};

use hangar_engine::family::{Family, FamilyError};
use hangar_engine::gguf::GgufFile;
use hangar_engine::spec::ModelSpec;

pub use hangar_engine;

/// The plugin ABI version; part of [`FINGERPRINT`].
pub const ABI_VERSION: &str = env!("HANGAR_PLUGIN_ABI_VERSION");
/// The build fingerprint of whatever links this crate, host or plugin, NUL-terminated.
pub const FINGERPRINT: &str = concat!(env!("HANGAR_PLUGIN_FINGERPRINT"), "\0");
/// Exported symbol names, NUL-terminated for dlsym.
pub const FINGERPRINT_SYMBOL: &[u8] = b"hangar_plugin_fingerprint\0";
pub const REGISTER_SYMBOL: &[u8] = b"hangar_plugin_register\0";

/// `hangar_plugin_fingerprint`: safe to call in any plugin, whatever compiled it.
pub type FingerprintFn = unsafe extern "C" fn() -> *const c_char;
/// `hangar_plugin_register(registrar, message, message_capacity) -> 0 | 1`. `registrar`
/// points at a `&mut dyn Registrar`; on failure (1) a UTF-8 reason is written to
/// `message`, NUL-terminated and truncated to `message_capacity`.
pub type RegisterFn = unsafe extern "C" fn(*mut c_void, *mut u8, usize) -> i32;

/// The fingerprint without its NUL.
pub fn fingerprint() -> &'static str {
    FINGERPRINT.trim_end_matches('\0')
}

/// Adjusts logits before sampling, e.g. to ban or boost tokens by rule.
pub trait LogitsProcessor: Send + Sync {
    fn name(&self) -> &str;
    /// `history` is the prompt and the tokens generated so far; `logits` has one entry per
    /// vocabulary id. An error ends the request rather than sampling from unchecked logits.
    fn process(&self, history: &[u32], logits: &mut [f32]) -> Result<(), String>;
}

/// What a plugin can add to the host.
pub trait Registrar {
    /// A short name for the plugin, shown in logs and listings.
    fn plugin_name(&mut self, name: &str);
    /// The plugin crate's version; [`export_plugin!`] reports it before `register` runs.
    fn plugin_version(&mut self, version: &str);
    /// A model family, registered in the same registry as the in-tree ones.
    fn family(&mut self, family: Box<dyn Family>);
    /// A policy rule set, as the text of a rule-set TOML file, under `name`.
    fn rule_source(&mut self, name: &str, toml: &str);
    /// A logits processor, addressable by its name.
    fn logits_processor(&mut self, processor: Box<dyn LogitsProcessor>);
}

fn panic_message(p: &(dyn Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with a non-string payload".into())
}

/// A plugin's family, with its panics caught on the plugin's side of the boundary.
struct GuardedFamily(Box<dyn Family>);

impl Family for GuardedFamily {
    fn name(&self) -> &'static str {
        catch_unwind(AssertUnwindSafe(|| self.0.name())).unwrap_or("panicked")
    }

    fn architectures(&self) -> &'static [&'static str] {
        catch_unwind(AssertUnwindSafe(|| self.0.architectures())).unwrap_or(&[])
    }

    fn build_spec(&self, file: &GgufFile) -> Result<ModelSpec, FamilyError> {
        catch_unwind(AssertUnwindSafe(|| self.0.build_spec(file))).unwrap_or_else(|p| {
            Err(FamilyError::BadValue {
                key: "general.architecture".into(),
                why: format!("plugin family panicked: {}", panic_message(p.as_ref())),
            })
        })
    }
}

struct GuardedProcessor(Box<dyn LogitsProcessor>);

impl LogitsProcessor for GuardedProcessor {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn process(&self, history: &[u32], logits: &mut [f32]) -> Result<(), String> {
        catch_unwind(AssertUnwindSafe(|| self.0.process(history, logits)))
            .unwrap_or_else(|p| Err(format!("logits processor panicked: {}", panic_message(p.as_ref()))))
    }
}

/// Wraps what the plugin registers in guards before it reaches the host.
struct Guarding<'a>(&'a mut dyn Registrar);

impl Registrar for Guarding<'_> {
    fn plugin_name(&mut self, name: &str) {
        self.0.plugin_name(name)
    }
    fn plugin_version(&mut self, version: &str) {
        self.0.plugin_version(version)
    }
    fn family(&mut self, family: Box<dyn Family>) {
        self.0.family(Box::new(GuardedFamily(family)))
    }
    fn rule_source(&mut self, name: &str, toml: &str) {
        self.0.rule_source(name, toml)
    }
    fn logits_processor(&mut self, processor: Box<dyn LogitsProcessor>) {
        self.0.logits_processor(Box::new(GuardedProcessor(processor)))
    }
}

/// The body of `hangar_plugin_register`; called by [`export_plugin!`] only.
///
/// # Safety
/// `registrar` points at a live `&mut dyn Registrar` of a host whose fingerprint equals this
/// plugin's, and `message` has room for `capacity` bytes.
#[doc(hidden)]
pub unsafe fn __register(
    registrar: *mut c_void,
    message: *mut u8,
    capacity: usize,
    register: fn(&mut dyn Registrar),
    version: &str,
) -> i32 {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the caller's contract.
        let host: &mut &mut dyn Registrar = unsafe { &mut *(registrar as *mut &mut dyn Registrar) };
        let mut guarded = Guarding(&mut **host);
        guarded.plugin_version(version);
        register(&mut guarded);
    }));
    match outcome {
        Ok(()) => 0,
        Err(p) => {
            let why = panic_message(p.as_ref());
            if !message.is_null() && capacity > 0 {
                let n = why.len().min(capacity - 1);
                // SAFETY: `message` has `capacity` bytes; `n + 1 <= capacity`.
                unsafe {
                    std::ptr::copy_nonoverlapping(why.as_ptr(), message, n);
                    *message.add(n) = 0;
                }
            }
            1
        }
    }
}

/// Exports a plugin whose registration function is `$register: fn(&mut dyn Registrar)`.
#[macro_export]
macro_rules! export_plugin {
    ($register:path) => {
        #[no_mangle]
        pub extern "C" fn hangar_plugin_fingerprint() -> *const ::std::ffi::c_char {
            $crate::FINGERPRINT.as_ptr().cast()
        }

        /// # Safety
        /// Called by the Hangar host only, after it has checked the fingerprint.
        #[no_mangle]
        pub unsafe extern "C" fn hangar_plugin_register(
            registrar: *mut ::std::ffi::c_void,
            message: *mut u8,
            capacity: usize,
        ) -> i32 {
            // SAFETY: forwarded from the host's side of the contract.
            // The version is the plugin crate's own: `env!` expands where the macro is used.
            unsafe { $crate::__register(registrar, message, capacity, $register, env!("CARGO_PKG_VERSION")) }
        }
    };
}
