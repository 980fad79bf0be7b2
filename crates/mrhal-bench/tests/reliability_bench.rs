//! Issue 13 for the benchmark harness (docs/reliability.md): an answers file with an absurd
//! `round` is a clear error (no overflow, no giant allocation); an empty benchmark file is an
//! error; a one-off unparsable judge reply is not cached, so a rerun retries it; image files
//! outside the data root are never read or sent, and non-images never sent.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amp_chat::mock::{MockReply, MockServer};
use amp_chat::{Backoff, ChatClient, ChatConfig};
use clap::Parser;
use mrhal_bench::answers::load_answers;
use mrhal_bench::cli::DataArgs;
use mrhal_bench::data::{load_mrhal, load_pope};
use mrhal_bench::responder::{Responder, Turn};
use mrhal_bench::runner::judge_mrhal;
use mrhal_bench::LlmJudge;
use serde_json::{json, Value};

/// A valid 4x4 RGB PNG.
const TINY_PNG: [u8; 73] = [
    137, 80, 78, 71, 13, 10, 26, 10, 0, 0, 0, 13, 73, 72, 68, 82, 0, 0, 0, 4, 0, 0, 0, 4, 8, 2, 0, 0, 0, 38, 147, 9, 41, 0,
    0, 0, 16, 73, 68, 65, 84, 120, 156, 99, 56, 33, 39, 7, 71, 12, 196, 113, 0, 177, 99, 16, 65, 59, 75, 99, 130, 0, 0, 0,
    0, 73, 69, 78, 68, 174, 66, 96, 130,
];

fn answer_line(round: &str) -> String {
    format!(
        "{{\"bench\":\"mrhal\",\"id\":\"d1\",\"round\":{round},\"question\":\"q\",\"answer\":\"a\",\"model\":\"m\",\"decoding\":null}}\n"
    )
}

#[test]
fn an_absurd_round_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("answers.jsonl");
    // 2^64 - 1 overflowed `round + 1`; 10^9 allocated 24 GB of `None`s.
    for round in ["18446744073709551615", "1000000000"] {
        std::fs::write(&p, answer_line("0") + &answer_line(round)).unwrap();
        let e = load_answers(&p).expect_err("an absurd round must be refused").to_string();
        assert!(e.contains("answers.jsonl") && e.contains("line 2") && e.contains("round"), "{e}");
    }
    std::fs::write(&p, answer_line("0") + &answer_line("1")).unwrap();
    assert_eq!(load_answers(&p).unwrap().items["d1"].rounds.len(), 2);
    // A truncated last answer is named, not ignored (judge and score read answers strictly).
    std::fs::write(&p, answer_line("0") + "{\"bench\":\"mrhal\",\"id\":\"d1\",\"rou").unwrap();
    let e = load_answers(&p).unwrap_err().to_string();
    assert!(e.contains("answers.jsonl") && e.contains("line 2") && e.contains("truncated"), "{e}");
}

#[test]
fn an_empty_benchmark_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [("eval_gt.json", ""), ("eval_gt.json", "[]"), ("rows.jsonl", "\n\n")] {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        let e = load_mrhal(&p).expect_err("an empty benchmark must not be '0 judged'").to_string();
        assert!(e.contains(name) && e.contains("no records"), "{e}");
    }
    let p = dir.path().join("coco_pope_random.json");
    std::fs::write(&p, "").unwrap();
    assert!(load_pope(&p, None).is_err());
    // A truncated last line of a JSONL benchmark names the line.
    std::fs::write(&p, "{\"question_id\":1,\"image\":\"a.jpg\",\"text\":\"Is there a cat?\"}\n{\"question_id\":2,").unwrap();
    let e = load_pope(&p, None).unwrap_err().to_string();
    assert!(e.contains("line 2"), "{e}");
}

