//! Wire types of the OpenAI chat-completions API (the subset every compatible server accepts).

use serde::{Deserialize, Serialize};

/// Who speaks a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// System instructions.
    System,
    /// The user.
    User,
    /// The model.
    Assistant,
}

/// The URL of an image part: an `https://` URL or a `data:<mime>;base64,...` URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ImageUrl {
    /// The URL.
    pub url: String,
}

/// One part of a multi-part message (text or image), OpenAI vision format.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    /// `{"type":"text","text":...}`
    Text {
        /// The text.
        text: String,
    },
    /// `{"type":"image_url","image_url":{"url":...}}`
    ImageUrl {
        /// The image URL.
        image_url: ImageUrl,
    },
}

/// Message content: plain text or a list of parts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// A plain string.
    Text(String),
    /// Text and image parts.
    Parts(Vec<ContentPart>),
}

impl Content {
    /// The concatenated text of the content (image parts skipped).
    pub fn text(&self) -> String {
        match self {
            Content::Text(t) => t.clone(),
            Content::Parts(parts) => parts
                .iter()
                .filter_map(|p| match p {
                    ContentPart::Text { text } => Some(text.as_str()),
                    ContentPart::ImageUrl { .. } => None,
                })
                .collect::<Vec<_>>()
                .join(""),
        }
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message {
    /// The speaker.
    pub role: Role,
    /// What was said.
    pub content: Content,
}

impl Message {
    /// A system message.
    pub fn system(text: impl Into<String>) -> Self {
        Message { role: Role::System, content: Content::Text(text.into()) }
    }
    /// A user text message.
    pub fn user(text: impl Into<String>) -> Self {
        Message { role: Role::User, content: Content::Text(text.into()) }
    }
    /// An assistant text message (history).
    pub fn assistant(text: impl Into<String>) -> Self {
        Message { role: Role::Assistant, content: Content::Text(text.into()) }
    }
    /// A user message with one image (as a base64 data URL) followed by text.
    /// `mime` is e.g. `image/jpeg` or `image/png`.
    pub fn user_with_image(text: impl Into<String>, mime: &str, image_bytes: &[u8]) -> Self {
        Message {
            role: Role::User,
            content: Content::Parts(vec![
                ContentPart::ImageUrl { image_url: ImageUrl { url: image_data_url(mime, image_bytes) } },
                ContentPart::Text { text: text.into() },
            ]),
        }
    }
}

/// `data:<mime>;base64,<...>` for an image.
pub fn image_data_url(mime: &str, bytes: &[u8]) -> String {
    use base64::Engine as _;
    format!("data:{mime};base64,{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Guesses an image MIME type from the file's magic bytes (PNG, JPEG, GIF, WebP), else JPEG.
pub fn sniff_image_mime(bytes: &[u8]) -> &'static str {
    if bytes.starts_with(b"\x89PNG") {
        "image/png"
    } else if bytes.starts_with(b"GIF8") {
        "image/gif"
    } else if bytes.len() > 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        "image/webp"
    } else {
        "image/jpeg"
    }
}

/// The body fields [`ChatRequest`] sets itself (extra fields may not repeat them).
pub const STANDARD_FIELDS: &[&str] = &["model", "messages", "temperature", "top_p", "max_tokens", "seed", "n"];

/// A chat-completions request. Unset options are not sent (the server's defaults apply).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// Model id; empty means "the client's configured model".
    pub model: String,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Sampling temperature (0 = greedy; the only setting the cache accepts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Nucleus sampling mass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Completion length limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Sampling seed (best effort on most servers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Number of choices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Server-specific body fields sent as they are, e.g. vLLM's sampling extensions
    /// (`use_beam_search`, `best_of`, `length_penalty`, `repetition_penalty`). They are part of
    /// the request and so of its cache key.
    #[serde(flatten, default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl ChatRequest {
    /// A request with the given messages and every option unset; `model` may be empty.
    pub fn new(model: impl Into<String>, messages: Vec<Message>) -> Self {
        ChatRequest {
            model: model.into(),
            messages,
            temperature: None,
            top_p: None,
            max_tokens: None,
            seed: None,
            n: None,
            extra: serde_json::Map::new(),
        }
    }
    /// Sets the temperature.
    pub fn temperature(mut self, t: f32) -> Self {
        self.temperature = Some(t);
        self
    }
    /// Sets top-p.
    pub fn top_p(mut self, p: f32) -> Self {
        self.top_p = Some(p);
        self
    }
    /// Sets max_tokens.
    pub fn max_tokens(mut self, m: u32) -> Self {
        self.max_tokens = Some(m);
        self
    }
    /// Sets the seed.
    pub fn seed(mut self, s: u64) -> Self {
        self.seed = Some(s);
        self
    }
    /// Sets n.
    pub fn n(mut self, n: u32) -> Self {
        self.n = Some(n);
        self
    }
    /// Adds server-specific body fields ([`Self::extra`]); a key that names a standard field of
    /// this request (`model`, `messages`, `temperature`, ...) is an error, so a flag can never
    /// silently override another.
    pub fn extra(mut self, fields: serde_json::Map<String, serde_json::Value>) -> crate::Result<Self> {
        for (k, v) in fields {
            if STANDARD_FIELDS.contains(&k.as_str()) {
                return Err(crate::ChatError::Config(format!(
                    "extra field {k:?} is a standard chat-completions field; set it through its own option"
                )));
            }
            self.extra.insert(k, v);
        }
        Ok(self)
    }
    /// Deterministic requests (temperature exactly 0 and at most one choice) are the only ones
    /// the cache stores: a sampled answer replayed from a cache would misreport variance.
    pub fn is_deterministic(&self) -> bool {
        self.temperature == Some(0.0) && self.n.unwrap_or(1) <= 1
    }
}

/// Token usage as reported by the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Completion tokens.
    #[serde(default)]
    pub completion_tokens: u64,
    /// Total tokens.
    #[serde(default)]
    pub total_tokens: u64,
}

/// A successful completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// Content of the first choice (never empty: empty answers are errors).
    pub content: String,
    /// Contents of all choices, in index order (`choices[0] == content`).
    pub choices: Vec<String>,
    /// The model name *as returned by the server* (may differ from the one requested).
    pub model: String,
    /// Finish reason of the first choice.
    pub finish_reason: Option<String>,
    /// Token usage, when reported.
    pub usage: Option<Usage>,
    /// `system_fingerprint`, when reported.
    pub system_fingerprint: Option<String>,
    /// True when this answer came from the on-disk cache rather than the server.
    #[serde(default)]
    pub cached: bool,
}

// ---- raw response parsing ----

#[derive(Deserialize)]
pub(crate) struct RawResponse {
    #[serde(default)]
    pub model: Option<String>,
    pub choices: Vec<RawChoice>,
    #[serde(default)]
    pub usage: Option<Usage>,
    #[serde(default)]
    pub system_fingerprint: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct RawChoice {
    #[serde(default)]
    pub index: Option<u32>,
    pub message: RawMessage,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct RawMessage {
    #[serde(default)]
    pub content: Option<Content>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_openai_shapes() {
        let m = Message::user_with_image("hi", "image/png", b"foo");
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"role":"user","content":[
                {"type":"image_url","image_url":{"url":"data:image/png;base64,Zm9v"}},
                {"type":"text","text":"hi"}]})
        );
        let r = ChatRequest::new("m", vec![Message::system("s")]).temperature(0.0).max_tokens(5);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"model":"m","messages":[{"role":"system","content":"s"}],
                "temperature":0.0,"max_tokens":5})
        );
        assert!(r.is_deterministic());
        assert!(!r.clone().n(2).is_deterministic());
        assert!(!ChatRequest::new("m", vec![]).is_deterministic());
    }

    #[test]
    fn extra_fields_are_sent_flat_and_may_not_shadow_standard_ones() {
        let extra = |v: serde_json::Value| v.as_object().unwrap().clone();
        let r = ChatRequest::new("m", vec![])
            .temperature(0.0)
            .extra(extra(serde_json::json!({"use_beam_search": true, "best_of": 4})))
            .unwrap();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"model":"m","messages":[],"temperature":0.0,"use_beam_search":true,"best_of":4})
        );
        let back: ChatRequest = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
        assert_ne!(crate::cache_key(&r), crate::cache_key(&ChatRequest::new("m", vec![]).temperature(0.0)));
        let err = ChatRequest::new("m", vec![]).extra(extra(serde_json::json!({"temperature": 1.0}))).unwrap_err();
        assert!(err.to_string().contains("temperature"), "{err}");
    }
}
