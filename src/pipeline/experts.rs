//! The models the preference data comes from: the shared stage-0 vision tower, the multi-size
//! experts (LLaVA stage 1 captions, then stage 2 instruction tuning) and their quality on the
//! benchmark, and the Incremental Generation chain (AMP §3.1.2).
use super::eval::evaluate;
use super::results::ExpertQuality;
use super::run::{sft_examples, DemoRun, WorldData};
use super::{engine, io_err, read_json, stage, tower, DemoError, RunPaths, TrainSpec};
use super::Result;
use amp_data::Expert;
use amp_world::World;
use mdpo::PreferenceExample;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// The shared vision tower, when the configuration has one.
pub(super) struct Tower {
    /// Its held-out per-cell accuracy (`models/tower/tower_report.json`).
    pub report: Option<tower::TowerReport>,
    /// `models/tower`, frozen into every expert trained from scratch.
    pub frozen: Option<engine::FrozenTower>,
}

/// Stage `tower` (stage 0, docs/demo.md): a ViT trained on the world's per-cell labels of the
/// training images, then frozen for every expert ([`tower::train`]). Reads the world; writes
/// `<run>/models/tower/` (weights, configs, `tower_report.json`). Keyed by the world and the
/// tower's configuration; skipped entirely when the configuration has no tower.
pub(super) fn tower_stage(run: &mut DemoRun, world: &WorldData) -> Result<Tower> {
    let (cfg, paths, st) = run.parts();
    let (world, scenes) = (&world.world, &world.scenes);
    let mut tower_report = None;
    let tower_dir = paths.root.join("models").join("tower");
    if let Some(t) = &cfg.tower {
        let key = (cfg.world_key(), t);
        st.run("tower", &key, &[tower_dir.join(tower::WEIGHTS)], |_| {
            let ids = |split: amp_world::Split| (0..world.len(split)).map(|i| World::id(split, i)).collect::<Vec<_>>();
            let r = tower::train(&paths.world(), &cfg.world, scenes, &ids(amp_world::Split::Train), &ids(amp_world::Split::Bench), t, 7, &tower_dir)?;
            let cls = match (r.presence, r.presence_images) {
                (Some(p), Some(i)) => format!("; colour-shape pairs from the CLS token {p:.3} (images with all right {i:.3})"),
                _ => String::new(),
            };
            eprintln!(
                "[demo] stage-0 tower, held-out per-cell accuracy: occupancy {:.3}, shape {:.3}, colour {:.3}, size {:.3}, all three {:.3}, own cell {}{cls}",
                r.occupancy, r.shape, r.colour, r.size, r.all_attributes, r.position.map_or("-".to_string(), |p| format!("{p:.3}"))
            );
            Ok(())
        })?;
        tower_report = Some(read_json::<tower::TowerReport>(&tower_dir.join("tower_report.json"))?);
    }
    let frozen = cfg.tower.as_ref().map(|t| engine::FrozenTower { dir: tower_dir.clone(), cls: t.presence });
    Ok(Tower { report: tower_report, frozen })
}

