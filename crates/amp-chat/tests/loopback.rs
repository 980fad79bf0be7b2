//! The client against a loopback server: success, 429 + Retry-After (seconds and HTTP-date),
//! 500, malformed and empty bodies, timeouts, non-retriable 4xx, the cache across a restart,
//! and the concurrency bound.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use amp_chat::mock::{MockReply, MockServer};
use amp_chat::{Backoff, ChatClient, ChatConfig, ChatError, ChatRequest, Message};

fn config(server: &MockServer) -> ChatConfig {
    let mut c = ChatConfig::new(server.base_url(), "judge-model");
    c.api_key = Some("sk-test".into());
    c.timeout = Duration::from_millis(2000);
    c.max_retries = 3;
    c.concurrency = 4;
    c.backoff = Backoff {
        base: Duration::from_millis(10),
        max: Duration::from_millis(40),
        max_retry_after: Duration::from_secs(3),
    };
    c
}

fn req(q: &str) -> ChatRequest {
    ChatRequest::new("", vec![Message::system("sys"), Message::user(q)]).temperature(0.0).max_tokens(16)
}

#[test]
fn answers_and_records_served_model_and_headers() {
    let server = MockServer::start(|r| {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/v1/chat/completions");
        assert_eq!(r.header("authorization"), Some("Bearer sk-test"));
        let v = r.json();
        assert_eq!(v["model"], "judge-model");
        assert_eq!(v["temperature"], 0.0);
        MockReply::completion("judge-model-2024-05-13", &format!("echo {}", r.last_message_text()))
    })
    .unwrap();
    let client = ChatClient::new(config(&server)).unwrap();
    let r = client.complete(&req("hello")).unwrap();
    assert_eq!(r.content, "echo hello");
    assert_eq!(r.model, "judge-model-2024-05-13");
    assert_eq!(r.usage.unwrap().total_tokens, 12);
    assert!(!r.cached);
    assert_eq!(server.requests(), 1);
}

