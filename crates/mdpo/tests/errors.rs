//! Errors at the model seam: a downstream model's own error type comes back through
//! `Trainer::step` as the source of `MdpoError::Model`, and a libtorch out-of-memory panic inside
//! a step becomes `MdpoError::OutOfMemory`, after which the run resumes with a smaller micro-batch
//! and the same global batch.
mod common;

use common::{config, synthetic, TinyBatch, TinyLm};
use mdpo::{MdpoConfig, MdpoError, PreferenceExample, PreferenceModel, Reference, ResponseLogps, Trainer};
use std::cell::Cell;
use std::ops::Range;
use tch::{nn, Tensor};

/// The downstream model's own error.
#[derive(Debug, PartialEq, thiserror::Error)]
enum DeviceError {
    #[error("device {device} lost (code {code})")]
    Lost { device: usize, code: i32 },
    #[error("{0}")]
    Inner(String),
}

/// TinyLm behind a downstream error type, failing on demand: `fail` makes `response_logps`
/// return `DeviceError::Lost`; a batch larger than `max_batch` panics with libtorch's CUDA
/// out-of-memory text, as tch's panicking ops do.
struct Flaky {
    inner: TinyLm,
    fail: Cell<bool>,
    max_batch: Cell<usize>,
}

fn flaky(seed: i64) -> Flaky {
    Flaky { inner: TinyLm::new(seed, false, 0.0), fail: Cell::new(false), max_batch: Cell::new(usize::MAX) }
}

const OOM: &str = "called `Result::unwrap()` on an `Err` value: Torch(\"CUDA out of memory. Tried to allocate \
                   2.00 GiB. GPU 0 has a total capacity of 79.15 GiB of which 1.02 GiB is free.\nException raised \
                   from malloc at /pytorch/c10/cuda/CUDACachingAllocator.cpp:1000\")";

impl PreferenceModel for Flaky {
    type Batch = TinyBatch;
    type Error = DeviceError;

    fn encode(&self, examples: &[PreferenceExample]) -> Result<TinyBatch, DeviceError> {
        self.inner.encode(examples).map_err(|e| DeviceError::Inner(e.to_string()))
    }
    fn batch_len(&self, batch: &TinyBatch) -> usize {
        self.inner.batch_len(batch)
    }
    fn response_logps(&self, batch: &TinyBatch, levels: Range<usize>, train: bool) -> Result<ResponseLogps, DeviceError> {
        if self.fail.get() {
            return Err(DeviceError::Lost { device: 0, code: 7 });
        }
        if self.inner.batch_len(batch) > self.max_batch.get() {
            panic!("{OOM}");
        }
        self.inner.response_logps(batch, levels, train).map_err(|e| DeviceError::Inner(e.to_string()))
    }
    fn trainable_vars(&self) -> &nn::VarStore {
        self.inner.trainable_vars()
    }
    fn encoding_fingerprint(&self) -> String {
        self.inner.encoding_fingerprint()
    }
    fn set_round_weight(&mut self, coef: f64) -> mdpo::Result<()> {
        self.inner.set_round_weight(coef)
    }
}

#[test]
fn a_downstream_models_error_comes_back_through_step_with_its_source() {
    let d = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(flaky(1), Reference::Model(flaky(2)), synthetic(4, 3), config(d.path(), 3)).unwrap();
    t.step().unwrap();
    t.policy().fail.set(true);
    let e = t.step().unwrap_err();
    assert!(matches!(e, MdpoError::Model(_)), "{e:?}");
    let source = std::error::Error::source(&e).expect("the model's error is the source");
    assert_eq!(source.downcast_ref::<DeviceError>(), Some(&DeviceError::Lost { device: 0, code: 7 }));
    assert!(e.to_string().contains("device 0 lost (code 7)"), "{e}");
    // The failed step did not count.
    assert_eq!(t.state().step, 1);
}

fn close(a: &[(String, Tensor)], b: &[(String, Tensor)]) {
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(b) {
        assert_eq!(na, nb);
        let d = (ta - tb).abs().max().double_value(&[]);
        assert!(d <= 1e-10 * ta.abs().max().double_value(&[]), "{na}: max diff {d}");
    }
}

#[test]
fn out_of_memory_names_the_micro_batch_and_the_run_resumes_with_a_smaller_one() {
    let data = synthetic(4, 3);
    let cfg = |dir: &std::path::Path, batch: usize, accum: usize| MdpoConfig {
        batch_size: batch,
        grad_accum: accum,
        max_steps: Some(4),
        ..config(dir, 3)
    };
    // Uninterrupted: micro-batch 2, no accumulation.
    let d_full = tempfile::tempdir().unwrap();
    let mut full = Trainer::new(flaky(3), Reference::Model(flaky(4)), data.clone(), cfg(d_full.path(), 2, 1)).unwrap();
    full.train().unwrap();

    // Same run; from step 3 the device no longer fits a micro-batch of 2.
    let d = tempfile::tempdir().unwrap();
    {
        let mut t = Trainer::new(flaky(3), Reference::Model(flaky(4)), data.clone(), cfg(d.path(), 2, 1)).unwrap();
        t.step().unwrap();
        t.step().unwrap();
        t.save_checkpoint().unwrap();
        t.policy().max_batch.set(1);
        let e = t.step().unwrap_err();
        assert!(matches!(e, MdpoError::OutOfMemory { micro_batch: 2, global_batch: 2, .. }), "{e:?}");
        let msg = e.to_string();
        for needle in ["micro-batch of 2", "--batch-size", "--grad-accum", "--grad-checkpoint", "CUDA out of memory"] {
            assert!(msg.contains(needle), "{needle:?} missing: {msg}");
        }
    }
    // Another global batch is a changed setting ...
    let small = || {
        let m = flaky(3);
        m.max_batch.set(1);
        m
    };
    let e = Trainer::new(small(), Reference::Model(flaky(4)), data.clone(), cfg(d.path(), 1, 1)).err().unwrap();
    assert!(matches!(&e, MdpoError::ConfigChanged { field, .. } if field.starts_with("global batch")), "{e}");
    // ... the same global batch as micro-batch 1 × 2 accumulation steps resumes and follows the
    // uninterrupted run.
    let mut t = Trainer::new(small(), Reference::Model(flaky(4)), data, cfg(d.path(), 1, 2)).unwrap();
    assert_eq!(t.state().step, 2);
    assert_eq!(t.train().unwrap().steps, 4);
    close(&full.trainable(), &t.trainable());
}