/// Stages `expert <name> captions` and `expert <name>`: every expert of the MEG pool (AMP §3.1.1)
/// trained from scratch but for the frozen tower by `mdpo`'s SFT trainer — LLaVA stage 1 on the
/// captions (when configured), then stage 2 instruction tuning on `world/train.json`. Writes
/// `<run>/models/<name>/model` (the caption model under `captions/`, the trainer's checkpoints
/// under `sft/`). Keyed by the world, the expert (its name seeds it; its schedule included) and the keys of the
/// tower and caption stages. Returns the instruction-tuning examples (IG trains on them too).
pub(super) fn expert_stages(run: &mut DemoRun, world: &WorldData, tower: &Tower) -> Result<Vec<PreferenceExample>> {
    let (cfg, paths, st) = run.parts();
    let (vocab, tower_path) = (world.vocab, &tower.frozen);
    let train = sft_examples(&paths.world(), "train.json")?;
    let captions = match cfg.captions {
        Some(_) => sft_examples(&paths.world(), amp_world::dataset::CAPTIONS)?,
        None => Vec::new(),
    };
    for e in &cfg.experts {
        // Seeded by the expert's name, not its place in the list: adding or reordering experts
        // leaves the others' weights (and their cached stages) as they were.
        let offset = name_seed(&e.name);
        let dir = paths.expert(&e.name);
        let scratch =
            engine::Init::Scratch { spec: e.clone(), image_size: cfg.world.image_size as i64, vocab, seed: 1000 + offset as i64, tower: tower_path.clone() };
        let init = match &cfg.captions {
            Some(c) => {
                let c = &e.schedule(c);
                let cdir = dir.join("captions");
                let key = (cfg.world_key(), e, c, st.key_of("tower"));
                st.run(&format!("expert {} captions", e.name), &key, &[engine::model_dir(&cdir)], |name| {
                    stage::work_dir(&cdir, &key)?;
                    engine::train_sft(name, &scratch, &paths.tokenizer(), captions.clone(), c, 3000 + offset, &cdir)?;
                    Ok(())
                })?;
                engine::Init::From(engine::model_dir(&cdir))
            }
            None => scratch,
        };
        let key = (cfg.world_key(), e, &cfg.sft, st.key_of("tower"), st.key_of(&format!("expert {} captions", e.name)));
        st.run(&format!("expert {}", e.name), &key, &[engine::model_dir(&dir)], |name| {
            // The work dir holds the trainer's checkpoints; the caption stage's model stays.
            let work = dir.join("sft");
            stage::work_dir(&work, &key)?;
            engine::train_sft(name, &init, &paths.tokenizer(), train.clone(), &e.schedule(&cfg.sft), 1000 + offset, &work)?;
            let from = engine::model_dir(&work);
            let to = engine::model_dir(&dir);
            if to.exists() {
                std::fs::remove_dir_all(&to).map_err(io_err(&to))?;
            }
            std::fs::rename(&from, &to).map_err(io_err(&from))?;
            Ok(())
        })?;
    }
    Ok(train)
}

/// A seed offset from an expert's name (FNV-1a, folded below 1000).
fn name_seed(name: &str) -> u64 {
    amp_io::rng::fnv1a(amp_io::rng::FNV_OFFSET, name.as_bytes()) % 1000
}

/// The experts on the benchmark: the premise of Multi-size Expert Generation.
pub(super) struct ExpertEvaluation {
    /// Largest first, as configured.
    pub experts: Vec<ExpertQuality>,
    /// Whether the claim hallucination rate falls strictly with size.
    pub hallucination_falls_with_size: bool,
}

/// Stages `eval expert-<name>`: every expert on the benchmark and POPE ([`evaluate`]; writes
/// `<run>/eval/expert-<name>/`), with its parameter count.
pub(super) fn evaluate_experts(run: &mut DemoRun, world: &WorldData) -> Result<ExpertEvaluation> {
    let (cfg, paths, st) = run.parts();
    let mut experts = Vec::new();
    for e in &cfg.experts {
        let dir = engine::model_dir(&paths.expert(&e.name));
        let r = evaluate(st, paths, cfg, world, &format!("expert-{}", e.name), &dir)?;
        experts.push(ExpertQuality { name: e.name.clone(), params: engine::param_count(&dir).unwrap_or(0), eval: r });
    }
    let rates: Vec<f64> = experts.iter().map(|e| e.eval.claim_hallucination_rate()).collect();
    let hallucination_falls_with_size = rates.windows(2).all(|w| w[0] < w[1]);
    Ok(ExpertEvaluation { experts, hallucination_falls_with_size })
}

/// `--experts-only`: write the experts' table to `<run>/experts.txt`, print it, and return the
/// [`DemoError::Stopped`] that ends the run (or the error of writing the table).
pub(super) fn stop_after_experts(paths: &RunPaths, experts: &[ExpertQuality]) -> DemoError {
    let mut table = String::from("expert  params  MRHal score  MRHal hal. rate  claim hal. rate  shape/colour/size right  POPE acc (adv/pop/rand)\n");
    for e in experts {
        let pope: Vec<String> = amp_world::pope::POPE_SPLITS
            .iter()
            .map(|s| format!("{:.3}", e.eval.pope.get(&format!("{s}/accuracy")).copied().unwrap_or(f64::NAN)))
            .collect();
        let g = |k: &str| e.eval.grounding.get(k).copied().unwrap_or(f64::NAN);
        table += &format!(
            "{}  {}  {:.3}  {:.3}  {:.3}  {:.2}/{:.2}/{:.2}  {}\n",
            e.name,
            e.params,
            e.eval.mrhal.get("cumulative_score").copied().unwrap_or(f64::NAN),
            e.eval.mrhal.get("cumulative_hallucination_rate").copied().unwrap_or(f64::NAN),
            e.eval.claim_hallucination_rate(),
            g("shape_accuracy"),
            g("colour_accuracy"),
            g("size_accuracy"),
            pope.join(" / ")
        );
    }
    let path = paths.root.join("experts.txt");
    if let Err(e) = std::fs::write(&path, &table).map_err(io_err(&path)) {
        return e;
    }
    eprint!("{table}");
    DemoError::Stopped { after: "experts".into(), path }
}

