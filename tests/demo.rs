//! The tiny preset of the end-to-end demo (`amp demo --preset tiny`): every stage runs the
//! crates' real code on a tiny world; the report must be complete and a rerun must resume.
use amp::pipeline::{gates, run_demo, DemoArgs, DemoReport, VariantKind};
use amp_world::claims::{answer_yes_no, count_hallucinations};
use amp_world::{SceneIndex, Turn};
use std::path::Path;

mod common;

fn is_png(p: &Path) -> bool {
    std::fs::read(p).map(|b| b.starts_with(b"\x89PNG\r\n\x1a\n") && b.len() > 1000).unwrap_or(false)
}

/// The demo sets process-global libtorch state (the RNG seed, the thread count), and the test
/// harness runs a binary's tests on parallel threads: the tests of this file take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

#[test]
fn tiny_demo_runs_every_stage_and_writes_a_complete_report_then_resumes() {
    let _serial = serial();
    // AMP_DEMO_TEST_DIR keeps the run (report, models, data) for inspection.
    let dir = tempfile::tempdir().unwrap();
    let run = std::env::var_os("AMP_DEMO_TEST_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| dir.path().join("run"));
    let args = DemoArgs { preset: "tiny".into(), seeds: vec![0, 1], out: run.clone(), resume: true, threads: 0, config: None, experts_only: false };
    let r = run_demo(&args).unwrap_or_else(|e| panic!("tiny demo failed: {e}"));

    // Every stage produced its outputs.
    for p in ["world/world.json", "world/tokenizer.json", "data/meg/generated.jsonl", "data/meg/checked.jsonl", "data/meg/initial.jsonl", "data/ranking.json"] {
        assert!(run.join(p).is_file(), "{p} missing");
    }
    for e in &r.config.experts {
        assert!(run.join("models").join(&e.name).join("model").exists(), "expert {} not saved", e.name);
        assert!(run.join("eval").join(format!("expert-{}", e.name)).join("result.json").is_file());
    }
    for v in &r.config.variants {
        if v.kind == VariantKind::Preference {
            let amp = run.join("data/variants").join(&v.name).join("amp.json");
            let recs: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(&amp).unwrap()).unwrap();
            assert_eq!(recs.len(), r.config.world.n_pref, "{}", v.name);
            assert!(recs[0].get(format!("output_{}", v.levels)).is_some() && recs[0].get(format!("output_{}", v.levels + 1)).is_none());
        }
        for s in &args.seeds {
            let t = run.join("train").join(&v.name).join(format!("seed-{s}"));
            let steps = std::fs::read_to_string(t.join("metrics.jsonl")).unwrap().lines().count();
            assert_eq!(steps, r.config.pref.steps, "{} seed {s}", v.name);
            let res = &r.results[&v.name][s];
            assert!(res.mrhal.contains_key("cumulative_hallucination_rate") && res.pope.contains_key("adversarial/accuracy"));
            assert!(res.grounding.contains_key("located_claims"), "{} seed {s}: no grounding measure", v.name);
        }
    }
    assert_eq!(r.results.len(), r.config.variants.len() + 1, "every variant plus the base");
    check_gates(&r, &run);
    check_checkpoints(&r, &run);
    assert!(r.ranking.samples == r.config.world.n_pref && r.ranking.initial.pairs > 0);

    // The report: Markdown sections, JSON, PNG charts.
    let md = std::fs::read_to_string(&r.report_md).unwrap();
    for h in ["## 1. Multi-size experts", "(located claims)", "## 2. Preference data and the auto-check", "## 3. Preference training", "## 4. Wall time per stage", "± "] {
        assert!(md.contains(h), "report lacks {h:?}");
    }
    for v in &r.config.variants {
        assert!(md.contains(&format!("| {} |", v.name)), "report lacks variant {}", v.name);
    }
    assert!(is_png(&run.join("report/curves.png")) && is_png(&run.join("report/bars.png")));
    assert!(run.join("report/report.json").is_file());

    // A rerun resumes: no stage runs again.
    let r2 = run_demo(&args).unwrap();
    let rerun = reran(&r2);
    assert!(rerun.is_empty(), "stages rerun on resume: {rerun:?}");

    // `--config <run>/config.json --experts-only`: the same configuration from its file (so
    // nothing reruns), stopping after the experts with their table.
    let only = DemoArgs { config: Some(run.join("config.json")), experts_only: true, ..args.clone() };
    match run_demo(&only) {
        Err(amp::pipeline::DemoError::Stopped { after, path }) => {
            assert_eq!(after, "experts");
            let table = std::fs::read_to_string(path).unwrap();
            for e in &r.config.experts {
                assert!(table.lines().any(|l| l.starts_with(&format!("{} ", e.name))), "{table}");
            }
        }
        other => panic!("expected a stop after the experts, got {:?}", other.map(|r| r.report_md)),
    }
    assert_eq!(r2.results, r.results);

    // A run directory copied elsewhere (a new path, and every file with a new modification time,
    // as `cp -r` or another machine gives) resumes too: no stage key holds an absolute path or a
    // file time.
    if std::env::var_os("AMP_DEMO_TEST_DIR").is_none() {
        let copied = dir.path().join("copied");
        common::copy_tree(&run, &copied);
        std::fs::remove_dir_all(&run).unwrap();
        let r3 = run_demo(&DemoArgs { out: copied, ..args.clone() }).unwrap();
        let rerun = reran(&r3);
        assert!(rerun.is_empty(), "stages rerun after the run directory was copied: {rerun:?}");
        assert_eq!(r3.results, r.results);
    }
}

