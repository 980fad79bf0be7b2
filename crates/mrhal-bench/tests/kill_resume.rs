//! A judging process killed midway (SIGKILL) and restarted asks the judge nothing it already
//! answered: requests are counted at a loopback server.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use amp_chat::mock::{MockReply, MockServer};
use amp_chat::{ChatClient, ChatConfig};
use amp_io::paths::DataRoot;
use mrhal_bench::answers::{generate_answers, load_answers, mrhal_tasks, Benchmark};
use mrhal_bench::data::load_mrhal;
use mrhal_bench::jsonl::read_jsonl;
use mrhal_bench::responder::{Responder, Turn};
use mrhal_bench::runner::{judge_mrhal, JudgmentRecord};
use mrhal_bench::LlmJudge;
use serde_json::json;

const N: usize = 8;

/// A valid 4x4 PNG, base64 (answering decodes images before a responder sees them).
const TINY_PNG_B64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAQAAAAECAIAAAAmkwkpAAAAEElEQVR4nGM4IScHRwzEcQCxYxBBO0tjggAAAABJRU5ErkJggg==";

struct Echo;
impl Responder for Echo {
    fn name(&self) -> String {
        "echo".into()
    }
    fn decoding(&self) -> serde_json::Value {
        json!({})
    }
    fn respond(&self, _: &[u8], turns: &[Turn]) -> Result<String, mrhal_bench::BoxError> {
        Ok(format!("answer to {}", turns.last().unwrap().text))
    }
}

fn setup(dir: &Path) {
    let items: Vec<_> = (0..N)
        .map(|i| {
            json!({"id": format!("d{i}"), "image": {"bytes": TINY_PNG_B64}, "image_content": ["x"],
                   "revised": [{"from":"human","value":format!("<image>\nq{i}")},{"from":"gpt","value":"r"}]})
        })
        .collect();
    std::fs::write(dir.join("gt.json"), serde_json::to_string(&items).unwrap()).unwrap();
    let data = load_mrhal(&dir.join("gt.json")).unwrap();
    generate_answers(&Echo, Benchmark::Mrhal, &mrhal_tasks(&data), &DataRoot::new(dir, false), &dir.join("answers.jsonl"), 1).unwrap();
}

fn judge_once(dir: &Path, base_url: &str) -> u64 {
    let data = load_mrhal(&dir.join("gt.json")).unwrap();
    let set = load_answers(&dir.join("answers.jsonl")).unwrap();
    let mut cfg = ChatConfig::new(base_url, "judge");
    cfg.concurrency = 1;
    cfg.max_retries = 0;
    cfg.timeout = Duration::from_secs(5);
    let judge = LlmJudge::new(ChatClient::new(cfg).unwrap());
    let s = judge_mrhal(&judge, &data, &set, &dir.join("judgments.jsonl"), 1).unwrap();
    assert!(s.failed.is_empty(), "{:?}", s.failed);
    judge.client.stats().requests
}

/// The child half: runs only when the parent test sets the environment.
#[test]
#[ignore = "spawned by killed_judge_process_resumes_without_repeating"]
fn child_judge_process() {
    let (Ok(dir), Ok(url)) = (std::env::var("MRHAL_KILL_DIR"), std::env::var("MRHAL_KILL_URL")) else { return };
    judge_once(Path::new(&dir), &url);
}

#[test]
fn killed_judge_process_resumes_without_repeating() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let server = MockServer::start(|_| {
        MockReply::completion("judge-0613", "fine\nRatings: [4]").delayed(Duration::from_millis(120))
    })
    .unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["child_judge_process", "--exact", "--ignored", "--nocapture", "--test-threads", "1"])
        .env("MRHAL_KILL_DIR", dir.path())
        .env("MRHAL_KILL_URL", server.base_url())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while server.requests() < 4 {
        assert!(t.elapsed() < Duration::from_secs(20), "child made no progress");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("child exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL mid-request
    child.wait().unwrap();
    let asked_before = server.requests();
    let recorded: Vec<JudgmentRecord> = read_jsonl(&dir.path().join("judgments.jsonl")).unwrap();
    let recorded = recorded.iter().filter(|r| r.ok).count();
    assert!((2..N).contains(&recorded), "kill did not land midway: {recorded} recorded");

    let asked_now = judge_once(dir.path(), &server.base_url());
    assert_eq!(asked_now as usize, N - recorded, "restart re-asked an answered item");
    assert_eq!(server.requests(), asked_before + asked_now);
    let all: Vec<JudgmentRecord> = read_jsonl(&dir.path().join("judgments.jsonl")).unwrap();
    let mut ids: Vec<&str> = all.iter().filter(|r| r.ok).map(|r| r.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), N);
}
