//! Compiles the C++ shim over libtorch's c10d (csrc/) against the headers of the libtorch that
//! torch-sys links (`DEP_TCH_LIBTORCH_LIB`, e.g. the PyPI torch wheel), the way torch-sys builds
//! its own wrapper. Three parts (docs/distributed.md):
//!
//! * stores + collectives through `c10d::Backend`: always (libtorch_cpu's headers only);
//! * the Gloo process group: when gloo's headers are found (`AMP_GLOO_INCLUDE`, else
//!   /usr/include or /usr/local/include, e.g. Debian's libgloo-dev). They are needed to parse
//!   ProcessGroupGloo.hpp only; the object is checked to reference no gloo symbol, so the gloo
//!   compiled into libtorch_cpu is the only one that runs;
//! * the NCCL process group: when libtorch_cuda.so, nccl.h and the CUDA runtime headers are all
//!   found (`NCCL_INCLUDE_DIR`, `CUDA_HOME`, `AMP_CUDA_INCLUDE`, the wheel's nvidia/*/include,
//!   where scripts/setup.sh's full variant puts nvidia-cuda-crt's and nvidia-cuda-cccl's headers).
//!
//! A part left out is reported as a cargo warning and as a typed error at run time.
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    amp_build::link_libtorch();
    for f in ["shim.h", "internal.hpp", "c10d_shim.cpp", "gloo_group.cpp", "nccl_group.cpp"] {
        println!("cargo:rerun-if-changed=csrc/{f}");
    }
    for v in ["AMP_GLOO_INCLUDE", "NCCL_INCLUDE_DIR", "CUDA_HOME", "AMP_CUDA_INCLUDE", "LIBTORCH_CXX11_ABI", "LIBTORCH_INCLUDE"] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    println!("cargo:rustc-check-cfg=cfg(amp_gloo)");
    println!("cargo:rustc-check-cfg=cfg(amp_nccl)");

    let lib = PathBuf::from(
        env::var("DEP_TCH_LIBTORCH_LIB")
            .expect("DEP_TCH_LIBTORCH_LIB unset: torch-sys did not report libtorch's directory"),
    );
    let root = lib.parent().expect("libtorch lib dir has a parent").to_path_buf();
    // The headers sit next to the libraries, except where torch-sys was pointed at them
    // separately (`LIBTORCH_INCLUDE`, as scripts/setup.sh's CPU-only install does: its `lib`
    // is a directory of links beside the wheel's `torch/`, which holds `include/`).
    let inc_root = env::var_os("LIBTORCH_INCLUDE").map(PathBuf::from).unwrap_or_else(|| root.clone());
    let torch_includes = [inc_root.join("include"), inc_root.join("include/torch/csrc/api/include")];
    let abi = env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    let base = || {
        let mut b = cc::Build::new();
        b.cpp(true)
            .pic(true)
            .std("c++17")
            .warnings(false)
            .define("_GLIBCXX_USE_CXX11_ABI", abi.as_str())
            .flag_if_supported("-Wno-interference-size")
            .includes(&torch_includes)
            .include("csrc");
        b
    };

    base().file("csrc/c10d_shim.cpp").compile("amp_c10d");

    match find_gloo() {
        Ok(inc) => {
            let objs = base()
                .include(&inc)
                .define("USE_C10D_GLOO", None)
                .file("csrc/gloo_group.cpp")
                .compile_intermediates();
            check_no_gloo_symbols(&objs);
            link_objects(base(), &objs, "amp_c10d_gloo");
            println!("cargo:rustc-cfg=amp_gloo");
        }
        Err(why) => {
            println!("cargo:warning=mdpo-dist: Gloo backend left out: {why}");
            println!("cargo:rustc-env=AMP_DIST_GLOO_MISSING={why}");
        }
    }

    match find_nccl(&lib, &root) {
        Ok(incs) => {
            base()
                .includes(&incs)
                .define("USE_C10D_NCCL", None)
                .define("USE_CUDA", None)
                .file("csrc/nccl_group.cpp")
                .compile("amp_c10d_nccl");
            println!("cargo:rustc-link-lib=dylib=torch_cuda");
            println!("cargo:rustc-cfg=amp_nccl");
        }
        Err(why) => {
            // Only worth a warning where a CUDA build of libtorch is present.
            if lib.join("libtorch_cuda.so").exists() {
                println!("cargo:warning=mdpo-dist: NCCL backend left out: {why}");
            }
            println!("cargo:rustc-env=AMP_DIST_NCCL_MISSING={why}");
        }
    }
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}

