//! Input validation, MEG/IG expert ordering, the OpenAI generator's requests, resumable and
//! sharded runs, and the AMP output format.
mod common;

use amp_data::autocheck::{AutoCheckConfig, AutoChecker};
use amp_data::chunker::Chunker;
use amp_data::generate::{
    incremental_experts, multi_size_experts, Expert, GenParams, Generator, OpenAiGenerator,
};
use amp_data::pipeline::{self, CheckedRow, GeneratedRow, Shard};
use amp_data::{load_llava, BrillTagger, TaggerMode};
use common::*;
use std::path::Path;
use std::sync::Arc;

fn experts() -> Vec<Expert> {
    ["big", "mid", "small"]
        .iter()
        .map(|n| Expert {
            name: n.to_string(),
            generator: Arc::new(ScriptedGen::new(n)),
        })
        .collect()
}

fn checker() -> AutoChecker<BagOfWords, BagOfWords> {
    let chunker = Chunker::new(BrillTagger::from_installed(TaggerMode::Brill).unwrap());
    AutoChecker::new(chunker, BagOfWords, BagOfWords, AutoCheckConfig::default())
}

fn err_of(json: &str, dir: &Path) -> String {
    let p = dir.join("bad.json");
    std::fs::write(&p, json).unwrap();
    load_llava(&p, None).unwrap_err().to_string()
}

