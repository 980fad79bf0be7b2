//! Collective communication between the ranks of a data-parallel job (docs/distributed.md).
//!
//! The trainer sees only the [`Collective`] trait: all-reduce (sum or mean) of a list of tensors,
//! broadcast from one rank, a barrier, its rank and the world size. [`SingleProcess`] is the
//! trivial world of one rank, what every single-process run uses; the process groups over
//! libtorch's own c10d collectives (Gloo for CPU tensors, NCCL for CUDA tensors) live in the
//! separate `mdpo-dist` crate so that `mdpo` stays pure Rust and single-process users compile
//! nothing new.
//!
//! Every operation is a *collective*: all ranks must call the same operations in the same order
//! with tensors of the same shapes and dtypes, as with `torch.distributed`.
use tch::Tensor;

/// Which collective operation failed, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CollectiveOp {
    AllReduce,
    Broadcast,
    Barrier,
}

impl std::fmt::Display for CollectiveOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CollectiveOp::AllReduce => "all-reduce",
            CollectiveOp::Broadcast => "broadcast",
            CollectiveOp::Barrier => "barrier",
        })
    }
}

/// What can go wrong in a collective job. Every variant names the rank that reports it; a
/// failed peer is named when the backend could tell which one it was.
#[derive(Debug, thiserror::Error)]
pub enum CollectiveError {
    /// A rendezvous variable (`RANK`, `WORLD_SIZE`, `MASTER_ADDR`, ...) is missing or malformed.
    #[error("distributed environment: {var}={value:?}: {message}")]
    Env {
        var: String,
        value: String,
        message: String,
    },
    /// The ranks did not all meet (store or backend connection) within the timeout.
    #[error("rank {rank} of {world}: rendezvous failed after {timeout_ms} ms: {cause}")]
    Rendezvous {
        rank: usize,
        world: usize,
        timeout_ms: u64,
        cause: String,
    },
    /// A collective failed: a peer died, closed its connection, or did not answer in time.
    #[error(
        "rank {rank} of {world}: {op} failed{}: {cause}",
        match failed_peers.as_slice() {
            [] => String::new(),
            peers => format!(" (rank{} {} gone)", if peers.len() > 1 { "s" } else { "" },
                peers.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ")),
        }
    )]
    PeerFailed {
        rank: usize,
        world: usize,
        op: CollectiveOp,
        /// The ranks found dead after the failure (empty when they could not be identified).
        failed_peers: Vec<usize>,
        cause: String,
    },
    /// The tensors handed to a collective are unusable (mixed devices, wrong rank index...).
    #[error("rank {rank}: {op}: {message}")]
    InvalidInput {
        rank: usize,
        op: CollectiveOp,
        message: String,
    },
    /// The requested backend was not compiled into this build.
    #[error("{backend} backend not available in this build: {reason}")]
    Unavailable { backend: String, reason: String },
    /// A libtorch error outside the collective itself (flattening, copying).
    #[error("torch: {0}")]
    Torch(#[from] tch::TchError),
}

/// A group of ranks that reduce and broadcast tensors together.
///
/// Tensors are modified in place; their storage must be contiguous or the backend flattens them
/// into a bucket and copies back. Implementations are `Send` so a trainer can own one.
pub trait Collective: Send {
    /// This process's rank, `0..world_size()`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn world_size(&self) -> usize;
    /// Element-wise sum over the ranks, written back into every tensor on every rank; the
    /// tensors of one call may differ in shape but share one dtype and device. One call is one
    /// collective (a bucket), not one per tensor.
    fn all_reduce_sum(&self, tensors: &mut [Tensor]) -> Result<(), CollectiveError>;
    /// Copy `root`'s tensors into every other rank's tensors (same shapes and dtypes everywhere).
    fn broadcast(&self, tensors: &mut [Tensor], root: usize) -> Result<(), CollectiveError>;
    /// Block until every rank has reached this point.
    fn barrier(&self) -> Result<(), CollectiveError>;

