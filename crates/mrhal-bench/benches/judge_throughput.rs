//! Judge throughput against a loopback OpenAI-compatible server with a fixed latency.
//!
//! Runs the full judging path (prompt rendering, HTTP, strict parsing, fsync'd judgments file)
//! over N synthetic MMHal-Bench items and compares the wall time with the ideal
//! N × latency / concurrency. Exits non-zero if the headline case (N = 64, concurrency 8,
//! 100 ms) is slower than 1.25× ideal.
//!
//! `cargo bench -p mrhal-bench --bench judge_throughput`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use amp_chat::mock::{MockReply, MockServer};
use amp_chat::{ChatClient, ChatConfig};
use mrhal_bench::answers::{AnswerSet, Benchmark, ItemAnswers};
use mrhal_bench::data::{ImageRef, MmhalItem};
use mrhal_bench::runner::judge_mmhal;
use mrhal_bench::LlmJudge;

fn items(n: usize) -> (Vec<MmhalItem>, AnswerSet) {
    let items: Vec<MmhalItem> = (0..n)
        .map(|i| MmhalItem {
            index: i,
            question_type: None,
            question_topic: None,
            image_id: None,
            image_src: None,
            image: ImageRef::None,
            image_content: vec!["cat".into(), "sofa".into()],
            question: format!("What is the cat doing in picture {i}?"),
            gt_answer: "It sleeps on the sofa.".into(),
            model_answer: None,
        })
        .collect();
    let mut map = BTreeMap::new();
    for it in &items {
        map.insert(it.id(), ItemAnswers { rounds: vec![Some(format!("The cat sleeps ({}).", it.index))], meta: serde_json::Value::Null });
    }
    let set = AnswerSet { bench: Some(Benchmark::Mmhal), model: Some("bench-model".into()), decoding: serde_json::Value::Null, items: map };
    (items, set)
}

fn run(n: usize, concurrency: usize, latency: Duration) -> (Duration, f64) {
    let server = MockServer::start(move |_| {
        MockReply::completion("judge-bench-0613", "Informative and faithful.\nRating: 5").delayed(latency)
    })
    .expect("bind loopback");
    let mut cfg = ChatConfig::new(server.base_url(), "judge-bench");
    cfg.concurrency = concurrency;
    cfg.max_retries = 0;
    cfg.timeout = Duration::from_secs(10);
    let judge = LlmJudge::new(ChatClient::new(cfg).expect("client"));
    let (items, set) = items(n);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("judgments.jsonl");
    let t = Instant::now();
    let s = judge_mmhal(&judge, &items, &set, &out, concurrency).expect("judge");
    let wall = t.elapsed();
    assert_eq!(s.judged, n, "every item must be judged: {:?}", s.failed);
    assert_eq!(server.requests(), n as u64);
    let ideal = latency.as_secs_f64() * n as f64 / concurrency as f64;
    (wall, wall.as_secs_f64() / ideal)
}

fn main() {
    let latency = Duration::from_millis(100);
    println!("judge throughput, loopback server, fixed latency {} ms", latency.as_millis());
    println!("{:>5} {:>11} {:>9} {:>10} {:>8} {:>10}", "N", "concurrency", "ideal_s", "wall_s", "ratio", "items/s");
    let mut headline = f64::INFINITY;
    for (n, c) in [(16, 1), (64, 4), (64, 8), (64, 16), (128, 32)] {
        let (wall, ratio) = run(n, c, latency);
        let ideal = latency.as_secs_f64() * n as f64 / c as f64;
        println!(
            "{n:>5} {c:>11} {ideal:>9.3} {:>10.3} {ratio:>8.3} {:>10.1}",
            wall.as_secs_f64(),
            n as f64 / wall.as_secs_f64()
        );
        if (n, c) == (64, 8) {
            headline = ratio;
        }
    }
    if headline > 1.25 {
        eprintln!("FAIL: N=64, concurrency 8 took {headline:.3}x the ideal (limit 1.25x)");
        std::process::exit(1);
    }
    println!("ok: N=64, concurrency 8 within {headline:.3}x of ideal (limit 1.25x)");
}
