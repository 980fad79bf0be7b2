//! End-to-end against a loopback OpenAI-compatible server: the MRHal answering protocol and
//! its resume, judging with retries/failures/cache and resume after a kill, scoring, reports.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amp_chat::mock::{MockReply, MockServer};
use amp_chat::{Backoff, ChatClient, ChatConfig};
use amp_io::paths::DataRoot;
use mrhal_bench::answers::{generate_answers, load_answers, mrhal_tasks, Benchmark};
use mrhal_bench::data::load_mrhal;
use mrhal_bench::report::{bar_chart, markdown_table, read_results, write_results};
use mrhal_bench::responder::{Decoding, OpenAiResponder, Responder, Turn};
use mrhal_bench::runner::{judge_mrhal, score_mrhal, RunResults};
use mrhal_bench::LlmJudge;
use serde_json::{json, Value};

/// A valid 4x4 RGB PNG (answering decodes images before a responder sees them).
const TINY_PNG: [u8; 73] = [
    137, 80, 78, 71, 13, 10, 26, 10, 0, 0, 0, 13, 73, 72, 68, 82, 0, 0, 0, 4, 0, 0, 0, 4, 8, 2, 0, 0, 0, 38, 147, 9, 41, 0,
    0, 0, 16, 73, 68, 65, 84, 120, 156, 99, 56, 33, 39, 7, 71, 12, 196, 113, 0, 177, 99, 16, 65, 59, 75, 99, 130, 0, 0, 0,
    0, 73, 69, 78, 68, 174, 66, 96, 130,
];

fn write_mrhal(dir: &Path, rounds: &[(&str, usize)]) -> std::path::PathBuf {
    let items: Vec<Value> = rounds
        .iter()
        .map(|(id, n)| {
            let conv: Vec<Value> = (0..*n)
                .flat_map(|r| {
                    let q = if r == 0 { format!("<image>\n{id}-Q{r}") } else { format!("{id}-Q{r}") };
                    [json!({"from":"human","value": q}), json!({"from":"gpt","value": format!("{id}-REF{r}")})]
                })
                .collect();
            std::fs::write(dir.join(format!("{id}.png")), TINY_PNG).unwrap();
            json!({"id": id, "image": format!("{id}.png"), "image_content": ["cat", "mat"], "label": "existence", "revised": conv})
        })
        .collect();
    let p = dir.join("eval_gt.json");
    std::fs::write(&p, serde_json::to_string(&items).unwrap()).unwrap();
    p
}

fn config(server: &MockServer, model: &str) -> ChatConfig {
    let mut c = ChatConfig::new(server.base_url(), model);
    c.timeout = Duration::from_millis(2000);
    c.max_retries = 1;
    c.concurrency = 3;
    c.backoff = Backoff { base: Duration::from_millis(5), max: Duration::from_millis(20), max_retry_after: Duration::from_secs(1) };
    c
}