/// The stages a run did not skip (the report and the IG fine-tune always run).
fn reran(r: &DemoReport) -> Vec<&str> {
    r.stages.iter().filter(|t| !t.skipped && t.stage != "report" && t.stage != "ig fine-tune").map(|t| t.stage.as_str()).collect()
}

fn to_world(c: &[mdpo::Turn]) -> Vec<Turn> {
    c.iter().map(|t| Turn { from: t.from.clone(), value: t.value.clone() }).collect()
}

/// The gates, recomputed from the run's files by brute force: each expert's claim rate from its
/// stored per-round verdicts, each level's mean hallucinated claims and the yes/no flips from
/// the generated answers.
fn check_gates(r: &DemoReport, run: &Path) {
    let g = r.gates.as_ref().expect("gates computed");
    let saved: gates::Gates = serde_json::from_slice(&std::fs::read(run.join("data/gates.json")).unwrap()).unwrap();
    assert_eq!(serde_json::to_value(&saved).unwrap(), serde_json::to_value(g).unwrap());
    for (e, (name, rate)) in r.experts.iter().zip(&g.claim_hallucination) {
        assert_eq!(&e.name, name);
        let (h, n) = e.eval.items.iter().flat_map(|i| &i.rounds).fold((0, 0), |(h, n), x| (h + x.hallucinated_claims, n + x.claims));
        if n == 0 {
            assert!(rate.is_nan(), "{name}: no checkable claims, rate {rate}");
        } else {
            assert!((rate - h as f64 / n as f64).abs() < 1e-12, "{name}");
        }
        assert_eq!(e.eval.items.len(), r.config.world.n_bench);
    }
    let scenes = SceneIndex::open(&run.join("world")).unwrap();
    let rows = amp_data::pipeline::load_rows::<amp_data::pipeline::GeneratedRow>(&run.join("data/meg/generated.jsonl")).unwrap();
    let pool: Vec<String> = g.level_means[1..].iter().map(|l| l.0.clone()).collect();
    assert_eq!(pool.len(), r.config.experts.len());
    let mut sums = vec![0usize; pool.len() + 1];
    let mut flips = vec![(0usize, 0usize); pool.len()];
    let mut right = vec![(0usize, 0usize); pool.len()];
    for row in &rows {
        let scene = scenes.get(&row.image).unwrap();
        let mut convs = vec![row.standard.clone()];
        convs.extend(pool.iter().map(|p| row.candidates.iter().find(|c| &c.source == p).unwrap().conversation.clone()));
        for (s, c) in sums.iter_mut().zip(&convs) {
            *s += count_hallucinations(scene, &to_world(c));
        }
        let yn: Vec<Vec<Option<bool>>> = convs.iter().map(|c| c.iter().filter(|t| t.from == "gpt").map(|t| answer_yes_no(&t.value)).collect()).collect();
        for k in 0..pool.len() {
            for r in 0..yn[0].len() {
                if yn[0][r].is_none() {
                    continue;
                }
                if let Some(a) = yn[k + 1].get(r).copied().flatten() {
                    right[k].1 += 1;
                    right[k].0 += usize::from(Some(a) == yn[0][r]);
                }
                match (yn[k].get(r).copied().flatten(), yn[k + 1].get(r).copied().flatten()) {
                    (Some(true), Some(false)) => flips[k].0 += 1,
                    (Some(false), Some(true)) => flips[k].1 += 1,
                    _ => {}
                }
            }
        }
    }
    for (i, (name, m)) in g.level_means.iter().enumerate() {
        assert!((m - sums[i] as f64 / rows.len() as f64).abs() < 1e-12, "level {name}");
    }
    assert_eq!(g.level_means[0].1, 0.0, "the standard responses are true");
    for (k, f) in g.flips.iter().enumerate() {
        assert_eq!((f.upper_yes, f.upper_no), flips[k], "{} > {}", f.upper, f.lower);
    }
    for (k, (name, acc, n)) in g.yes_no_accuracy.iter().enumerate() {
        assert_eq!((name, *n), (&pool[k], right[k].1));
        if *n > 0 {
            assert!((acc - right[k].0 as f64 / *n as f64).abs() < 1e-12, "{name}");
        }
    }
    for (k, d) in g.gaps.iter().enumerate() {
        assert!((d - (g.level_means[k + 2].1 - g.level_means[k + 1].1)).abs() < 1e-12);
    }
    let expect = g.claim_hallucination.windows(2).all(|w| w[0].1 < w[1].1)
        && (0.15..=0.5).contains(&g.base_rate)
        && g.gaps.iter().all(|d| *d >= 0.3)
        && g.flips.iter().all(|f| f.upper_yes + f.upper_no < 10 || (0.4..=0.6).contains(&f.yes_share()));
    assert_eq!(g.passed, expect);
    let md = std::fs::read_to_string(&r.report_md).unwrap();
    assert!(md.contains("### Gates (checked before preference training)") && md.contains("claim hallucination falls strictly with size"));
}

