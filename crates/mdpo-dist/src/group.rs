//! [`ProcessGroup`]: a c10d process group (Gloo or NCCL) behind mdpo's [`Collective`] trait.
use std::ffi::c_void;
use std::time::{Duration, Instant};

use mdpo::collective::{Collective, CollectiveError, CollectiveOp};
use tch::Tensor;

use crate::config::{Backend, DistConfig, Rendezvous};
use crate::ffi::{self, ShimError};
use crate::peers::Peer;
use crate::store::Store;

/// One rank's membership of a c10d process group. Collectives are blocking.
pub struct ProcessGroup {
    raw: *mut ffi::AmpGroup,
    rank: usize,
    world: usize,
    backend: Backend,
    peers: Vec<Peer>,
    // Kept alive for the group's lifetime: rank 0's TCPStore serves the others.
    _store: Store,
}

// SAFETY: c10d process groups may be used from any thread; one `ProcessGroup` is used by one
// thread at a time (`&self` methods are blocking calls, the trait object is not `Sync`).
unsafe impl Send for ProcessGroup {}

impl ProcessGroup {
    /// Rendezvous with the other ranks (store, then the backend's connections) and return this
    /// rank's group. Fails with [`CollectiveError::Rendezvous`] when not every rank shows up
    /// within `config.timeout`.
    pub fn new(config: &DistConfig) -> Result<Self, CollectiveError> {
        let (rank, world, timeout) = (config.rank, config.world_size, config.timeout);
        let rdv_err = |cause: String| CollectiveError::Rendezvous {
            rank,
            world,
            timeout_ms: timeout.as_millis() as u64,
            cause,
        };
        let store = match &config.rendezvous {
            Rendezvous::Tcp { addr, port } => Store::tcp(addr, *port, world, rank == 0, timeout)
                .map_err(|e| rdv_err(format!("TCPStore {addr}:{port}: {e}")))?,
            Rendezvous::File(path) => Store::file(path, world, timeout)
                .map_err(|e| rdv_err(format!("FileStore {}: {e}", path.display())))?,
        };
        let me = Peer::this_process();
        store.set(&format!("amp/peer/{rank}"), me.encode().as_bytes()).map_err(|e| rdv_err(e.0))?;
        let raw = create(config, &store).map_err(|e| match e {
            Created::Unavailable(e) => e,
            Created::Failed(msg) => rdv_err(format!("{} process group: {msg}", config.backend)),
        })?;
        let mut group =
            Self { raw, rank, world, backend: config.backend, peers: Vec::new(), _store: store };
        for r in 0..world {
            let bytes = group._store.get(&format!("amp/peer/{r}")).map_err(|e| rdv_err(e.0))?;
            group.peers.push(Peer::decode(&String::from_utf8_lossy(&bytes)));
        }
        Ok(group)
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Turn a shim failure into a typed error, naming the peers found dead. A killed peer's
    /// sockets close while it exits, so its process may need a moment to disappear.
    fn failed(&self, op: CollectiveOp, cause: String) -> CollectiveError {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut failed_peers;
        loop {
            failed_peers = (0..self.world)
                .filter(|&r| r != self.rank && self.peers[r].is_dead_local_process())
                .collect::<Vec<_>>();
            if !failed_peers.is_empty() || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        CollectiveError::PeerFailed { rank: self.rank, world: self.world, op, failed_peers, cause }
    }

    /// Run `f` on one tensor holding all of `tensors` (the tensors themselves when there is one
    /// contiguous tensor, else a flat bucket copied back afterwards).
    fn bucketed(
        &self,
        op: CollectiveOp,
        tensors: &mut [Tensor],
        f: impl Fn(*mut c_void) -> Result<(), ShimError>,
    ) -> Result<(), CollectiveError> {
        let Some(first) = tensors.first() else { return Ok(()) };
        let (kind, device) = (first.kind(), first.device());
        if let Some(t) = tensors.iter().find(|t| t.kind() != kind || t.device() != device) {
            return Err(CollectiveError::InvalidInput {
                rank: self.rank,
                op,
                message: format!(
                    "one bucket mixes {kind:?} on {device:?} with {:?} on {:?}",
                    t.kind(),
                    t.device()
                ),
            });
        }
        if tensors.len() == 1 && first.is_contiguous() {
            return f(first.as_ptr() as *mut c_void).map_err(|e| self.failed(op, e.0));
        }
        let flat = Tensor::f_cat(
            &tensors.iter().map(|t| t.reshape([-1])).collect::<Vec<_>>(),
            0,
        )?;
        f(flat.as_ptr() as *mut c_void).map_err(|e| self.failed(op, e.0))?;
        let mut offset = 0i64;
        for t in tensors.iter_mut() {
            let n = t.numel() as i64;
            t.f_copy_(&flat.narrow(0, offset, n).view_as(t))?;
            offset += n;
        }
        Ok(())
    }
}

enum Created {
    #[allow(dead_code)] // constructed only in builds without one of the backends
    Unavailable(CollectiveError),
    Failed(String),
}

fn create(config: &DistConfig, store: &Store) -> Result<*mut ffi::AmpGroup, Created> {
    let mut raw = std::ptr::null_mut();
    let (rank, world) = (config.rank as i32, config.world_size as i32);
    let ms = config.timeout.as_millis() as i64;
    match config.backend {
        Backend::Gloo => {
            #[cfg(amp_gloo)]
            {
                let host = config
                    .gloo_hostname
                    .as_deref()
                    .map(|h| std::ffi::CString::new(h).expect("hostname without NUL"));
                let host_ptr = host.as_ref().map_or(std::ptr::null(), |h| h.as_ptr());
                // SAFETY: live store, valid (or null) C string, out-pointer.
                ffi::check(unsafe {
                    ffi::amp_c10d_gloo_new(store.raw, rank, world, ms, host_ptr, &mut raw)
                })
                .map_err(|e| Created::Failed(e.0))?;
            }
            #[cfg(not(amp_gloo))]
            {
                let _ = (store, rank, world, ms);
                return Err(Created::Unavailable(CollectiveError::Unavailable {
                    backend: "gloo".into(),
                    reason: env!("AMP_DIST_GLOO_MISSING").into(),
                }));
            }
        }
        Backend::Nccl => {
            #[cfg(amp_nccl)]
            {
                // SAFETY: live store, out-pointer.
                ffi::check(unsafe { ffi::amp_c10d_nccl_new(store.raw, rank, world, ms, &mut raw) })
                    .map_err(|e| Created::Failed(e.0))?;
            }
            #[cfg(not(amp_nccl))]
            {
                let _ = (store, rank, world, ms);
                return Err(Created::Unavailable(CollectiveError::Unavailable {
                    backend: "nccl".into(),
                    reason: env!("AMP_DIST_NCCL_MISSING").into(),
                }));
            }
        }
    }
    #[allow(unreachable_code)]
    Ok(raw)
}

impl Collective for ProcessGroup {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.world
    }
    fn all_reduce_sum(&self, tensors: &mut [Tensor]) -> Result<(), CollectiveError> {
        self.bucketed(CollectiveOp::AllReduce, tensors, |t| {
            // SAFETY: live group; `t` is an at::Tensor* alive for the call.
            ffi::check(unsafe { ffi::amp_c10d_all_reduce_sum(self.raw, t) })
        })
    }
    fn broadcast(&self, tensors: &mut [Tensor], root: usize) -> Result<(), CollectiveError> {
        if root >= self.world {
            return Err(CollectiveError::InvalidInput {
                rank: self.rank,
                op: CollectiveOp::Broadcast,
                message: format!("root rank {root} outside a world of {}", self.world),
            });
        }
        self.bucketed(CollectiveOp::Broadcast, tensors, |t| {
            // SAFETY: as in all_reduce_sum.
            ffi::check(unsafe { ffi::amp_c10d_broadcast(self.raw, t, root as i32) })
        })
    }
    fn barrier(&self) -> Result<(), CollectiveError> {
        // SAFETY: live group.
        ffi::check(unsafe { ffi::amp_c10d_barrier(self.raw) })
            .map_err(|e| self.failed(CollectiveOp::Barrier, e.0))
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: `raw` came from the shim and is freed once, before the store.
        unsafe { ffi::amp_c10d_group_free(self.raw) }
    }
}