#[test]
fn mrhal_answers_use_own_history_and_resume_after_failure() {
    let dir = tempfile::tempdir().unwrap();
    let gt = write_mrhal(dir.path(), &[("d1", 2), ("d2", 3), ("d3", 1)]);
    let items = load_mrhal(&gt).unwrap();
    let violations = Arc::new(Mutex::new(Vec::<String>::new()));
    let fail = Arc::new(Mutex::new(true));
    let (v2, f2) = (violations.clone(), fail.clone());
    let server = MockServer::start(move |r| {
        let body = r.json();
        let msgs = body["messages"].as_array().cloned().unwrap_or_default();
        let bad = |s: String| v2.lock().unwrap().push(s);
        // First message: user with an image data URL and then the first question.
        let first = &msgs[0];
        if first["role"] != "user" || first["content"][0]["image_url"]["url"].as_str().is_none_or(|u| !u.starts_with("data:image/png;base64,")) {
            bad(format!("first message has no image: {first}"));
        }
        for (i, m) in msgs.iter().enumerate().skip(1) {
            if m["content"].is_array() {
                bad(format!("image repeated in message {i}"));
            }
            // History must be the model's own answers ("ans:<question>"), never the references.
            if m["role"] == "assistant" {
                let prev_q = msgs[i - 1]["content"].as_str().map(str::to_string)
                    .unwrap_or_else(|| msgs[i - 1]["content"][1]["text"].as_str().unwrap_or("").to_string());
                if m["content"] != json!(format!("ans:{prev_q}")) {
                    bad(format!("assistant turn {i} is not the model's own answer: {}", m["content"]));
                }
            }
        }
        if body.to_string().contains("REF") {
            bad("reference answer leaked into the prompt".into());
        }
        let q = r.last_message_text();
        if q == "d2-Q1" && *f2.lock().unwrap() {
            return MockReply::raw(500, "down");
        }
        MockReply::completion("served-llava", &format!("ans:{q}"))
    })
    .unwrap();
    let responder = OpenAiResponder { client: ChatClient::new(config(&server, "llava-test")).unwrap(), decoding: Decoding::default(), system: None };
    let out = dir.path().join("answers.jsonl");
    let tasks = mrhal_tasks(&items);
    let s = generate_answers(&responder, Benchmark::Mrhal, &tasks, &DataRoot::new(dir.path(), false), &out, 2).unwrap();
    // d1: 2, d2: round 0 only (round 1 fails after 1 retry = 2 requests), d3: 1.
    assert_eq!(s.generated, 4);
    assert_eq!(s.failed.len(), 1);
    assert_eq!(s.failed[0].0, "d2");
    assert_eq!(server.requests(), 2 + 1 + 2 + 1);
    *fail.lock().unwrap() = false;
    let s = generate_answers(&responder, Benchmark::Mrhal, &tasks, &DataRoot::new(dir.path(), false), &out, 2).unwrap();
    assert_eq!((s.generated, s.resumed, s.failed.len()), (2, 4, 0));
    assert_eq!(server.requests(), 6 + 2, "only d2 rounds 1 and 2 are asked again");
    assert!(violations.lock().unwrap().is_empty(), "{:?}", violations.lock().unwrap());
    let set = load_answers(&out).unwrap();
    assert_eq!(set.model.as_deref(), Some("llava-test"));
    assert_eq!(set.items["d2"].complete(3).unwrap(), vec!["ans:d2-Q0", "ans:d2-Q1", "ans:d2-Q2"]);
    assert_eq!(set.decoding["temperature"], 0.0);
    // Another model writing into the same file is refused.
    let other = OpenAiResponder { client: ChatClient::new(config(&server, "other")).unwrap(), decoding: Decoding::default(), system: None };
    assert!(generate_answers(&other, Benchmark::Mrhal, &tasks, &DataRoot::new(dir.path(), false), &out, 1).is_err());
}

/// A local responder (as the lead's `mllm` adapter will be).
struct EchoResponder;
impl Responder for EchoResponder {
    fn name(&self) -> String {
        "echo".into()
    }
    fn decoding(&self) -> Value {
        json!({"temperature": 0.0, "num_beams": 1, "seed": 3})
    }
    fn respond(&self, _image: &[u8], turns: &[Turn]) -> Result<String, mrhal_bench::BoxError> {
        Ok(format!("I see {}", turns.last().unwrap().text))
    }
}

