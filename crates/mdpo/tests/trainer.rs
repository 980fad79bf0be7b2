//! Trainer behaviour on a tiny f64 byte LM (tests/common): gradient accumulation, level chunking,
//! bit-exact resume, the reference cache key, the non-finite guard, SFT, logs and plots.
mod common;

use common::{assert_equal, config, synthetic, TinyLm};
use mdpo::{MdpoConfig, MdpoError, Reference, Trainer};
use tch::Tensor;


fn assert_close(a: &[(String, Tensor)], b: &[(String, Tensor)], tol: f64) {
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(b) {
        assert_eq!(na, nb);
        assert!(ta.defined() && tb.defined(), "{na}: gradient missing");
        let d = (ta - tb).abs().max().double_value(&[]);
        let s = ta.abs().max().double_value(&[]);
        assert!(d <= tol * s.max(1e-30), "{na}: max diff {d} (scale {s})");
        assert!(s > 0.0, "{na}: zero gradient, the test would be vacuous");
    }
}


#[test]
fn grad_accum_2x1_equals_1x2() {
    let data = synthetic(4, 3);
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let mut a = Trainer::new(
        TinyLm::new(1, false, 0.0),
        Reference::Model(TinyLm::new(2, false, 0.0)),
        data.clone(),
        MdpoConfig { batch_size: 1, grad_accum: 2, ..config(d1.path(), 3) },
    )
    .unwrap();
    let mut b = Trainer::new(
        TinyLm::new(1, false, 0.0),
        Reference::Model(TinyLm::new(2, false, 0.0)),
        data,
        MdpoConfig { batch_size: 2, grad_accum: 1, ..config(d2.path(), 3) },
    )
    .unwrap();
    for _ in 0..2 {
        let la = a.step().unwrap();
        let lb = b.step().unwrap();
        assert!((la.loss - lb.loss).abs() < 1e-12, "{} vs {}", la.loss, lb.loss);
        assert!((la.grad_norm - lb.grad_norm).abs() < 1e-12 * lb.grad_norm);
        assert_close(&a.gradients(), &b.gradients(), 1e-12);
        let (ma, mb) = (la.metrics.unwrap(), lb.metrics.unwrap());
        for (pa, pb) in ma.pairs.iter().zip(&mb.pairs) {
            assert!((pa.margin - pb.margin).abs() < 1e-12 && (pa.accuracy - pb.accuracy).abs() < 1e-12);
        }
    }
    assert_close(&a.trainable(), &b.trainable(), 1e-10);
}

#[test]
fn level_chunking_gives_the_same_gradients() {
    let data = synthetic(4, 4);
    let mut grads = Vec::new();
    for chunk in [None, Some(1), Some(3)] {
        let d = tempfile::tempdir().unwrap();
        let mut t = Trainer::new(
            TinyLm::new(3, false, 0.0),
            Reference::Model(TinyLm::new(4, false, 0.0)),
            data.clone(),
            MdpoConfig { level_chunk: chunk, ..config(d.path(), 4) },
        )
        .unwrap();
        let log = t.step().unwrap();
        assert!(log.loss.is_finite());
        grads.push((log.loss, t.gradients()));
    }
    for g in &grads[1..] {
        assert!((g.0 - grads[0].0).abs() < 1e-12);
        assert_close(&g.1, &grads[0].1, 1e-11);
    }
}

