//! # mdpo-dist — data-parallel collectives for the `mdpo` trainer on libtorch's c10d
//!
//! The AMP paper trains with PyTorch's DistributedDataParallel on 8 GPUs (AMP, NeurIPS 2024,
//! §5.1). This crate gives `mdpo`'s [`Collective`] trait the same engine: c10d's
//! `ProcessGroupGloo` (CPU tensors) and `ProcessGroupNCCL` (CUDA tensors), reached through a
//! small C++ shim compiled against the headers of the libtorch that `tch` links, with torchrun's
//! rendezvous (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT` over a c10d
//! TCPStore) or a FileStore. See docs/distributed.md.
//!
//! ```no_run
//! use mdpo::Collective;
//! use mdpo_dist::{connect_from_env, Backend, DEFAULT_TIMEOUT};
//! let group = connect_from_env(Backend::Gloo, DEFAULT_TIMEOUT)?; // a world of 1 without WORLD_SIZE
//! let mut grads = vec![tch::Tensor::ones([3], (tch::Kind::Float, tch::Device::Cpu))];
//! group.all_reduce_mean(&mut grads)?;
//! # Ok::<(), mdpo::CollectiveError>(())
//! ```
pub mod config;
mod ffi;
pub mod group;
pub mod launch;
pub mod peers;
pub mod store;

pub use config::{Backend, DistConfig, Rendezvous, DEFAULT_TIMEOUT};
pub use group::ProcessGroup;
pub use launch::{is_launched_rank, launch_local, LaunchError};
pub use mdpo::collective::{Collective, CollectiveError, SingleProcess};

/// Whether this build includes the Gloo backend (gloo's headers were found at build time).
pub const HAS_GLOO: bool = cfg!(amp_gloo);
/// Whether this build includes the NCCL backend (a CUDA libtorch and its headers were found).
pub const HAS_NCCL: bool = cfg!(amp_nccl);

/// A process group for `config`, or [`SingleProcess`] for a world of one (no store, no
/// threads, nothing to pay).
pub fn connect(config: &DistConfig) -> Result<Box<dyn Collective>, CollectiveError> {
    if config.world_size == 1 {
        return Ok(Box::new(SingleProcess));
    }
    Ok(Box::new(ProcessGroup::new(config)?))
}

/// [`connect`] with torchrun's environment ([`DistConfig::from_env`]); [`SingleProcess`] when
/// `WORLD_SIZE` is unset.
pub fn connect_from_env(
    backend: Backend,
    timeout: std::time::Duration,
) -> Result<Box<dyn Collective>, CollectiveError> {
    match DistConfig::from_env(backend, timeout)? {
        Some(config) => connect(&config),
        None => Ok(Box::new(SingleProcess)),
    }
}
