//! The run's context and its first and last stages: the run directory ([`RunPaths`]), what every
//! stage shares ([`DemoRun`]), the synthetic world ([`world_stage`]) and the report
//! ([`report_stage`]).
use super::results::DemoReport;
use super::stage::Stages;
use super::{io_err, read_json, report, stage_err, write_json, DemoArgs, DemoConfig, DemoError, Result};
use crate::adapters::RuleJudge;
use amp_world::{SceneIndex, World};
use mdpo::PreferenceExample;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Paths of a run directory.
#[derive(Debug, Clone)]
pub struct RunPaths {
    pub root: PathBuf,
}

impl RunPaths {
    pub fn world(&self) -> PathBuf {
        self.root.join("world")
    }
    pub fn images(&self) -> PathBuf {
        self.world().join("images")
    }
    pub fn tokenizer(&self) -> PathBuf {
        self.world().join("tokenizer.json")
    }
    pub fn expert(&self, name: &str) -> PathBuf {
        self.root.join("models").join(name)
    }
    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }
    pub fn train(&self, variant: &str, seed: u64) -> PathBuf {
        self.root.join("train").join(variant).join(format!("seed-{seed}"))
    }
    pub fn eval(&self, model: &str) -> PathBuf {
        self.root.join("eval").join(model)
    }
    pub fn report(&self) -> PathBuf {
        self.root.join("report")
    }
}

/// The SFT examples of a world file (`train.json`, the captions, `pref.json`), images checked.
pub(super) fn sft_examples(world: &Path, file: &str) -> Result<Vec<PreferenceExample>> {
    let opts = mdpo::data::LoadOptions { image_root: Some(world.join("images")), check_images: true, ..Default::default() };
    Ok(mdpo::data::load_sft_file(&world.join(file), &opts)?)
}

/// What every stage shares: the validated configuration, the run directory, the stage cache
/// ([`Stages`], `<run>/stages/`) and the clock of this invocation.
pub(super) struct DemoRun {
    pub cfg: DemoConfig,
    pub paths: RunPaths,
    pub st: Stages,
    /// Seeds of the preference-training runs.
    pub seeds: Vec<u64>,
    /// Skip stages whose outputs exist for the same key (`--resume`).
    pub resume: bool,
    pub started: Instant,
}

impl DemoRun {
    /// Read and validate the configuration (`--config` or the preset), set the torch threads,
    /// create the run directory and write `<run>/config.json`.
    pub fn open(args: &DemoArgs) -> Result<Self> {
        let started = Instant::now();
        if args.threads > 0 {
            tch::set_num_threads(args.threads as i32);
        }
        if args.seeds.is_empty() {
            return Err(DemoError::Config("at least one seed".into()));
        }
        let cfg = match &args.config {
            Some(p) => read_json::<DemoConfig>(p)?,
            None => DemoConfig::preset(&args.preset)?,
        };
        cfg.validate()?;
        std::fs::create_dir_all(&args.out).map_err(io_err(&args.out))?;
        // Absolute paths: the data files written below name their images, and must still load when
        // the demo (or `amp train` on its data) runs from another directory.
        let paths = RunPaths { root: std::fs::canonicalize(&args.out).map_err(io_err(&args.out))? };
        write_json(&paths.root.join("config.json"), &cfg)?;
        let st = Stages::new(&paths.root, args.resume);
        Ok(Self { cfg, paths, st, seeds: args.seeds.clone(), resume: args.resume, started })
    }

    /// The configuration and paths (read) and the stage cache (written), borrowed together.
    pub fn parts(&mut self) -> (&DemoConfig, &RunPaths, &mut Stages) {
        (&self.cfg, &self.paths, &mut self.st)
    }
}

/// The world as the later stages read it.
pub(super) struct WorldData {
    /// The generated world (its split sizes and ids).
    pub world: World,
    /// The scene graphs: the truth every claim is checked against.
    pub scenes: SceneIndex,
    /// The rule judge of the benchmark over those scenes.
    pub judge: RuleJudge,
    /// Size of the world's BPE tokenizer.
    pub vocab: i64,
}

/// Stage `world` (docs/demo.md): writes `<run>/world/` — scenes, images, LLaVA
/// instruction and caption data, preference prompts, the MRHal-style benchmark, POPE probes and
/// the BPE tokenizer ([`amp_world::World::write`]). Keyed by the world configuration and
/// [`amp_world::GENERATOR_VERSION`]; a world of
/// another configuration is removed first. Returns the world, its scenes, the judge over them
/// and the tokenizer's vocabulary size.
pub(super) fn world_stage(run: &mut DemoRun) -> Result<WorldData> {
    let (cfg, paths, st) = run.parts();
    let world = World::new(cfg.world.clone())?;
    st.run("world", &cfg.world_key(), &[paths.world().join("world.json")], |_| {
        // The stage reruns only for another configuration: the old world goes (amp-world refuses
        // to overwrite a directory holding another config).
        if paths.world().join("world.json").exists() {
            std::fs::remove_dir_all(paths.world()).map_err(io_err(&paths.world()))?;
        }
        world.write(&paths.world())?;
        Ok(())
    })?;
    let scenes = SceneIndex::open(&paths.world())?;
    let judge = RuleJudge::new(scenes.clone());
    let vocab = tokenizers::Tokenizer::from_file(paths.tokenizer())
        .map_err(|e| stage_err("world", format!("{}: {e}", paths.tokenizer().display())))?
        .get_vocab_size(true) as i64;
    Ok(WorldData { world, scenes, judge, vocab })
}

/// Stage `report`: writes `<run>/report/` (`report.md`, `report.json`, PNG curves and bars;
/// [`report::write`]) from the stages' results, every number as mean ± std over the seeds. The
/// report is written twice, the second time with the report stage's own timing in the table.
pub(super) fn report_stage(run: &mut DemoRun, mut report: DemoReport) -> Result<DemoReport> {
    let (t0, paths, st) = (run.started, &run.paths, &mut run.st);
    let t = Instant::now();
    report.stages = st.timings().to_vec();
    report.total_wall_s = t0.elapsed().as_secs_f64();
    report.total_compute_s = report.stages.iter().map(|t| t.previous_s).sum();
    report::write(&report, &paths.report())?;
    st.record("report", t.elapsed().as_secs_f64(), false);
    report.stages = st.timings().to_vec();
    report.total_wall_s = t0.elapsed().as_secs_f64();
    report.total_compute_s = report.stages.iter().map(|t| t.previous_s).sum();
    report::write(&report, &paths.report())?;
    Ok(report)
}
