//! Preference training (AMP §3.2, MDPO Eq. 7; DPO and the SFT control as baselines): every
//! variant from the base once per seed, each trained model on the benchmark, and the
//! paired-bootstrap intervals of every variant against the SFT control.
use super::eval::evaluate;
use super::experts::ExpertEvaluation;
use super::results::{claim_counts, pooled_counts, round_counts, Curve, EvalResult, BASE_ROW, CONTROL_ROW};
use super::run::{sft_examples, DemoRun, WorldData};
use super::{engine, read_json, stage, stats, write_json, DemoConfig, Result, VariantKind};
use mdpo::loss::LossConfig;
use mdpo::MdpoConfig;
use std::collections::BTreeMap;

/// What preference training produced.
pub(super) struct Trained {
    /// variant → seed → benchmark results (the untouched base is the [`BASE_ROW`] row).
    pub results: BTreeMap<String, BTreeMap<u64, EvalResult>>,
    /// variant → seed → training curve (step, loss, reward accuracy).
    pub curves: BTreeMap<String, BTreeMap<u64, Curve>>,
    /// Per MDPO variant with an anchor: gradient norms at the base of the anchor, the pair terms
    /// and the whole loss on one batch.
    pub anchor_gradients: BTreeMap<String, (f64, f64, f64)>,
}