/// Every model the run wrote is a llava-hf checkpoint directory that mllm loads from its
/// `config.json`, and (with $AMP_PYTHON) transformers loads with no missing or unexpected key
/// and computes the same logits.
fn check_checkpoints(r: &DemoReport, run: &Path) {
    let mut dirs: Vec<std::path::PathBuf> = r.config.experts.iter().map(|e| run.join("models").join(&e.name).join("model")).collect();
    for v in &r.config.variants {
        dirs.push(run.join("train").join(&v.name).join("seed-0").join("model"));
    }
    for d in &dirs {
        for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"] {
            assert!(d.join(f).is_file(), "{}: no {f}", d.display());
        }
        assert!(!d.join("demo_model.json").exists());
        mllm::llava::Llava::load(d, Default::default()).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
    }
    let tower = run.join("models/tower");
    for f in ["config.json", "model.safetensors", "preprocessor_config.json", "tower_report.json"] {
        assert!(tower.join(f).is_file(), "tower: no {f}");
    }
    // The CLS token's colour-shape head: measured when trained, and then every expert takes the
    // CLS token too (LLaVA's `full` selection: 9 patches + CLS).
    let presence = r.config.tower.as_ref().is_some_and(|t| t.presence);
    let report: amp::pipeline::tower::TowerReport = serde_json::from_str(&std::fs::read_to_string(tower.join("tower_report.json")).unwrap()).unwrap();
    assert_eq!(report.presence.is_some(), presence, "{report:?}");
    if let Some(p) = report.presence {
        assert!((0.0..=1.0).contains(&p) && report.presence_images.is_some(), "{report:?}");
    }
    for d in &dirs {
        let cfg = mllm::config::LlavaConfig::from_dir(d).unwrap();
        assert_eq!(cfg.image_tokens(), if presence { 10 } else { 9 }, "{}", d.display());
    }
    let Ok(python) = std::env::var("AMP_PYTHON") else {
        eprintln!("AMP_PYTHON not set: transformers' loading of the checkpoints is not checked");
        return;
    };
    let base = &dirs[0];
    let m = mllm::llava::Llava::load(base, Default::default()).unwrap();
    let mut tok = mllm::conversation::ChatTokenizer::from_file(&base.join("tokenizer.json"), m.cfg.image_token_id, m.cfg.image_tokens() as usize, m.cfg.text.eos_ids()).unwrap();
    tok.system = amp::pipeline::engine::SYSTEM.into();
    let ids = tok.encode(&["<image>\nWhat is in the center?".to_string()], None).unwrap().ids;
    let proc = mllm::image_processor::ImageProcessor::from_dir(base, 48, mllm::config::AspectRatio::Pad).unwrap();
    let img = mllm::image_processor::ImageProcessor::open(&run.join("world/images/bench_000000.png")).unwrap();
    let px = proc.preprocess(&img).unsqueeze(0);
    let ids_t = tch::Tensor::from_slice(&ids).unsqueeze(0);
    let ours = m.forward(&ids_t, Some(&px), None).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let px_v: Vec<f32> = Vec::try_from(px.flatten(0, -1)).unwrap();
    let px_nested: Vec<Vec<Vec<f32>>> = px_v.chunks(48 * 48).map(|c| c.chunks(48).map(|r| r.to_vec()).collect()).collect();
    let inp = tmp.path().join("in.json");
    std::fs::write(&inp, serde_json::json!({"input_ids": [ids], "pixel_values": [px_nested]}).to_string()).unwrap();
    let out = tmp.path().join("out.json");
    let st = std::process::Command::new(python)
        .args([Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracles/check_demo_checkpoint.py").as_os_str(), base.as_os_str(), inp.as_os_str(), out.as_os_str()])
        .status()
        .unwrap();
    assert!(st.success(), "transformers could not load {}", base.display());
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(v["missing"], serde_json::json!([]), "{v:?}");
    assert_eq!(v["unexpected"], serde_json::json!([]));
    assert_eq!(v["crop"], 48);
    let theirs: Vec<f32> = v["logits"][0].as_array().unwrap().iter().flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32)).collect();
    let ours: Vec<f32> = Vec::try_from(ours.flatten(0, -1)).unwrap();
    assert_eq!(ours.len(), theirs.len());
    let max = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(max < 1e-3, "logits differ from transformers' by {max}");
}