/// Stages `ig pretrain` and `ig fine-tune`: Incremental Generation (AMP §3.1.2, Algorithm 1).
/// The pre-trained model M is the base architecture trained on the first
/// `ig_pretrain_fraction` of `train` (`<run>/models/ig/m0`); the fine-tuning set F is the next
/// `ig_finetune_fraction` of the world's `train.json`, split into `ig_parts` cumulative parts,
/// each fine-tuned from M by [`crate::adapters::LlavaFineTuner`] (`<run>/models/ig/stage-i`,
/// resumed by the tuner itself). Returns the IG pool, best first, as (expert name, model dir).
pub(super) fn ig_experts(run: &mut DemoRun, world: &WorldData, tower: &Tower, train: &[PreferenceExample]) -> Result<Vec<(String, PathBuf)>> {
    let resume = run.resume;
    let (cfg, paths, st) = run.parts();
    let (vocab, tower_path) = (world.vocab, &tower.frozen);
    let ig_dir = paths.root.join("models").join("ig");
    let mut ig_models: Vec<(String, PathBuf)> = Vec::new();
    let n_pre = ((train.len() as f64) * cfg.ig_pretrain_fraction).round() as usize;
    let m0 = ig_dir.join("m0");
    let base_spec = cfg.experts.iter().find(|e| e.name == cfg.base).expect("validated").clone();
    let pre_steps = ((cfg.sft.steps as f64) * cfg.ig_pretrain_fraction).ceil() as usize;
    let pre_spec = TrainSpec { steps: pre_steps.max(1), ..cfg.sft.clone() };
    let key = (cfg.world_key(), &base_spec, &pre_spec, n_pre);
    st.run("ig pretrain", &key, &[engine::model_dir(&m0)], |name| {
        stage::work_dir(&m0, &key)?;
        let init = engine::Init::Scratch { spec: base_spec.clone(), image_size: cfg.world.image_size as i64, vocab, seed: 2000, tower: tower_path.clone() };
        engine::train_sft(name, &init, &paths.tokenizer(), train[..n_pre].to_vec(), &pre_spec, 2000, &m0)?;
        Ok(())
    })?;
    // Fine-tuning set F: the rest of the SFT data, as LLaVA records (Algorithm 1's input).
    let mut rest = amp_data::load_llava(&paths.world().join("train.json"), Some(&paths.images()))?.split_off(n_pre);
    rest.truncate(((rest.len() as f64) * cfg.ig_finetune_fraction).round() as usize);
    let tuner = crate::adapters::LlavaFineTuner {
        base: engine::model_dir(&m0),
        tokenizer: paths.tokenizer(),
        out_root: ig_dir.clone(),
        steps_per_record: cfg.sft.steps as f64 / train.len() as f64,
        spec: cfg.sft.clone(),
        gen: cfg.gen.clone(),
        resume,
    };
    let base_expert = Expert {
        name: "ig-m0".into(),
        generator: Arc::new(engine::chat("ig", "ig-m0", &engine::model_dir(&m0), &paths.tokenizer(), &cfg.gen)?),
    };
    let t = Instant::now();
    let list = amp_data::generate::incremental_experts(base_expert, &tuner, &rest, cfg.ig_parts + 2)?;
    st.record("ig fine-tune", t.elapsed().as_secs_f64(), false);
    for (i, e) in list.iter().enumerate() {
        let dir = if i + 1 == list.len() { engine::model_dir(&m0) } else { engine::model_dir(&tuner.stage_dir(cfg.ig_parts - i)) };
        ig_models.push((e.name.clone(), dir));
    }
    Ok(ig_models)
}
