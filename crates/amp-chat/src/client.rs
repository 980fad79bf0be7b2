//! The blocking OpenAI-compatible chat-completions client.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::cache::{cache_key, ResponseCache};
use crate::error::{ChatError, Result};
use crate::pool::{map_bounded, Semaphore};
use crate::retry::{parse_retry_after, Backoff};
use crate::types::{ChatRequest, ChatResponse, Content, RawResponse};

/// Default base URL when neither a flag nor `OPENAI_BASE_URL` gives one.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// Client configuration.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// Base URL, usually ending in `/v1`; requests go to `{base_url}/chat/completions`.
    pub base_url: String,
    /// Default model, used when a request's `model` is empty.
    pub model: String,
    /// Bearer key. Local servers ignore it but many require a non-empty header, so `None`
    /// sends `Bearer EMPTY` (vLLM's convention).
    pub api_key: Option<String>,
    /// Limit on one attempt (connect + send + receive).
    pub timeout: Duration,
    /// Retries after the first attempt (so at most `max_retries + 1` requests per call).
    pub max_retries: u32,
    /// Most requests in flight at once, across all threads using this client.
    pub concurrency: usize,
    /// Backoff between attempts.
    pub backoff: Backoff,
    /// Optional response cache (JSONL); only deterministic requests use it.
    pub cache_path: Option<PathBuf>,
}

impl ChatConfig {
    /// A configuration with defaults: 60 s timeout, 5 retries, concurrency 8, no cache.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        ChatConfig {
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            timeout: Duration::from_secs(60),
            max_retries: 5,
            concurrency: 8,
            backoff: Backoff::default(),
            cache_path: None,
        }
    }

    /// Flags first, then the environment (`OPENAI_BASE_URL`), then [`DEFAULT_BASE_URL`]. The key
    /// is `api_key` when given, else `OPENAI_API_KEY` but only for an https or loopback server
    /// (see [`resolve_api_key`]; a withheld key is reported on stderr).
    pub fn from_flags_or_env(base_url: Option<String>, model: impl Into<String>, api_key: Option<String>) -> Self {
        match Self::from_flags_or_env_keyed(base_url, model, api_key, None) {
            Ok(c) => c,
            Err(_) => unreachable!("without --api-key-env the key resolution cannot fail"),
        }
    }

    /// [`from_flags_or_env`](Self::from_flags_or_env) with `--api-key-env VAR`: the key in `VAR`
    /// (an error when it is unset) goes to this server whatever its scheme.
    pub fn from_flags_or_env_keyed(
        base_url: Option<String>,
        model: impl Into<String>,
        api_key: Option<String>,
        api_key_env: Option<&str>,
    ) -> Result<Self> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let base = base_url.or_else(|| env("OPENAI_BASE_URL")).unwrap_or_else(|| DEFAULT_BASE_URL.to_string());
        let choice = resolve_api_key(&base, api_key, api_key_env, &env)?;
        if let Some(w) = &choice.warning {
            eprintln!("amp-chat: warning: {w}");
        }
        let mut c = ChatConfig::new(base, model);
        c.api_key = choice.key;
        Ok(c)
    }

    /// The chat-completions endpoint.
    pub fn endpoint(&self) -> String {
        format!("{}/chat/completions", self.base_url.trim_end_matches('/'))
    }
}

/// The default key variable, sent only to https or loopback servers unless named explicitly.
pub const DEFAULT_KEY_ENV: &str = "OPENAI_API_KEY";

/// The key [`resolve_api_key`] chose for a server, and what to tell the user about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyChoice {
    /// The key to send (`None`: `Bearer EMPTY`).
    pub key: Option<String>,
    /// A warning to print (a withheld default key, or a key about to cross plain http).
    pub warning: Option<String>,
}