#[test]
fn stale_reference_cache_is_refused() {
    let data = synthetic(3, 3);
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("ref.json");
    let cfg = |out: &str| MdpoConfig { ref_cache: Some(cache.clone()), ..config(&d.path().join(out), 3) };
    // First run writes the cache.
    let t = Trainer::new(TinyLm::new(1, false, 0.0), Reference::Model(TinyLm::new(2, false, 0.0)), data.clone(), cfg("a")).unwrap();
    let cached = t.reference_logps().unwrap().shallow_clone();
    drop(t);
    assert!(cache.is_file());
    // Same reference, same data: reused, identical values.
    let t = Trainer::new(TinyLm::new(1, false, 0.0), Reference::Model(TinyLm::new(2, false, 0.0)), data.clone(), cfg("b")).unwrap();
    assert!(t.reference_logps().unwrap().equal(&cached));
    drop(t);
    // Other reference weights.
    let e = Trainer::new(TinyLm::new(1, false, 0.0), Reference::Model(TinyLm::new(3, false, 0.0)), data.clone(), cfg("c"))
        .err()
        .unwrap();
    assert!(matches!(&e, MdpoError::StaleCache { field, .. } if field == "reference weights fingerprint"), "{e}");
    // Other data.
    let mut other = data.clone();
    other[1].responses[2][1].value.push('!');
    let e = Trainer::new(TinyLm::new(1, false, 0.0), Reference::Model(TinyLm::new(2, false, 0.0)), other, cfg("d"))
        .err()
        .unwrap();
    assert!(matches!(&e, MdpoError::StaleCache { field, .. } if field == "data fingerprint"), "{e}");
    // Other token weights (encoding).
    let e = Trainer::new(
        TinyLm::new(1, false, 0.0),
        Reference::Model(TinyLm::new(2, false, 0.0)),
        data.clone(),
        MdpoConfig { round_weight: 0.1, ..cfg("e") },
    )
    .err()
    .unwrap();
    assert!(matches!(&e, MdpoError::StaleCache { field, .. } if field == "encoding fingerprint"), "{e}");
    // A precomputed cache with a wrong declared fingerprint.
    let e = Trainer::new(
        TinyLm::new(1, false, 0.0),
        Reference::Cached { path: cache.clone(), weights_fingerprint: "deadbeef".into() },
        data.clone(),
        cfg("f"),
    )
    .err()
    .unwrap();
    assert!(matches!(e, MdpoError::StaleCache { .. }));
    // ... and with the right one it is used without a reference model.
    let fp = mdpo::fingerprint::var_store(&TinyLm::new(2, false, 0.0).vs, true).unwrap();
    let t = Trainer::new(TinyLm::new(1, false, 0.0), Reference::Cached { path: cache.clone(), weights_fingerprint: fp }, data, cfg("g"))
        .unwrap();
    assert!(t.reference_logps().unwrap().equal(&cached));
}

/// The policy with adapters disabled is the reference; its cache key hashes only the frozen base,
/// so it stays valid after the adapters have been trained (resume).
#[test]
fn adapters_disabled_reference() {
    let data = synthetic(4, 3);
    let d = tempfile::tempdir().unwrap();
    let cfg = MdpoConfig { max_steps: Some(3), ..config(d.path(), 3) };
    let mut t = Trainer::new(TinyLm::new(5, true, 0.0), Reference::PolicyWithoutAdapters, data.clone(), cfg.clone()).unwrap();
    // Reference = base model = the same weights without adapter (zero adapter at start).
    let log = t.step().unwrap();
    let m = log.metrics.unwrap();
    assert!(m.level_rewards.iter().all(|r| r.abs() < 1e-12), "{:?}", m.level_rewards);
    assert_eq!(t.trainable().len(), 1, "only the adapter trains");
    t.step().unwrap();
    t.save_checkpoint().unwrap();
    drop(t);
    let mut t = Trainer::new(TinyLm::new(5, true, 0.0), Reference::PolicyWithoutAdapters, data, cfg).unwrap();
    assert_eq!(t.state().step, 2);
    let log = t.step().unwrap();
    assert!(log.metrics.unwrap().level_rewards.iter().any(|r| r.abs() > 0.0));
}

