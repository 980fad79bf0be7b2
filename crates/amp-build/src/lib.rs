//! amp-build: the build-script helper every amp-rs crate that links libtorch calls from its
//! `build.rs`: bake libtorch's directory into every binary, test and bench as an rpath, so nothing
//! needs LD_LIBRARY_PATH at run time.
//!
//! ```no_run
//! // build.rs
//! fn main() {
//!     amp_build::link_libtorch();
//! }
//! ```
//!
//! torch-sys (links = "tch") exports `DEP_TCH_LIBTORCH_LIB` to crates that depend on it directly.
//! rustc links with `--as-needed`, which drops `libtorch_cuda.so` because no symbol of it is used
//! directly; when the library exists we force it in so `tch::Cuda::is_available()` works on a GPU
//! machine.
use std::path::Path;

/// Emit the link arguments described above. Call it from a build script of a crate that depends
/// on `torch-sys` directly (only those see `DEP_TCH_LIBTORCH_LIB`).
pub fn link_libtorch() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        if Path::new(&dir).join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
            println!("cargo:rustc-link-arg=-L{dir}");
            println!("cargo:rustc-link-arg=-ltorch_cuda");
            println!("cargo:rustc-link-arg=-Wl,--as-needed");
        }
    }
}