#[test]
fn bad_input_records_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("ok.png"), common::TINY_PNG).unwrap();
    std::fs::write(d.join("empty.png"), b"").unwrap();
    let conv = r#"[{"from":"human","value":"<image>\nhi"},{"from":"gpt","value":"A cat."}]"#;
    let e = err_of(
        &format!(r#"[{{"id":"a","image":"missing.png","conversations":{conv}}}]"#),
        d,
    );
    assert!(
        e.contains("record 0") && e.contains("\"a\"") && e.contains("missing.png"),
        "{e}"
    );
    let e = err_of(
        &format!(r#"[{{"id":"a","image":"empty.png","conversations":{conv}}}]"#),
        d,
    );
    assert!(e.contains("\"a\"") && e.contains("empty"), "{e}");
    let e = err_of(
        r#"[{"id":"q","image":"ok.png","conversations":[{"from":"human","value":"hi"}]}]"#,
        d,
    );
    assert!(e.contains("\"q\"") && e.contains("no gpt turn"), "{e}");
    let e = err_of(
        &format!(
            r#"[{{"id":"a","image":"ok.png","conversations":{conv}}},{{"id":"a","image":"ok.png","conversations":{conv}}}]"#
        ),
        d,
    );
    assert!(e.contains("record 1") && e.contains("duplicate id"), "{e}");
    let e = err_of(
        r#"[{"id":"z","image":"ok.png","conversations":[{"from":"gpt","value":"x"}]}]"#,
        d,
    );
    assert!(
        e.contains("\"z\"") && e.contains("expected \"human\""),
        "{e}"
    );
    let e = err_of(
        &format!(r#"[{{"image":"ok.png","conversations":{conv}}}]"#),
        d,
    );
    assert!(e.contains("record 0") && e.contains("id"), "{e}");
    // a good file loads, ids and images resolved against the file's directory
    let p = write_llava(&d.join("good"), 3);
    let recs = load_llava(&p, None).unwrap();
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[1].id, "rec-1");
    assert!(recs[1].image.is_file());
    assert_eq!(recs[1].gpt_turns().len(), 2);
}

#[test]
fn meg_and_ig_expert_order() {
    let pool = multi_size_experts(experts(), Some(4)).unwrap();
    assert_eq!(
        pool.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        ["big", "mid", "small"]
    );
    assert!(multi_size_experts(experts(), Some(5))
        .unwrap_err()
        .to_string()
        .contains("K = 5"));

    let dir = tempfile::tempdir().unwrap();
    let sft = load_llava(&write_llava(dir.path(), 9), None).unwrap();
    let tuner = RecordingTuner::default();
    let base = Expert {
        name: "base".into(),
        generator: Arc::new(ScriptedGen::new("base")),
    };
    // K = 5: three cumulative subsets of 9 records: 3, 6, 9
    let ig = incremental_experts(base, &tuner, &sft, 5).unwrap();
    assert_eq!(*tuner.sizes.lock().unwrap(), vec![(1, 3), (2, 6), (3, 9)]);
    let names: Vec<String> = ig.iter().map(|e| e.generator.name()).collect();
    // most data first, base last
    assert_eq!(names, ["tuned-3", "tuned-2", "tuned-1", "base"]);
    assert!(ig[0].name.contains("(9)") && ig[2].name.contains("(3)"));
}

#[test]
fn multi_round_generation_feeds_back_own_answers() {
    let g = ScriptedGen::new("m");
    let conv = vec![
        mdpo::Turn {
            from: "human".into(),
            value: "<image>\nQ1".into(),
        },
        mdpo::Turn {
            from: "gpt".into(),
            value: "standard 1".into(),
        },
        mdpo::Turn {
            from: "human".into(),
            value: "Q2".into(),
        },
        mdpo::Turn {
            from: "gpt".into(),
            value: "standard 2".into(),
        },
    ];
    let out = g.generate(Path::new("/x/img.png"), &conv).unwrap();
    assert_eq!(out.len(), 4);
    assert_eq!(out[0], conv[0]);
    assert_eq!(out[2], conv[2]);
    assert!(out[1].value.contains("round 1") && out[1].value.contains("Q1"));
    assert!(out[3].value.contains("round 2") && out[3].value.contains("Q2"));
    assert!(!out.iter().any(|t| t.value.starts_with("standard")));
}

#[test]
fn openai_generator_sends_image_as_data_url_with_paper_defaults() {
    use amp_chat::mock::{MockReply, MockServer};
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let server = MockServer::start(move |req| {
        let v = req.json();
        s2.lock().unwrap().push(v);
        MockReply::completion("served-model", &format!("answer {}", req.index))
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("a.png");
    std::fs::write(&img, common::TINY_PNG).unwrap();
    let client =
        amp_chat::ChatClient::new(amp_chat::ChatConfig::new(server.base_url(), "llava")).unwrap();
    let g = OpenAiGenerator::new(client, "llava", GenParams::default());
    let conv = vec![
        mdpo::Turn {
            from: "human".into(),
            value: "<image>\nWhat is this?".into(),
        },
        mdpo::Turn {
            from: "gpt".into(),
            value: "x".into(),
        },
        mdpo::Turn {
            from: "human".into(),
            value: "And the colour?".into(),
        },
        mdpo::Turn {
            from: "gpt".into(),
            value: "y".into(),
        },
    ];
    let out = g.generate(&img, &conv).unwrap();
    assert_eq!(out[1].value, "answer 0");
    assert_eq!(out[3].value, "answer 1");
    let reqs = seen.lock().unwrap();
    assert_eq!(reqs.len(), 2);
    let r = &reqs[1];
    assert_eq!(r["model"], "llava");
    assert!((r["temperature"].as_f64().unwrap() - 0.7).abs() < 1e-6);
    assert_eq!(r["max_tokens"], 512);
    let first = &r["messages"][0]["content"];
    let url = first[0]["image_url"]["url"].as_str().unwrap();
    assert_eq!(
        url,
        // base64 of common::TINY_PNG, computed with Python's `base64.b64encode`.
        "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAQAAAAECAIAAAAmkwkpAAAAEElEQVR4nGM4IScHRwzEcQCxYxBBO0tjggAAAABJRU5ErkJggg=="
    );
    assert_eq!(first[1]["text"], "What is this?");
    assert_eq!(r["messages"][1]["role"], "assistant");
    assert_eq!(r["messages"][1]["content"], "answer 0");
    assert_eq!(r["messages"][2]["content"], "And the colour?");
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

/// Full unsharded run: generate, check, finalize. Returns (generated rows sorted, final dir).
fn full_run(dir: &Path, input: &Path) -> (Vec<GeneratedRow>, std::path::PathBuf) {
    let recs = load_llava(input, None).unwrap();
    let gen = dir.join("gen.jsonl");
    pipeline::generate(&recs, &experts(), &gen, Shard::ALL, 2).unwrap();
    let rows: Vec<GeneratedRow> = pipeline::load_rows(&gen).unwrap();
    let c = checker();
    let checked = dir.join("checked.jsonl");
    pipeline::check(&rows, Some(&c), &checked, Shard::ALL, 2).unwrap();
    let out = dir.join("final");
    pipeline::finalize(pipeline::load_rows(&checked).unwrap(), &out).unwrap();
    let mut rows = rows;
    rows.sort_by_key(|r| r.index);
    (rows, out)
}

#[test]
fn interrupted_run_resumes_to_the_same_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_llava(&dir.path().join("data"), 12);
    let (want_rows, want_dir) = full_run(&dir.path().join("ref"), &input);

    let recs = load_llava(&input, None).unwrap();
    let gen = dir.path().join("run/gen.jsonl");
    // interruption: the middle expert dies after 9 answers
    let flaky = vec![
        Expert {
            name: "big".into(),
            generator: Arc::new(ScriptedGen::new("big")),
        },
        Expert {
            name: "mid".into(),
            generator: Arc::new(ScriptedGen::failing_after("mid", 9)),
        },
        Expert {
            name: "small".into(),
            generator: Arc::new(ScriptedGen::new("small")),
        },
    ];
    let err = pipeline::generate(&recs, &flaky, &gen, Shard::ALL, 2).unwrap_err();
    assert!(
        err.to_string().contains("simulated crash") && err.to_string().contains("rec-"),
        "{err}"
    );
    let partial: Vec<GeneratedRow> = pipeline::load_rows(&gen).unwrap();
    assert!(
        !partial.is_empty() && partial.len() < 12,
        "{} rows before the crash",
        partial.len()
    );
    // a torn line, as a crash mid-write would leave
    let mut f = std::fs::OpenOptions::new().append(true).open(&gen).unwrap();
    std::io::Write::write_all(&mut f, b"{\"id\":\"rec-").unwrap();
    drop(f);
    let s = pipeline::generate(&recs, &experts(), &gen, Shard::ALL, 2).unwrap();
    assert_eq!(s.skipped, partial.len());
    assert_eq!(s.skipped + s.processed, 12);
    let mut rows: Vec<GeneratedRow> = pipeline::load_rows(&gen).unwrap();
    assert_eq!(rows.len(), 12, "no row lost or repeated");
    rows.sort_by_key(|r| r.index);
    assert_eq!(rows, want_rows);
    // a rerun of a finished run does nothing
    let s = pipeline::generate(&recs, &experts(), &gen, Shard::ALL, 2).unwrap();
    assert_eq!((s.skipped, s.processed), (12, 0));

    // the check stage is resumable too: do half, then the rest
    let checked = dir.path().join("run/checked.jsonl");
    let c = checker();
    pipeline::check(&rows[..5], Some(&c), &checked, Shard::ALL, 2).unwrap();
    let s = pipeline::check(&rows, Some(&c), &checked, Shard::ALL, 2).unwrap();
    assert_eq!((s.skipped, s.processed), (5, 7));
    let out = dir.path().join("run/final");
    pipeline::finalize(pipeline::load_rows(&checked).unwrap(), &out).unwrap();
    for f in ["amp.json", "meta.jsonl", "stats.json"] {
        assert_eq!(read(&out.join(f)), read(&want_dir.join(f)), "{f}");
    }
}

/// `check` runs `check_batch` on fixed blocks of rows: a kill in the middle of the second block
/// (a torn last line too), then a rerun, gives the uninterrupted run's bytes, even with an
/// embedder whose vectors depend on the call's batch (the rerun checks the torn block whole).
#[test]
fn a_check_killed_mid_block_resumes_to_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let n = 2 * pipeline::CHECK_BLOCK + 12;
    let input = write_llava(&dir.path().join("data"), n);
    let recs = load_llava(&input, None).unwrap();
    let gen = dir.path().join("gen.jsonl");
    pipeline::generate(&recs, &experts(), &gen, Shard::ALL, 2).unwrap();
    let rows: Vec<GeneratedRow> = pipeline::load_rows(&gen).unwrap();
    let chunker = Chunker::new(BrillTagger::from_installed(TaggerMode::Brill).unwrap());
    let c = AutoChecker::new(
        chunker,
        BatchSensitive,
        BatchSensitive,
        AutoCheckConfig::default(),
    );
    let want_path = dir.path().join("want.jsonl");
    let s = pipeline::check(&rows, Some(&c), &want_path, Shard::ALL, 2).unwrap();
    assert_eq!((s.skipped, s.processed), (0, n));
    let want = read(&want_path);
    // rows are written in input order, block by block
    let ids: Vec<String> = want
        .lines()
        .map(|l| serde_json::from_str::<CheckedRow>(l).unwrap().id)
        .collect();
    assert_eq!(ids, (0..n).map(|i| format!("rec-{i}")).collect::<Vec<_>>());

    let cut = pipeline::CHECK_BLOCK + 7;
    let mut partial: String = want.lines().take(cut).map(|l| format!("{l}\n")).collect();
    partial.push_str(&want.lines().nth(cut).unwrap()[..30]);
    let path = dir.path().join("checked.jsonl");
    std::fs::write(&path, partial).unwrap();
    let s = pipeline::check(&rows, Some(&c), &path, Shard::ALL, 2).unwrap();
    assert_eq!((s.skipped, s.processed), (cut, n - cut));
    assert!(
        read(&path) == want,
        "resumed check differs from the uninterrupted one"
    );

    // the embedder does make the batching visible: checking the remaining rows as a batch of
    // their own gives other bytes (what a resume that skipped the done rows of the block would do)
    let alone = dir.path().join("alone.jsonl");
    pipeline::check(&rows[cut..], Some(&c), &alone, Shard::ALL, 2).unwrap();
    let tail: String = want.lines().skip(cut).map(|l| format!("{l}\n")).collect();
    assert_ne!(read(&alone), tail);
}

#[test]
fn sharded_run_merges_to_the_unsharded_output_and_loads_in_mdpo() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_llava(&dir.path().join("data"), 10);
    let (_, want_dir) = full_run(&dir.path().join("ref"), &input);
    let recs = load_llava(&input, None).unwrap();
    let c = checker();
    let mut checked_files = Vec::new();
    let mut total = 0;
    for i in 0..3 {
        let shard = Shard { index: i, count: 3 };
        let gen = dir.path().join(format!("gen-{i}.jsonl"));
        total += pipeline::generate(&recs, &experts(), &gen, shard, 1)
            .unwrap()
            .processed;
        let rows: Vec<GeneratedRow> = pipeline::load_rows(&gen).unwrap();
        let ck = dir.path().join(format!("checked-{i}.jsonl"));
        pipeline::check(&rows, Some(&c), &ck, shard, 1).unwrap();
        checked_files.push(ck);
    }
    assert_eq!(total, 10);
    let merged: Vec<CheckedRow> = pipeline::merge_rows(&checked_files).unwrap();
    // per-sample diagnostics: the chunks behind the metrics
    let r0 = merged.iter().find(|r| r.id == "rec-0").unwrap();
    assert_eq!(r0.standard_chunk_texts, vec!["A red car", "a tree"]);
    assert!(
        r0.checked
            && r0
                .responses
                .iter()
                .all(|x| !x.chunks.is_empty() && x.check.is_some())
    );
    let out = dir.path().join("merged");
    let o = pipeline::finalize(merged, &out).unwrap();
    for f in ["amp.json", "meta.jsonl", "stats.json"] {
        assert_eq!(read(&out.join(f)), read(&want_dir.join(f)), "{f}");
    }
    assert_eq!(o.stats.samples, 10);
    assert_eq!(o.stats.levels, 4);

    // the AMP file loads with mdpo's loader, standard response on top
    let ex = mdpo::data::load_amp_file(
        &o.amp_json,
        &mdpo::data::LoadOptions {
            levels: Some(4),
            // the images stay in the input's folder: that is the data root
            image_root: Some(dir.path().join("data")),
            check_images: true,
            allow_outside_root: false,
        },
    )
    .unwrap();
    assert_eq!(ex.len(), 10);
    assert_eq!(ex[0].id, "rec-0");
    assert_eq!(ex[0].responses[0], recs[0].conversations);
    // the images are recorded as the input names them (relative to its folder, as LLaVA's data):
    // the AMP file still loads once the image folder has moved
    let amp: Vec<serde_json::Value> = serde_json::from_str(&read(&o.amp_json)).unwrap();
    assert_eq!(amp[3]["image"], "images/3.png");
    let moved = dir.path().join("elsewhere");
    std::fs::rename(dir.path().join("data"), &moved).unwrap();
    let opts = |root: &Path| mdpo::data::LoadOptions {
        levels: Some(4),
        image_root: Some(root.to_path_buf()),
        check_images: true,
        allow_outside_root: false,
    };
    let again = mdpo::data::load_amp_file(&o.amp_json, &opts(&moved)).unwrap();
    assert_eq!(again.len(), 10);
    assert!(mdpo::data::load_amp_file(&o.amp_json, &opts(&dir.path().join("data"))).is_err());
    assert_eq!(ex[3].responses[0].len(), 4, "multi-round kept");
    // metadata: one line per response, standard at rank 0
    let meta = read(&o.meta_jsonl);
    assert_eq!(meta.lines().count(), 40);
    let first: serde_json::Value = serde_json::from_str(meta.lines().next().unwrap()).unwrap();
    assert_eq!(first["source"], "standard");
    let second: serde_json::Value = serde_json::from_str(meta.lines().nth(1).unwrap()).unwrap();
    for k in [
        "acc",
        "score",
        "local_acc",
        "local_score",
        "global_acc",
        "global_score",
        "initial_rank",
        "final_rank",
    ] {
        assert!(second.get(k).is_some(), "{k} missing in {second}");
    }
}

#[test]
fn merge_rejects_conflicting_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_llava(&dir.path().join("data"), 2);
    let recs = load_llava(&input, None).unwrap();
    let a = dir.path().join("a.jsonl");
    let b = dir.path().join("b.jsonl");
    pipeline::generate(&recs, &experts(), &a, Shard::ALL, 1).unwrap();
    let other = vec![Expert {
        name: "x".into(),
        generator: Arc::new(ScriptedGen::new("x")),
    }];
    pipeline::generate(&recs, &other, &b, Shard::ALL, 1).unwrap();
    let e = pipeline::merge_rows::<GeneratedRow>(&[a.clone(), a.clone()]);
    assert_eq!(e.unwrap().len(), 2, "identical duplicates are fine");
    let e = pipeline::merge_rows::<GeneratedRow>(&[a, b])
        .unwrap_err()
        .to_string();
    assert!(e.contains("rec-") && e.contains("different content"), "{e}");
}