#[test]
fn non_finite_steps_are_skipped_then_stop() {
    let mut data = synthetic(4, 2);
    data[0].id = "nan-0".into();
    let d = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(
        TinyLm::new(1, false, 0.0),
        Reference::Model(TinyLm::new(1, false, 0.0)),
        data.clone(),
        MdpoConfig { batch_size: 4, max_skipped_steps: 1, precompute_reference: false, ..config(d.path(), 2) },
    )
    .unwrap();
    let before: Vec<_> = t.trainable().into_iter().map(|(n, p)| (n, p.copy())).collect();
    let log = t.step().unwrap();
    assert!(log.skipped && log.skipped_total == 1 && log.loss.is_nan());
    assert_equal(&before, &t.trainable());
    assert_eq!(t.state().step, 1);
    let e = t.step().err().unwrap();
    assert!(matches!(e, MdpoError::NonFinite { skipped: 2, limit: 1, .. }), "{e}");
    // the row of a skipped step is valid JSON (loss: null) and reads back as NaN
    let rows = mdpo::trainer::read_metrics(&d.path().join("metrics.jsonl")).unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows[0].loss.is_nan());
}

#[test]
fn mdpo_training_raises_reward_accuracy_and_writes_logs_and_plots() {
    let data = synthetic(8, 3);
    let d = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(
        TinyLm::new(11, false, 0.0),
        Reference::Model(TinyLm::new(11, false, 0.0)),
        data,
        MdpoConfig { lr: 3e-2, batch_size: 4, epochs: 8, plots: true, ..config(d.path(), 3) },
    )
    .unwrap();
    let s = t.train().unwrap();
    assert_eq!(s.steps, 16);
    let rows = mdpo::trainer::read_metrics(&d.path().join("metrics.jsonl")).unwrap();
    let acc = |r: &mdpo::StepLog| r.reward_accuracy.unwrap();
    assert!(acc(&rows[15]) > 0.9, "final accuracy {}", acc(&rows[15]));
    assert!(rows[15].loss < rows[1].loss);
    let m = rows[15].metrics.as_ref().unwrap();
    assert_eq!(m.pairs.len(), 3);
    assert_eq!(rows[15].level_token_logps.len(), 3);
    for f in ["loss.png", "accuracy.png", "margins.png", "logps.png"] {
        let len = std::fs::metadata(d.path().join("plots").join(f)).unwrap().len();
        assert!(len > 5_000, "{f}: {len} bytes");
    }
    assert!(d.path().join("checkpoints/step-00000016/trainable.safetensors").is_file());
}

#[test]
fn sft_lowers_nll_and_accumulates_by_tokens() {
    let data: Vec<_> = synthetic(4, 1);
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let mut a = Trainer::sft(TinyLm::new(2, false, 0.0), data.clone(), MdpoConfig { batch_size: 1, grad_accum: 4, lr: 5e-2, epochs: 10, ..config(d1.path(), 1) }).unwrap();
    let mut b = Trainer::sft(TinyLm::new(2, false, 0.0), data, MdpoConfig { batch_size: 4, grad_accum: 1, lr: 5e-2, epochs: 10, ..config(d2.path(), 1) }).unwrap();
    let first = a.step().unwrap();
    let lb = b.step().unwrap();
    assert!((first.loss - lb.loss).abs() < 1e-12);
    assert_close(&a.gradients(), &b.gradients(), 1e-12);
    // NLL is the token-mean: about ln(256) for an untrained model
    assert!((first.loss - 256f64.ln()).abs() < 1.0, "{}", first.loss);
    let mut last = first.loss;
    for _ in 0..8 {
        last = a.step().unwrap().loss;
    }
    assert!(last < first.loss - 0.5, "{} -> {last}", first.loss);
}

