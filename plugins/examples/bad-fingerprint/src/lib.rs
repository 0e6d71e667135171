//! Exports the plugin symbols by hand with a fingerprint from another compiler, as a plugin
//! built by an older toolchain would. The host must refuse it without calling `register`.

#[no_mangle]
pub extern "C" fn hangar_plugin_fingerprint() -> *const std::ffi::c_char {
    c"hangar-plugin-abi=1;rustc=1.0.0 (0000000);target=x86_64-unknown-linux-gnu;engine=0.0.1+0".as_ptr()
}

/// Aborts the process if it is ever called: the host must not get this far.
///
/// # Safety
/// Never called by a correct host.
#[no_mangle]
pub unsafe extern "C" fn hangar_plugin_register(_: *mut std::ffi::c_void, _: *mut u8, _: usize) -> i32 {
    std::process::abort()
}