    /// Element-wise mean over the ranks (the sum divided by the world size), in place.
    fn all_reduce_mean(&self, tensors: &mut [Tensor]) -> Result<(), CollectiveError> {
        self.all_reduce_sum(tensors)?;
        let world = self.world_size();
        if world > 1 {
            for t in tensors.iter_mut() {
                let _ = t.f_div_scalar_(world as f64)?;
            }
        }
        Ok(())
    }
    /// Whether this is rank 0, the one that writes checkpoints, metrics and caches.
    fn is_main(&self) -> bool {
        self.rank() == 0
    }
}

/// The world of one: every collective is the identity. What a single-process run uses; it costs
/// nothing (no copy, no synchronisation).
#[derive(Debug, Default, Clone, Copy)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, _tensors: &mut [Tensor]) -> Result<(), CollectiveError> {
        Ok(())
    }
    fn broadcast(&self, _tensors: &mut [Tensor], root: usize) -> Result<(), CollectiveError> {
        if root != 0 {
            return Err(CollectiveError::InvalidInput {
                rank: 0,
                op: CollectiveOp::Broadcast,
                message: format!("root rank {root} outside a world of 1"),
            });
        }
        Ok(())
    }
    fn barrier(&self) -> Result<(), CollectiveError> {
        Ok(())
    }
}

impl<C: Collective + ?Sized> Collective for Box<C> {
    fn rank(&self) -> usize {
        (**self).rank()
    }
    fn world_size(&self) -> usize {
        (**self).world_size()
    }
    fn all_reduce_sum(&self, tensors: &mut [Tensor]) -> Result<(), CollectiveError> {
        (**self).all_reduce_sum(tensors)
    }
    fn broadcast(&self, tensors: &mut [Tensor], root: usize) -> Result<(), CollectiveError> {
        (**self).broadcast(tensors, root)
    }
    fn barrier(&self) -> Result<(), CollectiveError> {
        (**self).barrier()
    }
    fn all_reduce_mean(&self, tensors: &mut [Tensor]) -> Result<(), CollectiveError> {
        (**self).all_reduce_mean(tensors)
    }
}

/// Default bucket size of [`all_reduce_buckets`]: 25 MiB, DistributedDataParallel's default.
pub const DEFAULT_BUCKET_BYTES: usize = 25 << 20;

/// All-reduce (sum) `tensors` in buckets of at most `bucket_bytes` (a tensor larger than that is
/// a bucket of its own), one collective per bucket, as DistributedDataParallel reduces
/// gradients. Consecutive tensors of one dtype and device share a bucket.
pub fn all_reduce_buckets(
    c: &dyn Collective,
    tensors: &mut [Tensor],
    bucket_bytes: usize,
) -> Result<usize, CollectiveError> {
    for_buckets(c, tensors, bucket_bytes, |c, b| c.all_reduce_sum(b))
}

/// [`Collective::broadcast`] from `root` in buckets, as [`all_reduce_buckets`] groups them (a
/// list may mix dtypes and devices).
pub fn broadcast_buckets(
    c: &dyn Collective,
    tensors: &mut [Tensor],
    root: usize,
    bucket_bytes: usize,
) -> Result<usize, CollectiveError> {
    for_buckets(c, tensors, bucket_bytes, |c, b| c.broadcast(b, root))
}

fn for_buckets(
    c: &dyn Collective,
    tensors: &mut [Tensor],
    bucket_bytes: usize,
    op: impl Fn(&dyn Collective, &mut [Tensor]) -> Result<(), CollectiveError>,
) -> Result<usize, CollectiveError> {
    if c.world_size() == 1 || tensors.is_empty() {
        return Ok(0);
    }
    let mut buckets = 0;
    let mut start = 0;
    while start < tensors.len() {
        let (kind, device) = (tensors[start].kind(), tensors[start].device());
        let mut bytes = 0usize;
        let mut end = start;
        while end < tensors.len()
            && tensors[end].kind() == kind
            && tensors[end].device() == device
            && (end == start || bytes + nbytes(&tensors[end]) <= bucket_bytes)
        {
            bytes += nbytes(&tensors[end]);
            end += 1;
        }
        op(c, &mut tensors[start..end])?;
        buckets += 1;
        start = end;
    }
    Ok(buckets)
}

