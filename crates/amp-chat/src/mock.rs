//! A tiny loopback OpenAI-compatible server for tests and benchmarks (std only).
//!
//! It binds `127.0.0.1:0`, answers each connection on its own thread with whatever the handler
//! returns, counts requests, and shuts down when dropped. Every socket has a read timeout, so
//! nothing it starts can hang a test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A request as the mock server saw it.
#[derive(Debug, Clone)]
pub struct MockRequest {
    /// 0-based arrival index.
    pub index: u64,
    /// Request line method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// Headers (lower-cased names).
    pub headers: Vec<(String, String)>,
    /// Body text.
    pub body: String,
}

impl MockRequest {
    /// The body parsed as JSON (Null if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
    /// A header value by (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let n = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str())
    }
    /// The text of the last message of a chat request (string or text parts).
    pub fn last_message_text(&self) -> String {
        let v = self.json();
        let last = v.pointer("/messages").and_then(|m| m.as_array()).and_then(|a| a.last()).cloned();
        match last.and_then(|m| m.get("content").cloned()) {
            Some(serde_json::Value::String(s)) => s,
            Some(serde_json::Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(|t| t.as_str()))
                .collect::<Vec<_>>()
                .join(""),
            _ => String::new(),
        }
    }
}

/// What the mock server sends back.
#[derive(Debug, Clone)]
pub struct MockReply {
    /// HTTP status.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: String,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl MockReply {
    /// A 200 chat completion with the given served model name and content.
    pub fn completion(model: &str, content: &str) -> Self {
        let body = serde_json::json!({
            "id": "chatcmpl-mock", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
        });
        MockReply { status: 200, headers: vec![], body: body.to_string(), delay: Duration::ZERO }
    }
    /// Any status with a raw body.
    pub fn raw(status: u16, body: &str) -> Self {
        MockReply { status, headers: vec![], body: body.into(), delay: Duration::ZERO }
    }
    /// Adds a header.
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
    /// Delays the answer.
    pub fn delayed(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
}

type Handler = dyn Fn(&MockRequest) -> MockReply + Send + Sync;

/// The running server; stops when dropped.
pub struct MockServer {
    addr: SocketAddr,
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl MockServer {
    /// Starts a server that answers every request with `handler(request)`.
    pub fn start(handler: impl Fn(&MockRequest) -> MockReply + Send + Sync + 'static) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let (c2, s2) = (count.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = conn else { continue };
                let (h, c) = (handler.clone(), c2.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, &*h, &c);
                });
            }
        });
        Ok(MockServer { addr, count, stop, accept: Some(accept) })
    }

    /// `http://127.0.0.1:PORT/v1`
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn serve(stream: TcpStream, handler: &Handler, count: &AtomicU64) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        let mut len = 0usize;
        let mut close = false;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
                if k == "content-length" {
                    len = v.parse().unwrap_or(0);
                }
                if k == "connection" && v.eq_ignore_ascii_case("close") {
                    close = true;
                }
                headers.push((k, v));
            }
        }
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body)?;
        let index = count.fetch_add(1, Ordering::SeqCst);
        let req = MockRequest { index, method, path, headers, body: String::from_utf8_lossy(&body).into_owned() };
        let reply = handler(&req);
        if !reply.delay.is_zero() {
            std::thread::sleep(reply.delay);
        }
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            reply.status,
            reason(reply.status),
            reply.body.len()
        );
        for (k, v) in &reply.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.push_str(&reply.body);
        writer.write_all(out.as_bytes())?;
        writer.flush()?;
        if close {
            return Ok(());
        }
    }
}

fn reason(s: u16) -> &'static str {
    match s {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        408 => "Request Timeout",
        409 => "Conflict",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
