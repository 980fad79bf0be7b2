//! Issue-13 failures on the trainer side, each reproduced here: a run killed before its first
//! periodic checkpoint restarted from other initial weights; a resume silently took changed
//! settings; an all-NaN run ended "successfully".
mod common;

use common::{assert_equal, config, synthetic, TinyLm};
use mdpo::{MdpoConfig, MdpoError, PreferenceExample, Reference, Trainer};
use std::path::Path;

fn cfg(dir: &Path) -> MdpoConfig {
    MdpoConfig { max_steps: Some(3), save_every: 500, ..config(dir, 3) }
}

/// A trainer of `TinyLm::new(policy)` against the frozen `TinyLm::new(reference)`.
fn trainer(policy: i64, reference: i64, data: &[PreferenceExample], c: MdpoConfig) -> mdpo::Result<Trainer<TinyLm>> {
    Trainer::new(TinyLm::new(policy, false, 0.0), Reference::Model(TinyLm::new(reference, false, 0.0)), data.to_vec(), c)
}

/// The first checkpoint holds the initial state: a run killed before step 1 (here: dropped) and
/// rerun with a model whose fresh initialisation differs (as a LoRA init from an unseeded global
/// generator would) continues the original run.
#[test]
fn a_kill_before_the_first_step_resumes_the_same_run() {
    let data = synthetic(4, 3);
    let d_full = tempfile::tempdir().unwrap();
    let mut full = trainer(1, 5, &data, cfg(d_full.path())).unwrap();
    full.train().unwrap();

    let d = tempfile::tempdir().unwrap();
    drop(trainer(1, 5, &data, cfg(d.path())).unwrap());
    assert!(d.path().join("checkpoints/step-00000000/trainable.safetensors").is_file());
    let mut rerun = trainer(2, 5, &data, cfg(d.path())).unwrap();
    assert_eq!(rerun.state().step, 0);
    rerun.train().unwrap();
    assert_equal(&full.trainable(), &rerun.trainable());
}

/// A rerun with another lr or β is refused, naming the setting, unless `override_config`; the
/// override is logged in metrics.jsonl.
#[test]
fn resume_refuses_a_changed_setting_unless_overridden() {
    let data = synthetic(4, 3);
    let d = tempfile::tempdir().unwrap();
    let mut t = trainer(1, 5, &data, cfg(d.path())).unwrap();
    t.step().unwrap();
    t.save_checkpoint().unwrap();
    drop(t);
    let rerun = |c: MdpoConfig| trainer(1, 5, &data, c);
    let e = rerun(MdpoConfig { lr: 2e-2, ..cfg(d.path()) }).err().unwrap();
    assert!(matches!(&e, MdpoError::ConfigChanged { field, saved, current, .. } if field == "lr" && saved == "0.01" && current == "0.02"), "{e}");
    assert!(e.to_string().contains("--override-config"), "{e}");
    let mut beta = cfg(d.path());
    beta.loss.beta = 0.5;
    let e = rerun(beta).err().unwrap();
    assert!(matches!(&e, MdpoError::ConfigChanged { field, .. } if field == "loss.beta"), "{e}");
    // Settings that do not change the optimisation may change.
    let t = rerun(MdpoConfig { save_every: 7, plots: true, level_chunk: Some(1), ..cfg(d.path()) }).unwrap();
    assert_eq!(t.state().step, 1);
    drop(t);
    // With the override the run continues, and says so in its log.
    let mut t = rerun(MdpoConfig { lr: 2e-2, override_config: true, ..cfg(d.path()) }).unwrap();
    assert_eq!(t.state().step, 1);
    t.step().unwrap();
    let metrics = d.path().join("metrics.jsonl");
    let events = mdpo::metrics::read_events(&metrics).unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["event"], "override_config");
    assert_eq!(events[0]["step"], 1);
    assert_eq!(events[0]["changes"][0]["field"], "lr");
    let steps: Vec<usize> = mdpo::trainer::read_metrics(&metrics).unwrap().iter().map(|r| r.step).collect();
    assert_eq!(steps, vec![1, 2]);
}

/// Every step non-finite: an error naming the first bad step's examples, not a summary.
#[test]
fn a_run_whose_every_step_is_non_finite_is_an_error() {
    let mut data = synthetic(4, 3);
    for (i, ex) in data.iter_mut().enumerate() {
        ex.id = format!("nan-{i}");
    }
    let d = tempfile::tempdir().unwrap();
    let c = MdpoConfig { batch_size: 4, max_steps: Some(2), max_skipped_steps: 10, ..cfg(d.path()) };
    let mut t = trainer(1, 1, &data, c).unwrap();
    let e = t.train().unwrap_err();
    match &e {
        MdpoError::NonFiniteRun { steps: 2, skipped: 2, last_skipped: true, first_step: 1, first_ids } => {
            let mut ids = first_ids.clone();
            ids.sort();
            assert_eq!(ids, ["nan-0", "nan-1", "nan-2", "nan-3"]);
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("nan-0"), "{e}");
}

/// The last step non-finite (NaN final loss): an error too, naming that step's examples.
#[test]
fn a_run_whose_final_loss_is_nan_is_an_error() {
    let mut data = synthetic(4, 3);
    // Step 2 takes the examples at positions 2 and 3 of epoch 0's order.
    let order = mdpo::trainer::epoch_permutation(4, MdpoConfig::default().seed, 0);
    data[order[3]].id = "nan-last".into();
    let d = tempfile::tempdir().unwrap();
    let c = MdpoConfig { max_steps: Some(2), ..cfg(d.path()) };
    let mut t = trainer(1, 1, &data, c.clone()).unwrap();
    let e = t.train().unwrap_err();
    match &e {
        MdpoError::NonFiniteRun { steps: 2, skipped: 1, last_skipped: true, first_step: 2, first_ids } => {
            assert!(first_ids.contains(&"nan-last".to_string()) && first_ids.contains(&data[order[2]].id), "{first_ids:?}");
        }
        other => panic!("{other:?}"),
    }
    // A rerun resumes at the end and reports the same failure instead of succeeding.
    drop(t);
    let mut t = trainer(1, 1, &data, c).unwrap();
    assert!(matches!(t.train(), Err(MdpoError::NonFiniteRun { first_step: 2, .. })));
}