/// A downstream model's own error type.
#[derive(Debug, PartialEq)]
struct OutOfMemory {
    bytes: usize,
}

impl std::fmt::Display for OutOfMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "out of memory allocating {} bytes", self.bytes)
    }
}

impl std::error::Error for OutOfMemory {}

/// TEST DOUBLE: a generator and an embedder that fail with [`OutOfMemory`].
struct Oom;

impl Generator for Oom {
    fn name(&self) -> String {
        "oom".into()
    }
    fn respond(&self, image: &Path, _: &[mdpo::Turn]) -> amp_data::Result<String> {
        Err(amp_data::AmpDataError::generation(
            "oom",
            image.display().to_string(),
            OutOfMemory { bytes: 7 },
        ))
    }
}

impl amp_data::SentenceEmbedder for Oom {
    fn name(&self) -> String {
        "oom".into()
    }
    fn embed(&self, _: &[String]) -> amp_data::Result<Vec<Vec<f32>>> {
        Err(amp_data::AmpDataError::embedding(
            "oom",
            OutOfMemory { bytes: 9 },
        ))
    }
}

impl amp_data::FineTuner for Oom {
    fn fine_tune(
        &self,
        _: &[amp_data::InstructionRecord],
        stage: usize,
    ) -> amp_data::Result<Arc<dyn Generator>> {
        Err(amp_data::AmpDataError::fine_tune(
            stage,
            OutOfMemory { bytes: 100 + stage },
        ))
    }
}

