//! The tiny preset of the end-to-end demo (`amp demo --preset tiny`): every stage runs the
//! crates' real code on a tiny world; the report must be complete and a rerun must resume.
use amp::pipeline::{run_demo, DemoArgs};

fn is_png(p: &std::path::Path) -> bool {
    std::fs::read(p).map(|b| b.starts_with(b"\x89PNG\r\n\x1a\n") && b.len() > 1000).unwrap_or(false)
}

#[test]
fn tiny_demo_runs_every_stage_and_writes_a_complete_report_then_resumes() {
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
        let amp = run.join("data/variants").join(&v.name).join("amp.json");
        let recs: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(&amp).unwrap()).unwrap();
        assert_eq!(recs.len(), r.config.world.n_pref, "{}", v.name);
        assert!(recs[0].get(format!("output_{}", v.levels)).is_some() && recs[0].get(format!("output_{}", v.levels + 1)).is_none());
        for s in &args.seeds {
            let t = run.join("train").join(&v.name).join(format!("seed-{s}"));
            let steps = std::fs::read_to_string(t.join("metrics.jsonl")).unwrap().lines().count();
            assert_eq!(steps, r.config.pref.steps, "{} seed {s}", v.name);
            let res = &r.results[&v.name][s];
            assert!(res.mrhal.contains_key("cumulative_hallucination_rate") && res.pope.contains_key("adversarial/accuracy"));
            assert!(res.grounding.contains_key("located_claims"), "{} seed {s}: no grounding measure", v.name);
        }
    }
    assert_eq!(r.results.len(), r.config.variants.len() + 1, "every variant plus sft-only");
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
    let rerun: Vec<&str> = r2
        .stages
        .iter()
        .filter(|t| !t.skipped && t.stage != "report" && t.stage != "ig fine-tune")
        .map(|t| t.stage.as_str())
        .collect();
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
}

/// The default preset, for measuring (`cargo test -p amp --test demo -- --ignored --nocapture`;
/// set AMP_DEMO_TEST_DIR to keep the run). Not part of CI: it takes up to 20 minutes.
#[test]
#[ignore]
fn small_preset() {
    let run = std::env::var_os("AMP_DEMO_TEST_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| "runs/demo-small".into());
    let args = DemoArgs { preset: "small".into(), seeds: vec![0, 1, 2], out: run, resume: true, threads: 0, config: None, experts_only: false };
    let r = run_demo(&args).unwrap_or_else(|e| panic!("small demo failed: {e}"));
    eprintln!("{}", std::fs::read_to_string(&r.report_md).unwrap());
}
