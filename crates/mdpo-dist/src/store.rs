//! c10d key-value stores for the rendezvous: `TCPStore` (rank 0 serves `MASTER_ADDR:MASTER_PORT`,
//! as torchrun does) and `FileStore` (a file every rank can open; for tests and shared disks).
use std::ffi::CString;
use std::path::Path;
use std::time::Duration;

use crate::ffi::{self, ShimError};

/// An open c10d store. Dropping it closes the connection (rank 0's drop stops the server).
pub struct Store {
    pub(crate) raw: *mut ffi::AmpStore,
}

// SAFETY: c10d stores are thread-safe C++ objects; the handle is only a pointer to one.
unsafe impl Send for Store {}

fn cstring(s: &str) -> Result<CString, ShimError> {
    CString::new(s).map_err(|_| ShimError(format!("{s:?} contains a NUL byte")))
}

impl Store {
    /// Connect to (rank 0: serve) a TCPStore at `host:port` for `world` ranks; waits up to
    /// `timeout` for the server and, on rank 0, for every worker.
    pub fn tcp(
        host: &str,
        port: u16,
        world: usize,
        is_server: bool,
        timeout: Duration,
    ) -> Result<Self, ShimError> {
        let host = cstring(host)?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: valid C string and out-pointer; the shim catches every C++ exception.
        ffi::check(unsafe {
            ffi::amp_c10d_tcp_store(
                host.as_ptr(),
                port,
                world as i32,
                is_server as i32,
                timeout.as_millis() as i64,
                &mut raw,
            )
        })?;
        Ok(Self { raw })
    }

    /// Open a FileStore at `path` shared by `world` ranks. The file must not hold a previous
    /// run's keys: use a fresh path per job.
    pub fn file(path: &Path, world: usize, timeout: Duration) -> Result<Self, ShimError> {
        let path = cstring(&path.to_string_lossy())?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: as in `tcp`.
        ffi::check(unsafe {
            ffi::amp_c10d_file_store(path.as_ptr(), world as i32, timeout.as_millis() as i64, &mut raw)
        })?;
        Ok(Self { raw })
    }

    /// Set `key` to `value`.
    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), ShimError> {
        let key = cstring(key)?;
        // SAFETY: the store is alive; key and value outlive the call.
        ffi::check(unsafe {
            ffi::amp_c10d_store_set(self.raw, key.as_ptr(), value.as_ptr(), value.len())
        })
    }

    /// The value of `key`, waiting for it up to the store's timeout.
    pub fn get(&self, key: &str) -> Result<Vec<u8>, ShimError> {
        let key = cstring(key)?;
        let mut buf = std::ptr::null_mut();
        let mut len = 0usize;
        // SAFETY: as in `set`; on success `buf` holds `len` bytes malloc'd by the shim.
        ffi::check(unsafe { ffi::amp_c10d_store_get(self.raw, key.as_ptr(), &mut buf, &mut len) })?;
        let out = unsafe { std::slice::from_raw_parts(buf, len) }.to_vec();
        unsafe { ffi::amp_c10d_bytes_free(buf) };
        Ok(out)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // SAFETY: `raw` came from the shim and is freed once.
        unsafe { ffi::amp_c10d_store_free(self.raw) }
    }
}
