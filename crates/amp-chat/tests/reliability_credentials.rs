//! Issue 13, item 4 (credentials): the environment's `OPENAI_API_KEY` goes only to https or
//! loopback servers, a key named with `--api-key-env` only to its server, and no key ever
//! follows a redirect (docs/reliability.md). One test function: it sets process environment.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amp_chat::mock::{MockReply, MockServer};
use amp_chat::{ChatClient, ChatConfig, ChatRequest, Message};

fn req() -> ChatRequest {
    ChatRequest::new("", vec![Message::user("q")]).temperature(0.0)
}

#[test]
fn keys_go_only_where_the_user_sent_them() {
    // SAFETY-equivalent note: this binary has one test, so no other thread reads the environment.
    std::env::set_var("OPENAI_API_KEY", "sk-env-secret");
    std::env::remove_var("OPENAI_BASE_URL");

    // 1. Plain http to a remote host: the environment's key is withheld.
    let c = ChatConfig::from_flags_or_env(Some("http://example.invalid:8000/v1".into()), "m", None);
    assert_eq!(c.api_key, None, "the default key must not travel over plain http to a remote host");
    // ... https and loopback still get it.
    let c = ChatConfig::from_flags_or_env(Some("https://example.invalid/v1".into()), "m", None);
    assert_eq!(c.api_key.as_deref(), Some("sk-env-secret"));

    // 2. A loopback server receives it.
    let seen = Arc::new(Mutex::new(Vec::<Option<String>>::new()));
    let s2 = seen.clone();
    let server = MockServer::start(move |r| {
        s2.lock().unwrap().push(r.header("authorization").map(str::to_string));
        MockReply::completion("m", "hi")
    })
    .unwrap();
    let mut cfg = ChatConfig::from_flags_or_env(Some(server.base_url()), "m", None);
    cfg.timeout = Duration::from_secs(2);
    ChatClient::new(cfg).unwrap().complete(&req()).unwrap();
    assert_eq!(seen.lock().unwrap().pop().flatten().as_deref(), Some("Bearer sk-env-secret"));

    // 3. --api-key-env VAR: that variable, to that server, even over plain http; unset is an error.
    std::env::set_var("AMP_TEST_JUDGE_KEY", "sk-judge");
    let c = ChatConfig::from_flags_or_env_keyed(Some("http://example.invalid/v1".into()), "m", None, Some("AMP_TEST_JUDGE_KEY"))
        .unwrap();
    assert_eq!(c.api_key.as_deref(), Some("sk-judge"));
    let e = ChatConfig::from_flags_or_env_keyed(None, "m", None, Some("AMP_TEST_UNSET_KEY")).unwrap_err().to_string();
    assert!(e.contains("AMP_TEST_UNSET_KEY"), "{e}");

    // 4. Redirects never carry the key: server A redirects to server B, B must not see it.
    let at_b = Arc::new(Mutex::new(Vec::<Option<String>>::new()));
    let b2 = at_b.clone();
    let b = MockServer::start(move |r| {
        b2.lock().unwrap().push(r.header("authorization").map(str::to_string));
        MockReply::completion("m", "from b")
    })
    .unwrap();
    let target = format!("{}/chat/completions", b.base_url());
    for status in [301u16, 302, 307, 308] {
        let t = target.clone();
        let a = MockServer::start(move |_| MockReply::raw(status, "").header("Location", &t)).unwrap();
        let mut cfg = ChatConfig::new(a.base_url(), "m");
        cfg.api_key = Some("sk-redirect-secret".into());
        cfg.max_retries = 0;
        cfg.timeout = Duration::from_secs(2);
        let r = ChatClient::new(cfg).unwrap().complete(&req());
        eprintln!("HTTP {status}: B saw {:?}; result {:?}", at_b.lock().unwrap(), r.map(|r| r.content));
        for h in at_b.lock().unwrap().iter() {
            assert!(
                !h.as_deref().unwrap_or("").contains("sk-redirect-secret"),
                "HTTP {status}: the key followed the redirect: {h:?}"
            );
        }
    }
    // Not vacuous: ureq follows 301/302 (as a GET, which B answers) and refuses to resend a body
    // on 307/308 ("redirect failed"); B was reached, without the key.
    assert!(!at_b.lock().unwrap().is_empty(), "no redirect reached B: the check above proved nothing");
    std::env::remove_var("OPENAI_API_KEY");
}
