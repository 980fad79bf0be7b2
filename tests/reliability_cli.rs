//! Issue 13 through the `amp` binary (docs/reliability.md): one writer per output (a second
//! process fails at once naming the holder; a lock left by a `kill -9` does not block the
//! rerun), and `amp eval judge|score` exit with status 3 when items are missing, after writing
//! what they have (no model: `check --skip-check` and the POPE/MRHal harness); and `amp train` /
//! `amp sft` on the tiny llava-hf fixture: image paths held to the data root, a response longer
//! than the model's context refused before anything is allocated for it.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use amp_chat::mock::{MockReply, MockServer};
use amp_data::pipeline::{Candidate, GeneratedRow};
use mdpo::Turn;

/// A valid 4x4 RGB PNG.
const TINY_PNG: [u8; 73] = [
    137, 80, 78, 71, 13, 10, 26, 10, 0, 0, 0, 13, 73, 72, 68, 82, 0, 0, 0, 4, 0, 0, 0, 4, 8, 2, 0, 0, 0, 38, 147, 9, 41, 0,
    0, 0, 16, 73, 68, 65, 84, 120, 156, 99, 56, 33, 39, 7, 71, 12, 196, 113, 0, 177, 99, 16, 65, 59, 75, 99, 130, 0, 0, 0,
    0, 73, 69, 78, 68, 174, 66, 96, 130,
];

fn amp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_amp")).args(args).env_remove("OPENAI_API_KEY").output().expect("run amp")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn generated(dir: &Path) -> PathBuf {
    let t = |f: &str, v: &str| Turn { from: f.into(), value: v.into() };
    let rows: String = (0..3)
        .map(|i| {
            let r = GeneratedRow {
                id: format!("rec-{i}"),
                index: i,
                image: format!("images/{i}.png"),
                standard: vec![t("human", "<image>\nWhat is it?"), t("gpt", "A red car.")],
                candidates: vec![Candidate {
                    source: "small".into(),
                    conversation: vec![t("human", "<image>\nWhat is it?"), t("gpt", "A blue car.")],
                    decoding: serde_json::Value::Null,
                }],
            };
            serde_json::to_string(&r).unwrap() + "\n"
        })
        .collect();
    let p = dir.join("gen.jsonl");
    std::fs::write(&p, rows).unwrap();
    p
}

#[test]
fn a_second_writer_fails_at_once_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let gen = generated(dir.path());
    let out = dir.path().join("out");
    let args = ["check", "--generated", s(&gen), "--out-dir", s(&out), "--skip-check"];
    // This test process holds the output, as a running `amp check` would.
    let held = amp_io::lock::OutputLock::dir(&out).unwrap();
    let t0 = Instant::now();
    let o = amp(&args);
    assert!(!o.status.success(), "a second writer must not run");
    let e = stderr(&o);
    assert!(e.contains("being written by another process") && e.contains(&format!("pid {}", std::process::id())), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(20), "it must fail at once, not wait");
    assert!(!out.join("checked.jsonl").exists(), "the refused process wrote nothing");
    drop(held);
    let o = amp(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.join("amp.json").exists());
}

fn pope(dir: &Path, n: usize) -> PathBuf {
    std::fs::write(dir.join("a.png"), TINY_PNG).unwrap();
    let rows: String = (0..n)
        .map(|i| format!("{{\"question_id\":{i},\"image\":\"a.png\",\"text\":\"Is there a cat?\",\"label\":\"yes\"}}\n"))
        .collect();
    let p = dir.join("coco_pope_random.json");
    std::fs::write(&p, rows).unwrap();
    p
}

