//! The C ABI of csrc/shim.h. Every fallible function returns a null pointer or an error string
//! allocated by the shim; [`check`] turns the latter into a `String` and frees it.
use std::ffi::{c_char, c_int, c_void, CStr};

#[repr(C)]
pub struct AmpStore {
    _private: [u8; 0],
}
#[repr(C)]
pub struct AmpGroup {
    _private: [u8; 0],
}

extern "C" {
    pub fn amp_c10d_tcp_store(
        host: *const c_char,
        port: u16,
        world: c_int,
        is_server: c_int,
        timeout_ms: i64,
        out: *mut *mut AmpStore,
    ) -> *mut c_char;
    pub fn amp_c10d_file_store(
        path: *const c_char,
        world: c_int,
        timeout_ms: i64,
        out: *mut *mut AmpStore,
    ) -> *mut c_char;
    pub fn amp_c10d_store_set(
        store: *mut AmpStore,
        key: *const c_char,
        value: *const u8,
        len: usize,
    ) -> *mut c_char;
    pub fn amp_c10d_store_get(
        store: *mut AmpStore,
        key: *const c_char,
        value: *mut *mut u8,
        len: *mut usize,
    ) -> *mut c_char;
    pub fn amp_c10d_store_free(store: *mut AmpStore);
    #[cfg(amp_gloo)]
    pub fn amp_c10d_gloo_new(
        store: *mut AmpStore,
        rank: c_int,
        world: c_int,
        timeout_ms: i64,
        hostname: *const c_char,
        out: *mut *mut AmpGroup,
    ) -> *mut c_char;
    #[cfg(amp_nccl)]
    pub fn amp_c10d_nccl_new(
        store: *mut AmpStore,
        rank: c_int,
        world: c_int,
        timeout_ms: i64,
        out: *mut *mut AmpGroup,
    ) -> *mut c_char;
    pub fn amp_c10d_all_reduce_sum(group: *mut AmpGroup, tensor: *mut c_void) -> *mut c_char;
    pub fn amp_c10d_broadcast(group: *mut AmpGroup, tensor: *mut c_void, root: c_int)
        -> *mut c_char;
    pub fn amp_c10d_barrier(group: *mut AmpGroup) -> *mut c_char;
    pub fn amp_c10d_group_free(group: *mut AmpGroup);
    pub fn amp_c10d_string_free(s: *mut c_char);
    pub fn amp_c10d_bytes_free(b: *mut u8);
}

/// An error reported by the C++ shim (a c10d exception's message, or a bad argument found
/// before calling into libtorch).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ShimError(pub String);

/// `Ok(())` for a null result, else the shim's message (freed here).
pub fn check(err: *mut c_char) -> Result<(), ShimError> {
    if err.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null result is a NUL-terminated string malloc'd by the shim, owned by us.
    let msg = unsafe { CStr::from_ptr(err) }.to_string_lossy().trim().to_string();
    unsafe { amp_c10d_string_free(err) };
    Err(ShimError(msg))
}