#[test]
fn judging_resumes_after_kill_caches_and_reports_missing() {
    let dir = tempfile::tempdir().unwrap();
    let ids = [("d1", 2), ("d2", 1), ("d3", 3), ("d4", 2), ("d5", 1), ("d6", 2)];
    let gt = write_mrhal(dir.path(), &ids);
    let items = load_mrhal(&gt).unwrap();
    let answers = dir.path().join("answers.jsonl");
    generate_answers(&EchoResponder, Benchmark::Mrhal, &mrhal_tasks(&items), &DataRoot::new(dir.path(), false), &answers, 1).unwrap();
    let set = load_answers(&answers).unwrap();

    // Judge: "Ratings: [...]" with one rating per "Round k" block; d5 gets an unparsable
    // answer, d6 a persistent 503.
    let server = MockServer::start(|r| {
        let prompt = r.last_message_text();
        let rounds = prompt.matches("\nQuestion: ").count() + usize::from(prompt.starts_with("Question: "));
        if prompt.contains("d5-Q0") {
            return MockReply::completion("judge-0613", "Looks fine to me, no issues.");
        }
        if prompt.contains("d6-Q0") {
            return MockReply::raw(503, "overloaded");
        }
        let ratings: Vec<String> = (0..rounds).map(|i| ((i * 2 + 1) % 7).to_string()).collect();
        MockReply::completion("judge-0613", &format!("Round checks done.\nRatings: [{}]", ratings.join(", ")))
    })
    .unwrap();
    let mut cfg = config(&server, "judge");
    cfg.cache_path = Some(dir.path().join("judge-cache.jsonl"));
    let judgments = dir.path().join("judgments.jsonl");

    // Run 1 is "killed" after three dialogues (only the first three are given), leaving a
    // torn line behind.
    {
        let judge = LlmJudge::new(ChatClient::new(cfg.clone()).unwrap());
        let s = judge_mrhal(&judge, &items[..3], &set, &judgments, 2).unwrap();
        assert_eq!((s.judged, s.failed.len()), (3, 0));
        assert_eq!(server.requests(), 3);
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&judgments).unwrap();
        f.write_all(b"{\"bench\":\"mrhal\",\"id\":\"d4\",\"answer_mo").unwrap();
    }
    // Run 2: the three judged dialogues are not asked again.
    let judge = LlmJudge::new(ChatClient::new(cfg.clone()).unwrap());
    let s = judge_mrhal(&judge, &items, &set, &judgments, 2).unwrap();
    assert_eq!(s.resumed, 3);
    assert_eq!(s.judged, 1); // d4
    let mut failed: Vec<&str> = s.failed.iter().map(|(id, _)| id.as_str()).collect();
    failed.sort();
    assert_eq!(failed, vec!["d5", "d6"]);
    assert!(s.failed.iter().any(|(id, why)| id == "d5" && why.contains("unparsable")));
    assert!(s.failed.iter().any(|(id, why)| id == "d6" && why.contains("503")));
    // d4: 1, d5: 1, d6: 1 + 1 retry
    assert_eq!(server.requests(), 3 + 4);

    // Scoring: d5 and d6 are missing, never 0.
    let r = score_mrhal(&items, &set, &judgments).unwrap();
    assert_eq!((r.items_scored, r.missing.judge_failed, r.missing.total()), (4, 2, 2));
    assert_eq!(r.judge_models.keys().collect::<Vec<_>>(), vec!["judge-0613"]);
    assert_eq!(r.prompt_hashes.len(), 1);
    assert_eq!(r.judge_params.len(), 1);
    assert_eq!(r.judge_params[0]["model_requested"], "judge");
    assert_eq!(r.judge_params[0]["temperature"], 0.0);
    assert_eq!(r.judge_params[0]["max_tokens"], 1024);
    assert_eq!(r.judge_params[0]["templates"]["mrhal"].as_str().unwrap().len(), 64);

    // A changed judge setting (here max_tokens) is not served from verdicts made with the old
    // one: every successfully judged item is judged again.
    {
        let mut judge = LlmJudge::new(ChatClient::new(config(&server, "judge")).unwrap());
        judge.params.max_tokens = 512;
        let before = server.requests();
        let s = judge_mrhal(&judge, &items[..2], &set, &dir.path().join("judgments-copy.jsonl"), 2).unwrap();
        assert_eq!(s.judged, 2);
        std::fs::copy(&judgments, dir.path().join("judgments-copy.jsonl")).unwrap();
        let s = judge_mrhal(&judge, &items[..2], &set, &dir.path().join("judgments-copy.jsonl"), 2).unwrap();
        assert_eq!((s.judged, s.resumed), (2, 0));
        assert_eq!(server.requests() - before, 4);
    }
    assert_eq!(r.decoding["seed"], 3);
    // Ratings per round are (2i+1) % 7 = 1, 3, 5: d1 [1,3], d2 [1], d3 [1,3,5], d4 [1,3]
    // Σ = 4+1+9+4 = 18 over 8 rounds = 2.25; rounds < 3: 4 of 8.
    assert!((r.metrics["cumulative_score"] - 2.25).abs() < 1e-12);
    assert!((r.metrics["cumulative_hallucination_rate"] - 0.5).abs() < 1e-12);

    // Run 3 after losing the judgments file: every verdict that parsed comes from the cache;
    // d5's unparsable reply was never cached (a one-off bad reply must not become permanent,
    // docs/reliability.md), so d5 is asked again (1 request) and d6 too (1 + 1 retry).
    std::fs::remove_file(&judgments).unwrap();
    let judge = LlmJudge::new(ChatClient::new(cfg).unwrap());
    let before = server.requests();
    let s = judge_mrhal(&judge, &items, &set, &judgments, 2).unwrap();
    assert_eq!(s.judged, 4);
    assert_eq!(server.requests() - before, 3);
    assert_eq!(judge.client.stats().cache_hits, 4);
}

