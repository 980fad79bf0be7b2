//! Bit-exact resume, in its own test binary (= its own process): the trainer re-seeds torch's
//! global RNG for dropout, which tests running in parallel threads would otherwise share.
mod common;

use common::{assert_equal, config, synthetic, TinyLm};
use mdpo::{MdpoConfig, Reference, Trainer};
use std::path::Path;



#[test]
/// Train 7 steps uninterrupted vs 4 steps, checkpoint, drop everything, fresh trainer, resume
/// 3 steps: identical weights (bit for bit), with dropout, weight decay, cosine schedule and an
/// epoch boundary in between.
fn resume_is_bit_exact() {
    let data = synthetic(5, 3);
    let cfg = |dir: &Path| MdpoConfig {
        schedule: mdpo::optim::Schedule::Cosine,
        adamw: mdpo::optim::AdamWConfig { weight_decay: 0.1, ..Default::default() },
        max_grad_norm: Some(0.5),
        max_steps: Some(7),
        ..config(dir, 3)
    };
    let model = || TinyLm::new(7, false, 0.2);
    let d_full = tempfile::tempdir().unwrap();
    let mut full = Trainer::new(model(), Reference::Model(TinyLm::new(7, false, 0.0)), data.clone(), cfg(d_full.path())).unwrap();
    for _ in 0..7 {
        full.step().unwrap();
    }
    let d = tempfile::tempdir().unwrap();
    {
        let mut part = Trainer::new(model(), Reference::Model(TinyLm::new(7, false, 0.0)), data.clone(), cfg(d.path())).unwrap();
        for _ in 0..4 {
            part.step().unwrap();
        }
        let ck = part.save_checkpoint().unwrap();
        assert!(ck.ends_with("step-00000004"));
        // one step past the checkpoint that is "lost" in the crash
        part.step().unwrap();
    }
    let mut resumed = Trainer::new(model(), Reference::Model(TinyLm::new(7, false, 0.0)), data, cfg(d.path())).unwrap();
    assert_eq!(resumed.state().step, 4);
    let summary = resumed.train().unwrap();
    assert_eq!(summary.steps, 7);
    assert_equal(&full.trainable(), &resumed.trainable());
    // the metrics log has exactly one row per step, no duplicates from the lost step
    let rows = mdpo::trainer::read_metrics(&d.path().join("metrics.jsonl")).unwrap();
    assert_eq!(rows.iter().map(|r| r.step).collect::<Vec<_>>(), (1..=7).collect::<Vec<_>>());
    let full_rows = mdpo::trainer::read_metrics(&d_full.path().join("metrics.jsonl")).unwrap();
    assert_eq!(full_rows[6].loss, rows[6].loss);
}