#[test]
fn honours_retry_after_seconds_on_429() {
    let server = MockServer::start(|r| {
        if r.index == 0 {
            MockReply::raw(429, r#"{"error":{"message":"slow down"}}"#).header("Retry-After", "1")
        } else {
            MockReply::completion("m", "ok")
        }
    })
    .unwrap();
    let client = ChatClient::new(config(&server)).unwrap();
    let t = Instant::now();
    let r = client.complete(&req("q")).unwrap();
    let waited = t.elapsed();
    assert_eq!(r.content, "ok");
    assert_eq!(server.requests(), 2);
    // The backoff alone would be ≤ 40 ms; Retry-After asked for 1 s.
    assert!(waited >= Duration::from_millis(950), "waited only {waited:?}");
    assert_eq!(client.stats().retries, 1);
}

#[test]
fn honours_retry_after_http_date_on_503() {
    let server = MockServer::start(|r| {
        if r.index == 0 {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
            // Two seconds from now at one-second resolution: the wait is between 1 and 2 s.
            MockReply::raw(503, "busy").header("Retry-After", &amp_chat::retry::format_http_date(now + 2))
        } else {
            MockReply::completion("m", "ok")
        }
    })
    .unwrap();
    let client = ChatClient::new(config(&server)).unwrap();
    let t = Instant::now();
    assert_eq!(client.complete(&req("q")).unwrap().content, "ok");
    assert!(t.elapsed() >= Duration::from_millis(900), "{:?}", t.elapsed());
    assert_eq!(server.requests(), 2);
}

#[test]
fn retries_500_malformed_and_empty_then_gives_up() {
    // 500, malformed, empty body, empty content, then success: 5 requests.
    let server = MockServer::start(|r| match r.index {
        0 => MockReply::raw(500, "oops"),
        1 => MockReply::raw(200, "{\"choices\": [ {\"mess"),
        2 => MockReply::raw(200, ""),
        3 => MockReply::completion("m", "   "),
        _ => MockReply::completion("m", "finally"),
    })
    .unwrap();
    let mut cfg = config(&server);
    cfg.max_retries = 4;
    let client = ChatClient::new(cfg).unwrap();
    assert_eq!(client.complete(&req("q")).unwrap().content, "finally");
    assert_eq!(server.requests(), 5);

    // Always 500: max_retries + 1 requests, then GaveUp naming the last failure.
    let server = MockServer::start(|_| MockReply::raw(500, r#"{"error":{"message":"boom"}}"#)).unwrap();
    let client = ChatClient::new(config(&server)).unwrap();
    let e = client.complete(&req("q")).unwrap_err();
    assert_eq!(server.requests(), 4);
    match &e {
        ChatError::GaveUp { attempts: 4, last } => {
            assert!(matches!(**last, ChatError::Http { status: 500, .. }), "{last}");
            assert!(e.to_string().contains("boom"), "{e}");
        }
        other => panic!("expected GaveUp, got {other}"),
    }
    assert_eq!(client.stats().failures, 1);
}

#[test]
fn does_not_retry_400_or_401() {
    let server = MockServer::start(|_| MockReply::raw(401, r#"{"error":{"message":"bad key"}}"#)).unwrap();
    let client = ChatClient::new(config(&server)).unwrap();
    let e = client.complete(&req("q")).unwrap_err();
    assert!(matches!(e, ChatError::Http { status: 401, .. }), "{e}");
    assert_eq!(server.requests(), 1);
}

#[test]
fn times_out_slow_servers() {
    let server = MockServer::start(|r| {
        if r.index < 2 {
            MockReply::completion("m", "late").delayed(Duration::from_millis(600))
        } else {
            MockReply::completion("m", "fast")
        }
    })
    .unwrap();
    let mut cfg = config(&server);
    cfg.timeout = Duration::from_millis(150);
    cfg.max_retries = 1;
    let client = ChatClient::new(cfg.clone()).unwrap();
    let t = Instant::now();
    let e = client.complete(&req("q")).unwrap_err();
    assert!(matches!(e.root(), ChatError::Timeout { .. }), "{e}");
    assert!(t.elapsed() < Duration::from_millis(550), "{:?}", t.elapsed());
    // Third request is fast: a retry after a timeout succeeds.
    let client = ChatClient::new(cfg).unwrap();
    assert_eq!(client.complete(&req("q")).unwrap().content, "fast");
}

#[test]
fn cache_survives_restart_and_skips_nondeterministic_requests() {
    let dir = tempfile::tempdir().unwrap();
    let server = MockServer::start(|r| MockReply::completion("m-served", &format!("a:{}", r.last_message_text()))).unwrap();
    let mut cfg = config(&server);
    cfg.cache_path = Some(dir.path().join("cache.jsonl"));
    let reqs: Vec<ChatRequest> = (0..6).map(|i| req(&format!("q{i}"))).collect();
    {
        let client = ChatClient::new(cfg.clone()).unwrap();
        let out = client.complete_many(&reqs[..3]);
        assert!(out.iter().all(|r| r.is_ok()));
        assert_eq!(server.requests(), 3);
    } // "killed" after three answers
    let client = ChatClient::new(cfg.clone()).unwrap();
    let out = client.complete_many(&reqs);
    assert_eq!(server.requests(), 6, "only the three unanswered requests reach the server");
    for (i, r) in out.iter().enumerate() {
        let r = r.as_ref().unwrap();
        assert_eq!(r.content, format!("a:q{i}"));
        assert_eq!(r.cached, i < 3);
        assert_eq!(r.model, "m-served");
    }
    assert_eq!(client.stats().cache_hits, 3);
    // Sampling (temperature > 0) is never served from the cache.
    let sampled = ChatRequest::new("", reqs[0].messages.clone()).temperature(0.7);
    client.complete(&sampled).unwrap();
    client.complete(&sampled).unwrap();
    assert_eq!(server.requests(), 8);
}

#[test]
fn errors_are_never_cached() {
    let dir = tempfile::tempdir().unwrap();
    let server = MockServer::start(|r| {
        if r.index == 0 {
            MockReply::completion("m", "")
        } else {
            MockReply::completion("m", "real")
        }
    })
    .unwrap();
    let mut cfg = config(&server);
    cfg.max_retries = 0;
    cfg.cache_path = Some(dir.path().join("c.jsonl"));
    let client = ChatClient::new(cfg).unwrap();
    assert!(client.complete(&req("q")).is_err());
    assert_eq!(client.complete(&req("q")).unwrap().content, "real");
    assert_eq!(server.requests(), 2);
    assert_eq!(client.cache().unwrap().len(), 1);
}

#[test]
fn concurrency_is_bounded_and_order_kept() {
    let live = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (l2, p2) = (live.clone(), peak.clone());
    let server = MockServer::start(move |r| {
        let n = l2.fetch_add(1, Ordering::SeqCst) + 1;
        p2.fetch_max(n, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(30));
        l2.fetch_sub(1, Ordering::SeqCst);
        MockReply::completion("m", &r.last_message_text())
    })
    .unwrap();
    let client = ChatClient::new(config(&server)).unwrap(); // concurrency 4
    let reqs: Vec<ChatRequest> = (0..16).map(|i| req(&format!("{i}"))).collect();
    let t = Instant::now();
    let out = client.complete_many(&reqs);
    let el = t.elapsed();
    for (i, r) in out.iter().enumerate() {
        assert_eq!(r.as_ref().unwrap().content, i.to_string());
    }
    assert!(peak.load(Ordering::SeqCst) <= 4, "peak {}", peak.load(Ordering::SeqCst));
    assert!(peak.load(Ordering::SeqCst) >= 2, "no parallelism at all");
    // 16 × 30 ms / 4 = 120 ms ideal; serial would be 480 ms.
    assert!(el < Duration::from_millis(400), "{el:?}");
}

#[test]
fn transport_error_is_retried_then_reported() {
    // A port with nothing listening: bind, read the port, drop the listener.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cfg = ChatConfig::new(format!("http://127.0.0.1:{port}/v1"), "m");
    cfg.max_retries = 2;
    cfg.backoff.base = Duration::from_millis(5);
    cfg.timeout = Duration::from_millis(500);
    let client = ChatClient::new(cfg).unwrap();
    let e = client.complete(&req("q")).unwrap_err();
    assert!(matches!(e, ChatError::GaveUp { attempts: 3, .. }), "{e}");
    assert!(matches!(e.root(), ChatError::Transport { .. } | ChatError::Timeout { .. }), "{e}");
}
