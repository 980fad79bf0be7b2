//! The answering side: a [`Responder`] answers a (possibly multi-round) chat about one image.
//!
//! MRHal-Bench's protocol (docs/paper-notes.md §5): the image is attached to the first user turn only,
//! and the model's **own** earlier answers form the history (not the standard answers).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use amp_chat::{ChatClient, ChatRequest, Message};

/// Who said a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Speaker {
    /// The user (question).
    User,
    /// The model (its own earlier answer).
    Assistant,
}

/// One turn of the dialogue so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    /// Speaker.
    pub speaker: Speaker,
    /// Text (no `<image>` token; the image belongs to the first user turn).
    pub text: String,
}

impl Turn {
    /// A user turn.
    pub fn user(t: impl Into<String>) -> Self {
        Turn { speaker: Speaker::User, text: t.into() }
    }
    /// An assistant turn.
    pub fn assistant(t: impl Into<String>) -> Self {
        Turn { speaker: Speaker::Assistant, text: t.into() }
    }
}

/// A model that answers questions about an image.
///
/// `turns` alternates user/assistant, starts and ends with a user turn; the image belongs to
/// the first user turn. Implementations: [`OpenAiResponder`] here, `mllm` models in the `amp`
/// crate. Not required to be `Sync`; the concurrent runner asks for `Sync` separately.
pub trait Responder {
    /// The model name recorded with every answer.
    fn name(&self) -> String;
    /// Decoding parameters and seed, recorded in the answers and the results file.
    fn decoding(&self) -> Value;
    /// Answers the last user turn. An `Err` leaves the item unanswered (retried on rerun).
    fn respond(&self, image: &[u8], turns: &[Turn]) -> Result<String, String>;
}

/// Decoding settings for a served model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decoding {
    /// Temperature (0 = greedy).
    pub temperature: f32,
    /// top-p, if set.
    pub top_p: Option<f32>,
    /// Completion limit.
    pub max_tokens: u32,
    /// Seed, if set.
    pub seed: Option<u64>,
}

impl Default for Decoding {
    /// Greedy, 512 tokens (the MRHal/MMHal generation settings of docs/paper-notes.md §5–6, minus
    /// beam search, which chat servers do not offer).
    fn default() -> Self {
        Decoding { temperature: 0.0, top_p: None, max_tokens: 512, seed: None }
    }
}

/// Answers through an OpenAI-compatible server (vLLM, llama.cpp, Ollama, OpenAI).
#[derive(Debug)]
pub struct OpenAiResponder {
    /// The client (its configured model is the one asked).
    pub client: ChatClient,
    /// Decoding settings.
    pub decoding: Decoding,
    /// Optional system prompt.
    pub system: Option<String>,
}

impl OpenAiResponder {
    /// Builds the chat messages for `turns` with the image in the first user message.
    pub fn messages(&self, image: &[u8], turns: &[Turn]) -> Vec<Message> {
        let mut msgs = Vec::with_capacity(turns.len() + 1);
        if let Some(s) = &self.system {
            msgs.push(Message::system(s.clone()));
        }
        let mut image_sent = false;
        for t in turns {
            msgs.push(match t.speaker {
                Speaker::User if !image_sent && !image.is_empty() => {
                    image_sent = true;
                    Message::user_with_image(t.text.clone(), amp_chat::sniff_image_mime(image), image)
                }
                Speaker::User => Message::user(t.text.clone()),
                Speaker::Assistant => Message::assistant(t.text.clone()),
            });
        }
        msgs
    }
}

impl Responder for OpenAiResponder {
    fn name(&self) -> String {
        self.client.config().model.clone()
    }
    fn decoding(&self) -> Value {
        serde_json::to_value(&self.decoding).unwrap_or(Value::Null)
    }
    fn respond(&self, image: &[u8], turns: &[Turn]) -> Result<String, String> {
        let d = &self.decoding;
        let mut req = ChatRequest::new("", self.messages(image, turns)).temperature(d.temperature).max_tokens(d.max_tokens);
        req.top_p = d.top_p;
        req.seed = d.seed;
        self.client.complete(&req).map(|r| r.content).map_err(|e| e.to_string())
    }
}
