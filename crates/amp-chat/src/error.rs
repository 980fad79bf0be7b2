//! Error type of the chat client.

use std::path::PathBuf;

/// Everything that can go wrong while talking to an OpenAI-compatible server.
///
/// [`ChatError::is_retriable`] says which failures the client retries (408/409/429/5xx,
/// transport errors, timeouts, malformed or empty bodies). After the retries are spent the client
/// returns [`ChatError::GaveUp`] carrying the last failure.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The configuration is unusable (empty base URL, zero concurrency, ...).
    #[error("chat client configuration: {0}")]
    Config(String),
    /// The server answered with a non-2xx status.
    #[error("HTTP {status} from {url}: {body}")]
    Http {
        /// HTTP status code.
        status: u16,
        /// The request URL.
        url: String,
        /// The (truncated) response body; OpenAI-style `error.message` when present.
        body: String,
        /// Parsed `Retry-After`, if the server sent one.
        retry_after: Option<std::time::Duration>,
    },
    /// The request timed out (connect, send or receive).
    #[error("request to {url} timed out: {detail}")]
    Timeout {
        /// The request URL.
        url: String,
        /// What timed out.
        detail: String,
    },
    /// Connection refused, reset, DNS failure, ...
    #[error("transport error talking to {url}: {detail}")]
    Transport {
        /// The request URL.
        url: String,
        /// The underlying error.
        detail: String,
    },
    /// The body was not a chat-completions response.
    #[error("malformed response body from {url}: {reason} (body starts: {snippet:?})")]
    Malformed {
        /// The request URL.
        url: String,
        /// Why it could not be used.
        reason: String,
        /// First characters of the body.
        snippet: String,
    },
    /// The response parsed but had no (or only whitespace) content.
    #[error("empty completion from {url} (model {model:?})")]
    EmptyContent {
        /// The request URL.
        url: String,
        /// Model name as returned by the server.
        model: String,
    },
    /// All attempts failed; `last` is the final failure.
    #[error("gave up after {attempts} attempt(s): {last}")]
    GaveUp {
        /// How many requests were sent.
        attempts: u32,
        /// The last failure.
        last: Box<ChatError>,
    },
    /// The response cache file is unreadable or corrupt.
    #[error("response cache {path}: {reason}", path = path.display())]
    Cache {
        /// Cache file.
        path: PathBuf,
        /// What is wrong (names the line when it is a parse error).
        reason: String,
    },
    /// Serialising the request failed.
    #[error("cannot encode request: {0}")]
    Encode(String),
}

impl ChatError {
    /// True for failures worth another attempt: HTTP 408/409/429/5xx, timeouts, transport
    /// errors, malformed bodies and empty completions. Other 4xx (bad request, auth) are final.
    pub fn is_retriable(&self) -> bool {
        match self {
            ChatError::Http { status, .. } => {
                matches!(status, 408 | 409 | 429) || (500..=599).contains(status)
            }
            ChatError::Timeout { .. }
            | ChatError::Transport { .. }
            | ChatError::Malformed { .. }
            | ChatError::EmptyContent { .. } => true,
            ChatError::Config(_)
            | ChatError::GaveUp { .. }
            | ChatError::Cache { .. }
            | ChatError::Encode(_) => false,
        }
    }

    /// The innermost failure (unwraps [`ChatError::GaveUp`]).
    pub fn root(&self) -> &ChatError {
        match self {
            ChatError::GaveUp { last, .. } => last.root(),
            e => e,
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = ChatError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retriable_statuses() {
        let http = |status| ChatError::Http { status, url: "u".into(), body: String::new(), retry_after: None };
        for s in [408, 409, 429, 500, 502, 503, 504, 599] {
            assert!(http(s).is_retriable(), "{s}");
        }
        for s in [400, 401, 403, 404, 413, 422] {
            assert!(!http(s).is_retriable(), "{s}");
        }
        assert!(ChatError::Timeout { url: "u".into(), detail: "d".into() }.is_retriable());
        assert!(!ChatError::Config("x".into()).is_retriable());
        let gave_up = ChatError::GaveUp { attempts: 2, last: Box::new(http(503)) };
        assert!(!gave_up.is_retriable());
        assert!(matches!(gave_up.root(), ChatError::Http { status: 503, .. }));
    }
}