/// Whether `base_url` is https, or http to a loopback host (`localhost`, `127.0.0.0/8`, `::1`).
pub fn is_https_or_loopback(base_url: &str) -> bool {
    let Some((scheme, rest)) = base_url.trim().split_once("://") else { return false };
    if scheme.eq_ignore_ascii_case("https") {
        return true;
    }
    if !scheme.eq_ignore_ascii_case("http") {
        return false;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Which API key goes to the server at `base_url` (docs/reliability.md, "Credentials"):
///
/// 1. `explicit` (a key given on the command line for this command's servers);
/// 2. else `key_env` (`--api-key-env VAR`): the user named the variable for this server, so it
///    is sent whatever the scheme (with a warning over plain http to a remote host); unset is
///    an error;
/// 3. else [`DEFAULT_KEY_ENV`], but only to an https or loopback server; for any other it is
///    withheld, with a warning saying how to send it.
///
/// `lookup` reads a variable (the environment, or a map in tests). Redirects never carry the key
/// (`ureq` drops `Authorization` on every redirect; tests/loopback.rs checks it).
pub fn resolve_api_key(
    base_url: &str,
    explicit: Option<String>,
    key_env: Option<&str>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<KeyChoice> {
    let trusted = is_https_or_loopback(base_url);
    let plain = |what: &str| {
        (!trusted).then(|| format!("{what} is sent to {base_url} over plain http (not https, not loopback)"))
    };
    if let Some(k) = explicit.filter(|k| !k.is_empty()) {
        return Ok(KeyChoice { warning: plain("the --api-key key"), key: Some(k) });
    }
    if let Some(var) = key_env {
        let k = lookup(var).ok_or_else(|| ChatError::Config(format!("--api-key-env {var}: ${var} is not set")))?;
        return Ok(KeyChoice { warning: plain(&format!("${var}")), key: Some(k) });
    }
    match lookup(DEFAULT_KEY_ENV) {
        Some(k) if trusted => Ok(KeyChoice { key: Some(k), warning: None }),
        Some(_) => Ok(KeyChoice {
            key: None,
            warning: Some(format!(
                "${DEFAULT_KEY_ENV} is not sent to {base_url}: it is neither https nor loopback; \
                 pass --api-key-env {DEFAULT_KEY_ENV} (or another variable) to send a key to this server"
            )),
        }),
        None => Ok(KeyChoice { key: None, warning: None }),
    }
}

/// Counters kept by a client (monotone, thread-safe).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientStats {
    /// HTTP requests sent (attempts, retries included).
    pub requests: u64,
    /// Retries (attempts after the first).
    pub retries: u64,
    /// Answers served from the cache.
    pub cache_hits: u64,
    /// Calls that ended in an error after all retries.
    pub failures: u64,
    /// Successful calls answered by the server.
    pub successes: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    retries: AtomicU64,
    cache_hits: AtomicU64,
    failures: AtomicU64,
    successes: AtomicU64,
}

/// A thread-safe chat-completions client with bounded concurrency, retries and a cache.
pub struct ChatClient {
    cfg: ChatConfig,
    agent: ureq::Agent,
    cache: Option<ResponseCache>,
    sem: Semaphore,
    counters: Counters,
}

impl std::fmt::Debug for ChatClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatClient")
            .field("base_url", &self.cfg.base_url)
            .field("model", &self.cfg.model)
            .field("concurrency", &self.cfg.concurrency)
            .field("cache", &self.cache.as_ref().map(|c| c.path().to_path_buf()))
            .finish()
    }
}

