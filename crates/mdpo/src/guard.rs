//! Model calls inside a step: a device out-of-memory becomes [`MdpoError::OutOfMemory`] instead of
//! an abort.
//!
//! tch's tensor operations panic on a libtorch error, so a CUDA out-of-memory in the forward or
//! backward of a micro-batch unwinds through the trainer. [`catch_oom`] catches that unwind and,
//! when the message is libtorch's allocation failure, returns a typed error naming the micro-batch
//! and what to lower. Every other panic is resumed unchanged: a bug stays a bug.
use crate::{MdpoError, Result};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

/// Where a model call happens, for the error message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Site {
    pub stage: &'static str,
    pub micro_batch: usize,
    pub global_batch: usize,
}

/// Whether a libtorch message reports a failed allocation (CUDA's caching allocator or the CPU
/// allocator).
pub fn is_out_of_memory(message: &str) -> bool {
    message.contains("out of memory") || message.contains("can't allocate memory")
}

fn oom(site: Site, message: &str) -> MdpoError {
    // libtorch appends a C++ backtrace: keep the first line.
    let line = message.lines().find(|l| is_out_of_memory(l)).unwrap_or(message);
    let line: String = line.chars().take(400).collect();
    MdpoError::OutOfMemory {
        stage: site.stage,
        micro_batch: site.micro_batch,
        global_batch: site.global_batch,
        message: line.trim().to_string(),
    }
}

/// Runs `f`; a panic or a model error carrying libtorch's out-of-memory message becomes
/// [`MdpoError::OutOfMemory`] for `site`.
pub(crate) fn catch_oom<T>(site: Site, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Err(e @ (MdpoError::Model(_) | MdpoError::Torch(_)))) if is_out_of_memory(&e.to_string()) => {
            Err(oom(site, &e.to_string()))
        }
        Ok(r) => r,
        Err(payload) => {
            let text = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied());
            match text {
                Some(m) if is_out_of_memory(m) => Err(oom(site, m)),
                _ => resume_unwind(payload),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SITE: Site = Site { stage: "step 3", micro_batch: 2, global_batch: 16 };

    #[test]
    fn a_libtorch_oom_panic_becomes_a_typed_error() {
        let text = "called `Result::unwrap()` on an `Err` value: Torch(\"CUDA out of memory. Tried to allocate \
                    20.00 GiB. GPU 0 has a total capacity of 139.81 GiB\nException raised from malloc at ...\")";
        let e = catch_oom::<()>(SITE, || panic!("{text}")).unwrap_err();
        assert!(matches!(e, MdpoError::OutOfMemory { micro_batch: 2, global_batch: 16, .. }), "{e}");
        let msg = e.to_string();
        for needle in ["micro-batch of 2", "--batch-size", "--grad-accum", "--grad-checkpoint", "Tried to allocate"] {
            assert!(msg.contains(needle), "{needle:?} missing from {msg}");
        }
        assert!(!msg.contains("Exception raised"), "backtrace kept: {msg}");
    }

    #[test]
    fn other_panics_are_resumed() {
        let r = catch_unwind(|| catch_oom::<()>(SITE, || panic!("index out of bounds")));
        assert!(r.is_err());
    }
}