#[test]
fn a_lock_left_by_a_killed_process_does_not_block_the_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = pope(d, 1);
    let slow = Arc::new(AtomicBool::new(true));
    let s2 = slow.clone();
    let server = MockServer::start(move |_| {
        let r = MockReply::completion("m", "Yes.");
        if s2.load(Ordering::SeqCst) {
            r.delayed(Duration::from_secs(20))
        } else {
            r
        }
    })
    .unwrap();
    let url = server.base_url();
    let out = d.join("answers.jsonl");
    let args = [
        "eval", "answer", "--bench", "pope", "--data", s(&data), "--out", s(&out), "--base-url", &url, "--model", "m",
        "--max-retries", "0", "--timeout-s", "60",
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_amp"))
        .args(args)
        .env_remove("OPENAI_API_KEY")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lock = d.join("answers.jsonl.lock");
    let pid = format!("pid {}", child.id());
    let t0 = Instant::now();
    while !std::fs::read_to_string(&lock).unwrap_or_default().contains(&pid) {
        assert!(t0.elapsed() < Duration::from_secs(60), "the first process never took the lock");
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = amp(&args);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains(&pid) && e.contains("eval answer"), "the holder is named with its command: {e}");
    child.kill().unwrap(); // SIGKILL: no cleanup runs, the lock file stays behind
    child.wait().unwrap();
    assert!(std::fs::read_to_string(&lock).unwrap().contains(&pid), "the stale lock file is still there");
    slow.store(false, Ordering::SeqCst);
    let o = amp(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 1);
}

#[test]
fn judge_and_score_exit_3_when_items_are_missing_after_writing_what_they_have() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = pope(d, 2);
    // One of the two items answered.
    let answers = d.join("answers.jsonl");
    std::fs::write(
        &answers,
        "{\"bench\":\"pope\",\"id\":\"random/0\",\"round\":0,\"question\":\"Is there a cat?\",\"answer\":\"Yes.\",\
         \"model\":\"m\",\"decoding\":null,\"meta\":{\"label\":\"yes\"}}\n",
    )
    .unwrap();
    let results = d.join("results.json");
    let o = amp(&["eval", "score", "--bench", "pope", "--data", s(&data), "--answers", s(&answers), "--out", s(&results)]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("1 item(s) missing"), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&results).unwrap()).unwrap();
    assert_eq!(r["items_scored"], 1, "the results of what is there are written");

    // judge: no answer for the only dialogue -> missing, exit 3 (no server is needed).
    std::fs::write(d.join("a.png"), TINY_PNG).unwrap();
    let gt = d.join("eval_gt.json");
    std::fs::write(
        &gt,
        r#"[{"id":"d1","image":"a.png","revised":[{"from":"human","value":"<image>\nWhat?"},{"from":"gpt","value":"A cat."}]}]"#,
    )
    .unwrap();
    let empty = d.join("none.jsonl");
    std::fs::write(&empty, "").unwrap();
    let judge = |gt: &Path| {
        amp(&[
            "eval", "judge", "--bench", "mrhal", "--data", s(gt), "--answers", s(&empty), "--out", s(&d.join("j.jsonl")),
            "--judge-model", "m", "--judge-base-url", "http://127.0.0.1:9/v1",
        ])
    };
    let o = judge(&gt);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    // An empty benchmark is an error (exit 1), not "0 judged".
    std::fs::write(&gt, "[]").unwrap();
    let o = judge(&gt);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("no records"), "{}", stderr(&o));
}

/// `amp train` on `data` with the tiny fixture (K = 3, one step), into `run`.
fn train(data: &Path, run: &Path, extra: &[&str]) -> Output {
    let model = common::fixtures().join("hf");
    let mut args = vec![
        "train", "--model", s(&model), "--data", s(data), "--levels", "3", "--max-steps", "1", "--batch-size", "2",
        "--grad-accum", "1", "--lora-r", "4", "--output-dir", s(run),
    ];
    args.extend_from_slice(extra);
    amp(&args)
}

