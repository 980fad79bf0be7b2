//! # amp-chat
//!
//! A small, blocking client for OpenAI-compatible `POST /chat/completions` servers (OpenAI, vLLM,
//! llama.cpp, Ollama), built for judges and data generators that must never lie about a result
//! (docs/paper-notes.md §7):
//!
//! * bounded concurrency (a semaphore shared by all callers; [`ChatClient::complete_many`] keeps
//!   input order and returns one `Result` per request);
//! * retries with exponential backoff and jitter on 408/409/429/5xx, timeouts, transport errors,
//!   malformed and empty bodies, honouring `Retry-After` (seconds or HTTP-date);
//! * a per-attempt timeout;
//! * an fsync'd append-only JSONL cache keyed by sha256(model, messages, parameters), for
//!   deterministic requests only (temperature 0, n ≤ 1); errors and empty answers never cached;
//! * the model name *as returned by the server* and token usage in every [`ChatResponse`].
//!
//! ```no_run
//! use amp_chat::{ChatClient, ChatConfig, ChatRequest, Message};
//! let mut cfg = ChatConfig::from_flags_or_env(None, "gpt-4o-2024-11-20", None);
//! cfg.cache_path = Some("judge-cache.jsonl".into());
//! let client = ChatClient::new(cfg)?;
//! let req = ChatRequest::new("", vec![Message::user("Say hi")]).temperature(0.0).max_tokens(8);
//! let resp = client.complete(&req)?;
//! println!("{} (answered by {})", resp.content, resp.model);
//! # Ok::<(), amp_chat::ChatError>(())
//! ```

pub mod base64;
pub mod cache;
pub mod client;
pub mod error;
pub mod mock;
pub mod pool;
pub mod retry;
pub mod types;

pub use cache::{cache_key, ResponseCache};
pub use client::{ChatClient, ChatConfig, ClientStats, DEFAULT_BASE_URL};
pub use error::{ChatError, Result};
pub use pool::{map_bounded, Semaphore};
pub use retry::{parse_retry_after, Backoff};
pub use types::{
    image_data_url, sniff_image_mime, ChatRequest, ChatResponse, Content, ContentPart, ImageUrl, Message, Role,
    Usage,
};