#[test]
fn config_and_data_mismatches_are_errors() {
    let d = tempfile::tempdir().unwrap();
    let e = Trainer::new(TinyLm::new(1, false, 0.0), Reference::Model(TinyLm::new(1, false, 0.0)), synthetic(2, 3), config(d.path(), 4))
        .err()
        .unwrap();
    assert!(e.to_string().contains("has 3 levels"), "{e}");
    let e = Trainer::new(TinyLm::new(1, false, 0.0), Reference::None, synthetic(2, 3), config(d.path(), 3)).err().unwrap();
    assert!(e.to_string().contains("reference_free"), "{e}");
    let json = r#"{"levels": 3, "loss": {"beta": 0.2, "pairs": {"explicit": [[0, 1], [1, 2]]}}}"#;
    let p = d.path().join("c.json");
    std::fs::write(&p, json).unwrap();
    let c = MdpoConfig::from_file(&p).unwrap();
    assert_eq!(c.loss.pairs, mdpo::loss::PairSet::Explicit(vec![(0, 1), (1, 2)]));
    std::fs::write(&p, r#"{"levels": 3, "betta": 1}"#).unwrap();
    assert!(MdpoConfig::from_file(&p).unwrap_err().to_string().contains("betta"));
}


/// Every loss variant runs through the trainer (mean log-probs, listwise, reference-free, hinge,
/// explicit pairs) and lowers its own loss on a fixed batch.
#[test]
fn loss_variants_train() {
    use mdpo::loss::{LossConfig, PairLoss, PairSet};
    let data = synthetic(4, 3);
    let variants: Vec<(LossConfig, bool)> = vec![
        (LossConfig::ipo(0.5), false),
        (LossConfig::pro(), true),
        (LossConfig { loss: PairLoss::Hinge, ..LossConfig::mdpo() }, false),
        (LossConfig { pairs: PairSet::Explicit(vec![(0, 1), (1, 2)]), ..LossConfig::dpo() }, false),
        (LossConfig { objective: mdpo::loss::Objective::PlackettLuce, ..LossConfig::mdpo() }, false),
    ];
    for (loss, free) in variants {
        let d = tempfile::tempdir().unwrap();
        let reference = if free { Reference::None } else { Reference::Model(TinyLm::new(9, false, 0.0)) };
        let cfg = MdpoConfig { loss: loss.clone(), batch_size: 4, warmup_steps: 0, lr: 2e-2, ..config(d.path(), 3) };
        let mut t = Trainer::new(TinyLm::new(8, false, 0.0), reference, data.clone(), cfg).unwrap();
        let first = t.step().unwrap().loss;
        let mut last = first;
        for _ in 0..4 {
            last = t.step().unwrap().loss;
        }
        assert!(first.is_finite() && last < first, "{loss:?}: {first} -> {last}");
    }
}

#[test]
fn length_grouped_order_is_a_seeded_permutation_that_pads_less() {
    use mdpo::trainer::{epoch_permutation, length_grouped_permutation, MEGA_BATCH};
    // lengths 10..=200 in a scrambled order, 3 mega-batches and a ragged end
    let n = 3 * MEGA_BATCH * 8 + 13;
    let lens: Vec<usize> = (0..n).map(|i| 10 + (i * 7919) % 191).collect();
    let padded = |order: &[usize]| -> f64 {
        let ex: usize = order.chunks(8).map(|b| b.len() * b.iter().map(|&i| lens[i]).max().unwrap()).sum();
        ex as f64 / lens.iter().sum::<usize>() as f64
    };
    for epoch in 0..3 {
        let g = length_grouped_permutation(&lens, 8, 7, epoch);
        let mut sorted = g.clone();
        sorted.sort();
        assert_eq!(sorted, (0..n).collect::<Vec<_>>(), "every example once");
        assert_eq!(g, length_grouped_permutation(&lens, 8, 7, epoch), "a pure function of (seed, epoch)");
        let plain = epoch_permutation(n, 7, epoch);
        let (pg, pp) = (padded(&g), padded(&plain));
        assert!(pg < 1.05 && pp > 1.3, "executed/real: grouped {pg:.3}, shuffled {pp:.3}");
        // the batches are shuffled: the batch maxima do not run from long to short
        let maxima: Vec<usize> = g.chunks(8).take(MEGA_BATCH).map(|b| b.iter().map(|&i| lens[i]).max().unwrap()).collect();
        assert!(maxima.windows(2).any(|w| w[1] > w[0]), "{maxima:?}");
    }
    assert_ne!(length_grouped_permutation(&lens, 8, 7, 0), length_grouped_permutation(&lens, 8, 7, 1));
    assert_ne!(length_grouped_permutation(&lens, 8, 7, 0), length_grouped_permutation(&lens, 8, 8, 0));
}