fn nbytes(t: &Tensor) -> usize {
    t.numel() * t.kind().elt_size_in_bytes()
}

/// Every rank's `bytes`, indexed by rank (two all-reduces: the lengths, then the zero-padded
/// rows; a sum with zeros is exact). For small payloads such as per-step metrics.
pub fn all_gather_bytes(c: &dyn Collective, bytes: &[u8]) -> Result<Vec<Vec<u8>>, CollectiveError> {
    let (world, rank) = (c.world_size(), c.rank());
    if world == 1 {
        return Ok(vec![bytes.to_vec()]);
    }
    let cpu = (tch::Kind::Int64, tch::Device::Cpu);
    let mut lens = vec![Tensor::zeros([world as i64], cpu)];
    let _ = lens[0].get(rank as i64).f_fill_(bytes.len() as i64)?;
    c.all_reduce_sum(&mut lens)?;
    let lens = Vec::<i64>::try_from(&lens[0])?;
    let width = lens.iter().copied().max().unwrap_or(0).max(1);
    let mut rows = vec![Tensor::zeros([world as i64, width], (tch::Kind::Uint8, tch::Device::Cpu))];
    if !bytes.is_empty() {
        rows[0]
            .get(rank as i64)
            .narrow(0, 0, bytes.len() as i64)
            .f_copy_(&Tensor::from_slice(bytes))?;
    }
    c.all_reduce_sum(&mut rows)?;
    let flat = Vec::<u8>::try_from(&rows[0].reshape([-1]))?;
    Ok(lens
        .iter()
        .enumerate()
        .map(|(r, &n)| flat[r * width as usize..r * width as usize + n as usize].to_vec())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_process_is_the_identity() {
        let c = SingleProcess;
        let mut ts = vec![Tensor::from_slice(&[1.0f32, -2.0]), Tensor::from_slice(&[3.0f64])];
        c.all_reduce_sum(&mut ts).unwrap();
        c.all_reduce_mean(&mut ts).unwrap();
        c.broadcast(&mut ts, 0).unwrap();
        c.barrier().unwrap();
        assert_eq!(Vec::<f32>::try_from(&ts[0]).unwrap(), vec![1.0, -2.0]);
        assert_eq!(Vec::<f64>::try_from(&ts[1]).unwrap(), vec![3.0]);
        assert_eq!((c.rank(), c.world_size(), c.is_main()), (0, 1, true));
    }

    #[test]
    fn helpers_are_free_in_a_world_of_one() {
        let mut ts = vec![Tensor::from_slice(&[1.0f32])];
        assert_eq!(all_reduce_buckets(&SingleProcess, &mut ts, 1).unwrap(), 0);
        assert_eq!(all_gather_bytes(&SingleProcess, b"abc").unwrap(), vec![b"abc".to_vec()]);
    }

    #[test]
    fn single_process_rejects_a_foreign_root() {
        let err = SingleProcess.broadcast(&mut [], 1).unwrap_err();
        assert!(err.to_string().contains("root rank 1 outside a world of 1"), "{err}");
    }

    #[test]
    fn peer_failure_names_the_dead_rank() {
        let err = CollectiveError::PeerFailed {
            rank: 0,
            world: 2,
            op: CollectiveOp::AllReduce,
            failed_peers: vec![1],
            cause: "Connection closed by peer".into(),
        };
        assert_eq!(
            err.to_string(),
            "rank 0 of 2: all-reduce failed (rank 1 gone): Connection closed by peer"
        );
    }
}
