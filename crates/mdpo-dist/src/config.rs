//! Where a rank learns its place in the job: torchrun's environment variables (`RANK`,
//! `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`), or explicit values for tests and
//! launchers (docs/distributed.md).
use std::path::PathBuf;
use std::time::Duration;

use mdpo::collective::CollectiveError;

/// The c10d backend: Gloo reduces CPU tensors, NCCL reduces CUDA tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Gloo,
    Nccl,
}

impl Backend {
    /// NCCL for a CUDA device, Gloo otherwise (what `torch.distributed` users pick).
    pub fn for_device(device: tch::Device) -> Self {
        if device.is_cuda() {
            Backend::Nccl
        } else {
            Backend::Gloo
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        })
    }
}

/// How the ranks find each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rendezvous {
    /// A c10d TCPStore that rank 0 serves at `addr:port`.
    Tcp { addr: String, port: u16 },
    /// A c10d FileStore: a fresh file every rank can open.
    File(PathBuf),
}

/// Default for [`DistConfig::timeout`]: how long a rendezvous or one collective may wait.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// One rank's view of the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistConfig {
    pub rank: usize,
    pub world_size: usize,
    /// Index among the ranks of this machine: the CUDA device a rank uses.
    pub local_rank: usize,
    pub rendezvous: Rendezvous,
    pub backend: Backend,
    /// Rendezvous and per-collective timeout; a rank that does not answer within it ends the
    /// others with an error.
    pub timeout: Duration,
    /// The address Gloo binds to; `None` lets c10d choose (`GLOO_SOCKET_IFNAME`, else the
    /// host's own address). [`DistConfig::from_env`] sets 127.0.0.1 when `MASTER_ADDR` is a
    /// loopback address, so single-machine jobs never leave the machine.
    pub gloo_hostname: Option<String>,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parse<T: std::str::FromStr>(name: &str, value: &str, what: &str) -> Result<T, CollectiveError> {
    value.trim().parse().map_err(|_| CollectiveError::Env {
        var: name.into(),
        value: value.into(),
        message: format!("expected {what}"),
    })
}

impl DistConfig {
    /// Read torchrun's variables. `Ok(None)` when `WORLD_SIZE` is unset: a single-process run.
    /// `RANK` is then required, `LOCAL_RANK` defaults to 0, `MASTER_ADDR` is required (or
    /// `AMP_DIST_STORE_FILE` names a FileStore instead), `MASTER_PORT` defaults to 29500 as in
    /// torch.
    pub fn from_env(backend: Backend, timeout: Duration) -> Result<Option<Self>, CollectiveError> {
        let Some(world) = var("WORLD_SIZE") else { return Ok(None) };
        let world_size: usize = parse("WORLD_SIZE", &world, "a positive integer")?;
        let env_err = |var: &str, value: &str, message: String| CollectiveError::Env {
            var: var.into(),
            value: value.into(),
            message,
        };
        if world_size == 0 {
            return Err(env_err("WORLD_SIZE", &world, "expected a positive integer".into()));
        }
        let rank_s = var("RANK").ok_or_else(|| env_err("RANK", "", "unset while WORLD_SIZE is set".into()))?;
        let rank: usize = parse("RANK", &rank_s, "an integer")?;
        if rank >= world_size {
            return Err(env_err("RANK", &rank_s, format!("must be below WORLD_SIZE={world_size}")));
        }
        let local_rank = match var("LOCAL_RANK") {
            Some(v) => parse("LOCAL_RANK", &v, "an integer")?,
            None => 0,
        };
        let (rendezvous, gloo_hostname) = if let Some(path) = var("AMP_DIST_STORE_FILE") {
            (Rendezvous::File(path.into()), None)
        } else {
            let addr = var("MASTER_ADDR").ok_or_else(|| {
                env_err("MASTER_ADDR", "", "unset while WORLD_SIZE is set (rank 0's address)".into())
            })?;
            let port = match var("MASTER_PORT") {
                Some(p) => parse("MASTER_PORT", &p, "a TCP port")?,
                None => 29500,
            };
            let loopback = addr == "localhost"
                || addr.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
            (Rendezvous::Tcp { addr, port }, loopback.then(|| "127.0.0.1".to_string()))
        };
        Ok(Some(Self { rank, world_size, local_rank, rendezvous, backend, timeout, gloo_hostname }))
    }
}