/// Stages `anchor <variant>`, `train <variant> s<seed>` and `eval <variant>-s<seed>` (docs/demo.md,
/// "Controls and variants"):
/// * per preference variant whose loss has an anchor, the anchor's share of the gradient at the
///   base on the first batch (`data/anchor/<variant>.json`);
/// * per variant and seed, `mdpo`'s trainer from the base: MDPO / DPO on the variant's AMP file
///   (AMP §3.2), or the SFT control on the standard responses of `world/pref.json` with the same
///   steps (`train/<variant>/seed-<s>/`: checkpoints, `metrics.jsonl`, `model/`); keyed by the
///   dataset's key, the trainer configuration, the base's key and the variant's kind;
/// * each trained model on the benchmark ([`evaluate`], `eval/<variant>-s<seed>/`).
pub(super) fn train_variants(run: &mut DemoRun, world: &WorldData, experts: &ExpertEvaluation) -> Result<Trained> {
    let seeds = run.seeds.clone();
    let (cfg, paths, st) = run.parts();
    let experts = &experts.experts;
    let base_dir = engine::model_dir(&paths.expert(&cfg.base));
    let mut results: BTreeMap<String, BTreeMap<u64, EvalResult>> = BTreeMap::new();
    let mut curves: BTreeMap<String, BTreeMap<u64, Curve>> = BTreeMap::new();
    let base_eval = experts.iter().find(|e| e.name == cfg.base).expect("validated").eval.clone();
    for &seed in &seeds {
        results.entry(BASE_ROW.into()).or_default().insert(seed, base_eval.clone());
    }
    let pref_standard = sft_examples(&paths.world(), "pref.json")?;
    let mut anchor_gradients = BTreeMap::new();
    for v in &cfg.variants {
        let data = paths.data().join("variants").join(&v.name).join("amp.json");
        if v.kind == VariantKind::Preference && v.loss.anchor_weight != 0.0 {
            // The anchor's share of the gradient at the base, on the first batch.
            let out = paths.data().join("anchor").join(format!("{}.json", v.name));
            let config = MdpoConfig {
                levels: v.levels,
                loss: LossConfig { beta: cfg.beta, ..v.loss.clone() },
                lr: cfg.pref.lr,
                batch_size: cfg.pref.batch_size,
                seed: 0,
                grad_accum: 1,
                plots: false,
                ..MdpoConfig::default()
            };
            let key = (st.key_of(&format!("dataset {}", v.name)), &config, st.key_of(&format!("expert {}", cfg.base)));
            st.run(&format!("anchor {}", v.name), &key, std::slice::from_ref(&out), |_| {
                let opts = mdpo::data::LoadOptions { levels: Some(v.levels), image_root: Some(paths.images()), check_images: true, allow_outside_root: false };
                let mut examples = mdpo::data::load_amp_file(&data, &opts)?;
                examples.truncate(cfg.pref.batch_size);
                let n = engine::anchor_gradient_norms(&base_dir, &paths.tokenizer(), examples, config.clone(), &paths.root.join("train").join("anchor-work"))?;
                write_json(&out, &n)
            })?;
            anchor_gradients.insert(v.name.clone(), read_json::<(f64, f64, f64)>(&out)?);
        }
        for &seed in &seeds {
            let run_dir = paths.train(&v.name, seed);
            let config = MdpoConfig {
                levels: v.levels,
                loss: LossConfig { beta: cfg.beta, ..v.loss.clone() },
                lr: cfg.pref.lr,
                warmup_steps: cfg.pref.warmup_steps,
                batch_size: cfg.pref.batch_size,
                max_steps: Some(cfg.pref.steps),
                seed,
                grad_accum: 1,
                save_every: 0,
                keep_checkpoints: 1,
                resume: true,
                output_dir: run_dir.clone(),
                plots: false,
                ..MdpoConfig::default()
            };
            // the key leaves the output directory out: it follows from the variant and the seed
            // (the stage's name), so a run directory that is moved keeps its trained models
            let key_config = MdpoConfig { output_dir: Default::default(), ..config.clone() };
            let key = (st.key_of(&format!("dataset {}", v.name)), &key_config, st.key_of(&format!("expert {}", cfg.base)), v.kind);
            st.run(&format!("train {} s{seed}", v.name), &key, &[engine::model_dir(&run_dir)], |name| {
                stage::work_dir(&run_dir, &key)?;
                match v.kind {
                    VariantKind::SftControl => {
                        engine::train_sft_control(name, &base_dir, &paths.tokenizer(), pref_standard.clone(), config.clone())?;
                    }
                    VariantKind::Preference => {
                        let opts = mdpo::data::LoadOptions { levels: Some(v.levels), image_root: Some(paths.images()), check_images: true, allow_outside_root: false };
                        let examples = mdpo::data::load_amp_file(&data, &opts)?;
                        engine::train_preference(name, &base_dir, &paths.tokenizer(), examples, config.clone())?;
                    }
                }
                Ok(())
            })?;
            let rows = mdpo::trainer::read_metrics(&run_dir.join("metrics.jsonl"))?;
            curves
                .entry(v.name.clone())
                .or_default()
                .insert(seed, rows.iter().map(|r| (r.step, r.loss, r.reward_accuracy)).collect());
            let r = evaluate(st, paths, cfg, world, &format!("{}-s{seed}", v.name), &engine::model_dir(&run_dir))?;
            results.entry(v.name.clone()).or_default().insert(seed, r);
        }
    }
    Ok(Trained { results, curves, anchor_gradients })
}

/// Paired-bootstrap intervals (docs/demo.md) of every results row's difference from the SFT
/// control — MRHal round hallucination rate and claim hallucination rate — with the benchmark
/// items pooled over seeds; empty without a control row.
pub(super) fn control_intervals(cfg: &DemoConfig, results: &BTreeMap<String, BTreeMap<u64, EvalResult>>) -> BTreeMap<String, (stats::Interval, stats::Interval)> {
    let mut intervals = BTreeMap::new();
    if let Some(control) = results.get(CONTROL_ROW) {
        let pooled = |runs: &BTreeMap<u64, EvalResult>, f| pooled_counts(runs.values(), f);
        let (c_round, c_claim) = (pooled(control, round_counts), pooled(control, claim_counts));
        for (name, runs) in results {
            let r = stats::paired_bootstrap(&pooled(runs, round_counts), &c_round, cfg.bootstrap, 0.95, cfg.world.seed);
            let c = stats::paired_bootstrap(&pooled(runs, claim_counts), &c_claim, cfg.bootstrap, 0.95, cfg.world.seed);
            if let (Some(r), Some(c)) = (r, c) {
                intervals.insert(name.clone(), (r, c));
            }
        }
    }
    intervals
}