fn results(model: &str, cum: f64, rate: Option<f64>) -> RunResults {
    let mut metrics = std::collections::BTreeMap::new();
    metrics.insert("cumulative_score".to_string(), cum);
    metrics.insert("mean_score".to_string(), cum - 0.2);
    if let Some(r) = rate {
        metrics.insert("cumulative_hallucination_rate".to_string(), r);
    }
    RunResults {
        benchmark: Benchmark::Mrhal,
        model: model.into(),
        decoding: json!({"temperature": 0.0}),
        judge_models: [("gpt-4-0613".to_string(), 10)].into_iter().collect(),
        prompt_hashes: Default::default(),
        judge_params: vec![],
        items_total: 12,
        items_scored: 10,
        missing: mrhal_bench::runner::Missing { judge_failed: 2, ..Default::default() },
        metrics,
        details: Value::Null,
        tool: "test".into(),
    }
}

#[test]
fn reports_markdown_and_png() {
    let dir = tempfile::tempdir().unwrap();
    let a = results("llava-7b", 2.75, Some(0.41));
    let b = results("llava-7b-mdpo", 3.12, None);
    let pa = dir.path().join("a.json");
    write_results(&pa, &a).unwrap();
    assert_eq!(read_results(&pa).unwrap(), a);
    let md = markdown_table(&[a.clone(), b.clone()], None);
    assert!(md.contains("| llava-7b | 2.750 | 2.550 | 0.410 |"), "{md}");
    assert!(md.contains("| llava-7b-mdpo | 3.120 | 2.920 | n/a |"), "{md}");
    assert!(md.contains("| 10/12 | 2 | gpt-4-0613 |"), "{md}");
    let png = dir.path().join("chart.png");
    let metrics: Vec<(Benchmark, String)> =
        ["cumulative_score", "mean_score", "cumulative_hallucination_rate"].iter().map(|m| (Benchmark::Mrhal, m.to_string())).collect();
    bar_chart(&png, "MRHal-Bench", &[a, b], &metrics).unwrap();
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[1..4], b"PNG");
    let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((w, h), (3 * 520, 380 + 60));
    if let Ok(keep) = std::env::var("MRHAL_KEEP_CHART") {
        std::fs::copy(&png, keep).unwrap();
    }
}

#[test]
fn the_clients_own_error_comes_back_through_responder_and_judge() {
    use mrhal_bench::{Judge, JudgeFailure};
    use std::error::Error as _;
    let server = MockServer::start(|_| MockReply::raw(400, r#"{"error":{"message":"bad model"}}"#)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let items = load_mrhal(&write_mrhal(dir.path(), &[("d1", 1)])).unwrap();
    let responder = OpenAiResponder { client: ChatClient::new(config(&server, "m")).unwrap(), decoding: Decoding::default(), system: None };
    let err = responder.respond(b"\x89PNG", &[Turn::user("Q")]).unwrap_err();
    assert!(err.downcast_ref::<amp_chat::ChatError>().is_some(), "{err}");
    let judge = LlmJudge::new(ChatClient::new(config(&server, "judge")).unwrap());
    match judge.rate_mrhal(&items[0], &["an answer".to_string()]) {
        Err(f @ JudgeFailure::Api(_)) => {
            let src = f.source().unwrap().downcast_ref::<amp_chat::ChatError>();
            assert!(src.is_some_and(|e| e.to_string().contains("400")), "{f}");
        }
        other => panic!("expected an API failure, got {other:?}"),
    }
}