#[test]
fn train_refuses_a_response_longer_than_the_context_before_allocating_and_suggests_max_len() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("amp.json");
    common::write_amp_file(&data, &common::fixtures().join("image.png"), 4);
    let mut rows: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&data).unwrap()).unwrap();
    rows[3]["output_2"][1]["value"] = "word ".repeat(50_000).into();
    std::fs::write(&data, rows.to_string()).unwrap();
    let run = dir.path().join("run");
    let t0 = Instant::now();
    let o = train(&data, &run, &[]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    for needle in ["example ex3: response 1", "more than the model's context of 512 tokens", "max_position_embeddings", "--max-len"] {
        assert!(e.contains(needle), "{needle:?} missing from {e}");
    }
    let tokens: usize = e.split(" tokens, more than").next().unwrap().rsplit(' ').next().unwrap().parse().unwrap();
    assert!(tokens >= 50_000, "the token count is named: {e}");
    assert!(t0.elapsed() < Duration::from_secs(120), "it must fail before training, not after an allocation");
    assert!(!run.join("metrics.jsonl").exists() && !run.join("adapter").exists(), "nothing was trained");
    // truncated to the context, the same data trains
    let o = train(&data, &dir.path().join("run2"), &["--max-len", "500"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // a --max-len above the context is named as the problem
    let o = train(&data, &dir.path().join("run3"), &["--max-len", "100000"]);
    assert!(!o.status.success() && stderr(&o).contains("--max-len 100000 is above it"), "{}", stderr(&o));
}

#[test]
fn train_and_sft_refuse_image_paths_outside_the_data_root_naming_file_record_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data");
    std::fs::create_dir_all(&d).unwrap();
    let fixture_image = common::fixtures().join("image.png");
    // a file next to the data directory, reached with `..`
    std::fs::copy(&fixture_image, dir.path().join("secret.png")).unwrap();
    let data = d.join("amp.json");
    for (image, shown) in [("../secret.png", "\"../secret.png\""), (fixture_image.to_str().unwrap(), "image.png")] {
        common::write_amp_file(&data, Path::new("placeholder.png"), 2);
        let mut rows: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&data).unwrap()).unwrap();
        rows[1]["image"] = image.into();
        rows[0]["image"] = "image.png".into();
        std::fs::copy(&fixture_image, d.join("image.png")).unwrap();
        std::fs::write(&data, rows.to_string()).unwrap();
        let run = dir.path().join("run");
        let o = train(&data, &run, &[]);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{e}");
        for needle in ["amp.json", "record 1.image", shown, "outside the data root", "--allow-outside-root"] {
            assert!(e.contains(needle), "{needle:?} missing from {e}");
        }
        assert!(!run.exists(), "refused before the run directory was made");
        // sft reads the same field the same way
        let o = amp(&[
            "sft", "--model", s(&common::fixtures().join("hf")), "--data", s(&data), "--max-steps", "1", "--lora-r", "4",
            "--output-dir", s(&run),
        ]);
        assert!(!o.status.success() && stderr(&o).contains("record 1.image") && stderr(&o).contains("outside the data root"), "{}", stderr(&o));
    }
    // the user can allow it
    let o = train(&data, &dir.path().join("run-allowed"), &["--allow-outside-root"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // or name a root that holds it (relative paths then resolve against it)
    let mut rows: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&data).unwrap()).unwrap();
    rows[0]["image"] = fixture_image.to_str().unwrap().into();
    std::fs::write(&data, rows.to_string()).unwrap();
    let o = train(&data, &dir.path().join("run-root"), &["--image-root", s(&common::fixtures())]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_second_amp_train_in_one_output_directory_fails_at_once_naming_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("amp.json");
    common::write_amp_file(&data, &common::fixtures().join("image.png"), 2);
    let run = dir.path().join("run");
    // This test process holds the run directory, as a running `amp train` would.
    let held = amp_io::lock::OutputLock::dir(&run).unwrap();
    let o = train(&data, &run, &[]);
    let e = stderr(&o);
    assert!(!o.status.success(), "a second writer must not run");
    assert!(e.contains("being written by another process") && e.contains(&format!("pid {}", std::process::id())), "{e}");
    assert!(!run.join("metrics.jsonl").exists() && !run.join("checkpoints").exists(), "the refused run wrote nothing");
    drop(held);
    let o = train(&data, &run, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(run.join("adapter/adapter_model.safetensors").is_file());
}