impl ChatClient {
    /// Builds the client (opens the cache if configured).
    pub fn new(cfg: ChatConfig) -> Result<Self> {
        if cfg.base_url.trim().is_empty() {
            return Err(ChatError::Config("base_url is empty".into()));
        }
        if cfg.concurrency == 0 {
            return Err(ChatError::Config("concurrency must be at least 1".into()));
        }
        if cfg.timeout.is_zero() {
            return Err(ChatError::Config("timeout must be positive".into()));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // Never forward the Authorization header on a redirect (ureq's default, pinned here:
            // the key goes only to the host it was given for).
            .redirect_auth_headers(ureq::config::RedirectAuthHeaders::Never)
            .timeout_global(Some(cfg.timeout))
            .max_idle_connections_per_host(cfg.concurrency.max(3))
            .build()
            .into();
        let cache = cfg.cache_path.as_ref().map(ResponseCache::open).transpose()?;
        let sem = Semaphore::new(cfg.concurrency);
        Ok(ChatClient { cfg, agent, cache, sem, counters: Counters::default() })
    }

    /// The configuration.
    pub fn config(&self) -> &ChatConfig {
        &self.cfg
    }

    /// The cache, if any.
    pub fn cache(&self) -> Option<&ResponseCache> {
        self.cache.as_ref()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ClientStats {
        let c = &self.counters;
        ClientStats {
            requests: c.requests.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            cache_hits: c.cache_hits.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            successes: c.successes.load(Ordering::Relaxed),
        }
    }

    /// The request as it will be sent: an empty `model` replaced by the configured one.
    pub fn resolve(&self, req: &ChatRequest) -> ChatRequest {
        let mut r = req.clone();
        if r.model.trim().is_empty() {
            r.model = self.cfg.model.clone();
        }
        r
    }

    /// Sends one request: cache lookup (deterministic requests only), then up to
    /// `max_retries + 1` attempts with backoff/`Retry-After` between them, then a cache write.
    /// Never returns an empty answer as success.
    pub fn complete(&self, req: &ChatRequest) -> Result<ChatResponse> {
        self.complete_validated(req, |_| true)
    }

    /// [`complete`](Self::complete) for callers that parse the answer (a judge): only a reply
    /// that `valid` accepts is cached, and a cached reply it rejects is asked again, so a one-off
    /// unparsable reply is never replayed on a rerun. The reply is returned either way.
    pub fn complete_validated(&self, req: &ChatRequest, valid: impl Fn(&ChatResponse) -> bool) -> Result<ChatResponse> {
        let req = self.resolve(req);
        if req.model.trim().is_empty() {
            return Err(ChatError::Config("no model given (request and config are both empty)".into()));
        }
        let key = match (&self.cache, req.is_deterministic()) {
            (Some(_), true) => Some(cache_key(&req)),
            _ => None,
        };
        if let (Some(cache), Some(k)) = (&self.cache, &key) {
            if let Some(hit) = cache.get(k).filter(|h| valid(h)) {
                self.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(hit);
            }
        }
        let body = serde_json::to_string(&req).map_err(|e| ChatError::Encode(e.to_string()))?;
        let url = self.cfg.endpoint();
        let mut attempt = 0u32;
        loop {
            let result = {
                let _permit = self.sem.acquire();
                self.counters.requests.fetch_add(1, Ordering::Relaxed);
                self.attempt(&url, &body)
            };
            match result {
                Ok(resp) => {
                    self.counters.successes.fetch_add(1, Ordering::Relaxed);
                    if let (Some(cache), Some(k)) = (&self.cache, &key) {
                        if valid(&resp) {
                            cache.put(k, &resp)?;
                        }
                    }
                    return Ok(resp);
                }
                Err(e) if e.is_retriable() && attempt < self.cfg.max_retries => {
                    let ra = match &e {
                        ChatError::Http { retry_after, .. } => *retry_after,
                        _ => None,
                    };
                    std::thread::sleep(self.cfg.backoff.delay(attempt, ra));
                    attempt += 1;
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    self.counters.failures.fetch_add(1, Ordering::Relaxed);
                    return Err(if e.is_retriable() {
                        ChatError::GaveUp { attempts: attempt + 1, last: Box::new(e) }
                    } else {
                        e
                    });
                }
            }
        }
    }

    /// [`complete`](Self::complete) over many requests with at most `concurrency` in flight;
    /// results are in input order, one per request.
    pub fn complete_many(&self, reqs: &[ChatRequest]) -> Vec<Result<ChatResponse>> {
        self.complete_many_with(reqs, |_, _| {})
    }

    /// Like [`complete_many`](Self::complete_many), calling `on_done(i, &result)` as each
    /// request finishes (persist results or tick progress there).
    pub fn complete_many_with<D>(&self, reqs: &[ChatRequest], on_done: D) -> Vec<Result<ChatResponse>>
    where
        D: Fn(usize, &Result<ChatResponse>) + Sync,
    {
        map_bounded(reqs, self.cfg.concurrency, |_, r| self.complete(r), on_done)
    }

    fn attempt(&self, url: &str, body: &str) -> Result<ChatResponse> {
        let key = self.cfg.api_key.as_deref().filter(|k| !k.is_empty()).unwrap_or("EMPTY");
        let sent = self
            .agent
            .post(url)
            .header("Authorization", &format!("Bearer {key}"))
            .header("Content-Type", "application/json")
            .send(body);
        let resp = sent.map_err(|e| transport_error(url, e))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let text = resp
            .into_body()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .map_err(|e| transport_error(url, e))?;
        if !(200..300).contains(&status) {
            return Err(ChatError::Http { status, url: url.into(), body: error_message(&text), retry_after });
        }
        parse_response(url, &text)
    }
}

fn transport_error(url: &str, e: ureq::Error) -> ChatError {
    let timed_out = match &e {
        ureq::Error::Timeout(_) => true,
        ureq::Error::Io(io) => matches!(io.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock),
        _ => false,
    };
    if timed_out {
        ChatError::Timeout { url: url.into(), detail: e.to_string() }
    } else {
        ChatError::Transport { url: url.into(), detail: e.to_string() }
    }
}

fn snippet(text: &str) -> String {
    text.chars().take(200).collect()
}

/// The OpenAI-style `error.message`, else the start of the body.
fn error_message(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v.pointer("/error/message").and_then(|m| m.as_str()).map(str::to_string))
        .unwrap_or_else(|| snippet(text))
}

/// Parses a chat-completions body; empty content is an error.
pub(crate) fn parse_response(url: &str, text: &str) -> Result<ChatResponse> {
    let malformed = |reason: String| ChatError::Malformed { url: url.into(), reason, snippet: snippet(text) };
    if text.trim().is_empty() {
        return Err(malformed("empty body".into()));
    }
    let raw: RawResponse = serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?;
    let model = raw.model.unwrap_or_default();
    let mut choices = raw.choices;
    if choices.is_empty() {
        return Err(malformed("no choices".into()));
    }
    choices.sort_by_key(|c| c.index.unwrap_or(0));
    let finish_reason = choices[0].finish_reason.clone();
    let contents: Vec<String> =
        choices.into_iter().map(|c| c.message.content.as_ref().map(Content::text).unwrap_or_default()).collect();
    if contents[0].trim().is_empty() {
        return Err(ChatError::EmptyContent { url: url.into(), model });
    }
    Ok(ChatResponse {
        content: contents[0].clone(),
        choices: contents,
        model,
        finish_reason,
        usage: raw.usage,
        system_fingerprint: raw.system_fingerprint,
        cached: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bodies_strictly() {
        let ok = r#"{"id":"x","model":"gpt-4-0613","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
        let r = parse_response("u", ok).unwrap();
        assert_eq!(r.content, "hi");
        assert_eq!(r.model, "gpt-4-0613");
        assert_eq!(r.usage.unwrap().total_tokens, 4);
        assert!(matches!(parse_response("u", ""), Err(ChatError::Malformed { .. })));
        assert!(matches!(parse_response("u", "{\"choices\":"), Err(ChatError::Malformed { .. })));
        assert!(matches!(parse_response("u", r#"{"choices":[]}"#), Err(ChatError::Malformed { .. })));
        let empty = r#"{"model":"m","choices":[{"message":{"role":"assistant","content":"  "}}]}"#;
        assert!(matches!(parse_response("u", empty), Err(ChatError::EmptyContent { .. })));
        let null = r#"{"model":"m","choices":[{"message":{"role":"assistant","content":null}}]}"#;
        assert!(matches!(parse_response("u", null), Err(ChatError::EmptyContent { .. })));
    }

    #[test]
    fn the_default_key_goes_only_to_https_or_loopback() {
        let env = |k: &str| (k == "OPENAI_API_KEY" || k == "MY_KEY").then(|| format!("sk-{k}"));
        for (url, trusted) in [
            ("https://api.openai.com/v1", true),
            ("http://127.0.0.1:8000/v1", true),
            ("http://localhost:8000/v1", true),
            ("http://[::1]:8000/v1", true),
            ("http://user@127.0.0.2/v1", true),
            ("http://example.com/v1", false),
            ("http://127.0.0.1.evil.com/v1", false),
            ("http://10.0.0.5:8000/v1", false),
            ("ftp://127.0.0.1/", false),
        ] {
            assert_eq!(is_https_or_loopback(url), trusted, "{url}");
            let c = resolve_api_key(url, None, None, &env).unwrap();
            assert_eq!(c.key.is_some(), trusted, "{url}");
            assert_eq!(c.warning.is_some(), !trusted, "{url}");
            // A variable named for this server is sent anyway (warned over plain http).
            let c = resolve_api_key(url, None, Some("MY_KEY"), &env).unwrap();
            assert_eq!(c.key.as_deref(), Some("sk-MY_KEY"));
            assert_eq!(c.warning.is_some(), !trusted, "{url}");
        }
        let e = resolve_api_key("https://x/v1", None, Some("NOPE"), &env).unwrap_err().to_string();
        assert!(e.contains("NOPE") && e.contains("not set"), "{e}");
        let c = resolve_api_key("https://x/v1", Some("k".into()), Some("MY_KEY"), &env).unwrap();
        assert_eq!(c.key.as_deref(), Some("k"));
        assert_eq!(resolve_api_key("https://x/v1", None, None, &|_| None).unwrap().key, None);
    }

    #[test]
    fn config_from_flags_beats_env() {
        let c = ChatConfig::from_flags_or_env(Some("http://x/v1/".into()), "m", Some("k".into()));
        assert_eq!(c.endpoint(), "http://x/v1/chat/completions");
        assert_eq!(c.api_key.as_deref(), Some("k"));
    }
}
