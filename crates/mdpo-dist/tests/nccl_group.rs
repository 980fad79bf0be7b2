//! The NCCL process group (docs/distributed.md): where build.rs compiled it (libtorch_cuda and
//! the CUDA headers found), asking for it reaches c10d's `ProcessGroupNCCL` in libtorch_cuda.
//! Without a GPU that constructor refuses, and the refusal must come back as a typed rendezvous
//! error naming the NCCL group, not as `Unavailable` (which would mean it was never compiled) nor
//! as a libtorch abort. Where it was left out, the error is `Unavailable` with build.rs's reason.
use std::time::Duration;

use mdpo_dist::{Backend, CollectiveError, DistConfig, ProcessGroup, Rendezvous};

#[test]
fn nccl_group_reaches_libtorch_cuda_or_says_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let config = DistConfig {
        rank: 0,
        world_size: 1,
        local_rank: 0,
        rendezvous: Rendezvous::File(dir.path().join("store")),
        backend: Backend::Nccl,
        timeout: Duration::from_secs(20),
        gloo_hostname: None,
    };
    let result = ProcessGroup::new(&config);
    if !mdpo_dist::HAS_NCCL {
        assert!(
            matches!(&result, Err(CollectiveError::Unavailable { backend, .. }) if backend == "nccl"),
            "NCCL left out at build time, yet: {:?}",
            result.as_ref().err()
        );
        return;
    }
    match result {
        Ok(_) => assert!(tch::Cuda::is_available(), "an NCCL group without a GPU"),
        Err(CollectiveError::Rendezvous { cause, .. }) => {
            assert!(
                !tch::Cuda::is_available(),
                "NCCL failed with a GPU present: {cause}"
            );
            assert!(cause.contains("nccl process group"), "{cause}");
            eprintln!("no GPU, as expected: {cause}");
        }
        Err(e) => panic!("NCCL compiled in, but: {e}"),
    }
}
