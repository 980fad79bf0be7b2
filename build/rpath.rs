//! Shared build script: bake libtorch's directory into every binary, test and bench as an rpath,
//! so nothing needs LD_LIBRARY_PATH at run time.
//!
//! torch-sys (links = "tch") exports `DEP_TCH_LIBTORCH_LIB` to crates that depend on it directly.
//! rustc links with `--as-needed`, which drops `libtorch_cuda.so` because no symbol of it is used
//! directly; when the library exists we force it in so `tch::Cuda::is_available()` works on a GPU
//! machine.
use std::path::Path;

fn main() {
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