fn write_gt(dir: &Path, image: &str) -> PathBuf {
    let items = json!([{"id": "d1", "image": image, "image_content": ["cat"], "revised": [
        {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A cat."}]}]);
    let p = dir.join("eval_gt.json");
    std::fs::write(&p, items.to_string()).unwrap();
    p
}

fn judge_client(server: &MockServer, cache: &Path) -> ChatClient {
    let mut c = ChatConfig::new(server.base_url(), "judge");
    c.timeout = Duration::from_millis(2000);
    c.max_retries = 0;
    c.backoff = Backoff { base: Duration::from_millis(1), max: Duration::from_millis(2), max_retry_after: Duration::from_secs(1) };
    c.cache_path = Some(cache.to_path_buf());
    ChatClient::new(c).unwrap()
}

#[test]
fn an_unparsable_judge_reply_is_not_cached_and_a_rerun_retries_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("d1.png"), TINY_PNG).unwrap();
    let gt = write_gt(d, "d1.png");
    let items = load_mrhal(&gt).unwrap();
    std::fs::write(d.join("answers.jsonl"), answer_line("0")).unwrap();
    let answers = load_answers(&d.join("answers.jsonl")).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    let server = MockServer::start(move |_| {
        // The first reply is a one-off refusal; every later one is a valid rating.
        let n = c2.fetch_add(1, Ordering::SeqCst);
        MockReply::completion("judge-0613", if n == 0 { "I cannot rate this." } else { "Ratings: [5]" })
    })
    .unwrap();
    let (cache, out) = (d.join("cache.jsonl"), d.join("judgments.jsonl"));
    let judge = LlmJudge::new(judge_client(&server, &cache));
    let s = judge_mrhal(&judge, &items, &answers, &out, 1).unwrap();
    assert_eq!((s.judged, s.failed.len()), (0, 1));
    // "rerun to retry": a new process, same cache.
    let judge = LlmJudge::new(judge_client(&server, &cache));
    let s = judge_mrhal(&judge, &items, &answers, &out, 1).unwrap();
    assert_eq!((s.judged, s.failed.len()), (1, 0), "the rerun must ask the judge again, not replay the bad reply");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // The valid reply is cached: a third run over a fresh judgments file asks nobody.
    let judge = LlmJudge::new(judge_client(&server, &cache));
    let s = judge_mrhal(&judge, &items, &answers, &d.join("j2.jsonl"), 1).unwrap();
    assert_eq!((s.judged, calls.load(Ordering::SeqCst)), (1, 2));
}

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    data: DataArgs,
}

/// Records the image bytes it is given.
struct Spy(Mutex<Vec<Vec<u8>>>);

impl Responder for Spy {
    fn name(&self) -> String {
        "spy".into()
    }
    fn decoding(&self) -> Value {
        Value::Null
    }
    fn respond(&self, image: &[u8], _: &[Turn]) -> Result<String, mrhal_bench::BoxError> {
        self.0.lock().unwrap().push(image.to_vec());
        Ok("A cat.".into())
    }
}

#[test]
fn images_outside_the_data_root_or_not_images_are_never_read_or_sent() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("bench");
    std::fs::create_dir_all(&d).unwrap();
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, "root:x:0:0:root:/root:/bin/bash\n").unwrap();
    std::fs::write(d.join("passwd.png"), "root:x:0:0:root:/root:/bin/bash\n").unwrap();
    for image in [secret.display().to_string(), "../secret.txt".into(), "passwd.png".into()] {
        let gt = write_gt(&d, &image);
        let a = Args::try_parse_from(["x", "--bench", "mrhal", "--data", gt.to_str().unwrap()]).unwrap();
        let spy = Spy(Mutex::new(vec![]));
        let out = d.join(format!("answers-{}.jsonl", image.len()));
        let s = mrhal_bench::cli::run_answer_with(&a.data, None, &out, &spy).unwrap();
        assert!(spy.0.lock().unwrap().is_empty(), "{image}: the file reached the responder");
        assert_eq!(s.failed.len(), 1, "{image}");
        let why = &s.failed[0].1;
        assert!(why.contains("image") && (why.contains("outside the data root") || why.contains("not a PNG or JPEG")), "{why}");
    }
}