#[test]
fn an_implementers_own_error_comes_back_as_the_source() {
    use std::error::Error as _;
    let dir = tempfile::tempdir().unwrap();
    let input = write_llava(&dir.path().join("data"), 2);
    let recs = load_llava(&input, None).unwrap();
    let experts = vec![Expert {
        name: "oom".into(),
        generator: Arc::new(Oom),
    }];
    let err = pipeline::generate(
        &recs,
        &experts,
        &dir.path().join("gen.jsonl"),
        Shard::ALL,
        1,
    )
    .unwrap_err();
    // The pipeline names the record it was on and keeps the model's error, downcastable.
    assert!(
        matches!(&err, amp_data::AmpDataError::Generation { model, record, .. } if model == "oom" && record.starts_with("rec-"))
    );
    let src = err.source().unwrap().downcast_ref::<OutOfMemory>();
    assert_eq!(src, Some(&OutOfMemory { bytes: 7 }), "{err}");

    let chunker = Chunker::new(BrillTagger::from_installed(TaggerMode::Brill).unwrap());
    let checker = AutoChecker::new(chunker, Oom, BagOfWords, AutoCheckConfig::default());
    let err = checker
        .check(
            &["A red car is parked near a tree.".into()],
            &[vec!["A red car.".into()]],
        )
        .unwrap_err();
    assert_eq!(
        err.source().unwrap().downcast_ref::<OutOfMemory>(),
        Some(&OutOfMemory { bytes: 9 }),
        "{err}"
    );

    let base = Expert {
        name: "base".into(),
        generator: Arc::new(Oom),
    };
    let err = incremental_experts(base, &Oom, &recs, 3).unwrap_err();
    assert!(
        matches!(err, amp_data::AmpDataError::FineTune { stage: 1, .. }),
        "{err}"
    );
    assert_eq!(
        err.source().unwrap().downcast_ref::<OutOfMemory>(),
        Some(&OutOfMemory { bytes: 101 })
    );
}