fn find_gloo() -> Result<PathBuf, String> {
    let candidates: Vec<PathBuf> = match env::var_os("AMP_GLOO_INCLUDE") {
        Some(dir) => vec![PathBuf::from(dir)],
        None => vec!["/usr/include".into(), "/usr/local/include".into()],
    };
    candidates
        .into_iter()
        .find(|d| d.join("gloo/context.h").exists() && d.join("gloo/rendezvous/store.h").exists())
        .ok_or_else(|| {
            "gloo headers not found (install Debian/Ubuntu's libgloo-dev, or set AMP_GLOO_INCLUDE \
             to a directory holding gloo/context.h)"
                .into()
        })
}

/// The gloo headers may be of another snapshot than the gloo inside libtorch_cpu: refuse an
/// object that would call into gloo (or embed a gloo vtable) rather than risk an ABI mismatch.
fn check_no_gloo_symbols(objs: &[PathBuf]) {
    for obj in objs {
        let Ok(out) = Command::new("nm").arg("-C").arg(obj).output() else {
            println!("cargo:warning=mdpo-dist: `nm` unavailable, gloo ABI check skipped");
            return;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let bad: Vec<&str> = text.lines().filter(|l| l.contains(" gloo::")).collect();
        assert!(
            bad.is_empty(),
            "{} references gloo symbols, which would bind to libtorch's gloo with another \
             snapshot's layout:\n{}",
            obj.display(),
            bad.join("\n")
        );
    }
}

fn link_objects(mut b: cc::Build, objs: &[PathBuf], name: &str) {
    b.objects(objs);
    b.compile(name);
}

fn find_nccl(lib: &Path, root: &Path) -> Result<Vec<PathBuf>, String> {
    if !lib.join("libtorch_cuda.so").exists() {
        return Err("libtorch_cuda.so absent (a CPU build of libtorch)".into());
    }
    // The wheel layout: site-packages/torch/lib -> site-packages/nvidia/...
    let site = root.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(v) = env::var_os("AMP_CUDA_INCLUDE") {
        dirs.extend(env::split_paths(&v));
    }
    if let Some(v) = env::var_os("NCCL_INCLUDE_DIR") {
        dirs.push(v.into());
    }
    if let Some(v) = env::var_os("CUDA_HOME") {
        dirs.push(PathBuf::from(v).join("include"));
    }
    dirs.push("/usr/local/cuda/include".into());
    dirs.push(site.join("nvidia/nccl/include"));
    if let Ok(rd) = std::fs::read_dir(site.join("nvidia")) {
        let mut cu: Vec<PathBuf> = rd.flatten().map(|e| e.path().join("include")).collect();
        cu.sort();
        dirs.extend(cu);
    }
    dirs.retain(|d| d.is_dir());
    let need = ["nccl.h", "cuda_runtime_api.h", "crt/host_config.h", "nv/target"];
    let missing: Vec<&str> =
        need.iter().copied().filter(|f| !dirs.iter().any(|d| d.join(f).exists())).collect();
    if missing.is_empty() {
        Ok(dirs)
    } else {
        Err(format!(
            "{} not found in {:?} (scripts/setup.sh's full variant installs them: pip install \
             --no-deps nvidia-cuda-crt nvidia-cuda-cccl of libtorch's CUDA version; or install \
             the CUDA toolkit, or set CUDA_HOME / AMP_CUDA_INCLUDE)",
            missing.join(", "),
            dirs
        ))
    }
}