/// Same machine, same thread count, same seed: the stages up to the experts' evaluation give
/// the same bytes (tower, experts) and the same numbers in a fresh directory.
#[test]
fn tiny_demo_is_deterministic_on_one_machine() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let go = |out: std::path::PathBuf| {
        let args = DemoArgs { preset: "tiny".into(), seeds: vec![0], out, resume: true, threads: 1, config: None, experts_only: true };
        match run_demo(&args) {
            Err(amp::pipeline::DemoError::Stopped { path, .. }) => std::fs::read_to_string(path).unwrap(),
            other => panic!("expected a stop after the experts, got {:?}", other.map(|r| r.report_md)),
        }
    };
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let ta = go(a.clone());
    let tb = go(b.clone());
    assert_eq!(ta, tb);
    let bytes = |p: std::path::PathBuf| std::fs::read(p).unwrap();
    assert_eq!(bytes(a.join("models/tower/model.safetensors")), bytes(b.join("models/tower/model.safetensors")));
    for e in ["m48", "s32", "xs16"] {
        let f = format!("models/{e}/model/model.safetensors");
        assert!(bytes(a.join(&f)) == bytes(b.join(&f)), "{f} differs between two runs");
        let f = format!("eval/expert-{e}/mrhal_answers.jsonl");
        assert!(bytes(a.join(&f)) == bytes(b.join(&f)), "{f} differs between two runs");
    }
}

/// The default preset, for measuring (`cargo test -p amp --test demo -- --ignored --nocapture`;
/// set AMP_DEMO_TEST_DIR to keep the run). Not part of CI: it takes up to 20 minutes.
#[test]
#[ignore]
fn small_preset() {
    let _serial = serial();
    let run = std::env::var_os("AMP_DEMO_TEST_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| "runs/demo-small".into());
    let args = DemoArgs { preset: "small".into(), seeds: vec![0, 1, 2], out: run, resume: true, threads: 0, config: None, experts_only: false };
    let r = run_demo(&args).unwrap_or_else(|e| panic!("small demo failed: {e}"));
    eprintln!("{}", std::fs::read_to_string(&r.report_md).unwrap());
}
