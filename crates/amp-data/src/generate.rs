//! Response generators: Multi-size Expert Generation (§3.1.1) and Incremental Generation (§3.1.2).
//!
//! A [`Generator`] answers an image-grounded dialogue. MEG and IG differ only in where the ordered
//! list of [`Expert`]s comes from:
//!
//! * **MEG** ([`multi_size_experts`]): a pool of models of one family, largest first; the initial
//!   ranking is standard > largest > … > smallest (scaling laws).
//! * **IG** ([`incremental_experts`], Algorithm 1): the SFT data is split into K−2 equal parts,
//!   the base model is fine-tuned on each cumulative subset `[F1..Fi]` by a [`FineTuner`], and the
//!   initial ranking is standard > M(all K−2 parts) > … > M(F1) > base. (Algorithm 1's literal
//!   indexing puts the 1-part model above the K−2-part one; that is a notation slip, see
//!   paper §3.1.2; docs/paper-notes.md §2.)
//!
//! Multi-round dialogues: MEG regenerates every gpt turn of the instruction conversation. Our
//! [`Generator::generate`] answers each human turn in order with the model's **own previous
//! answers** as history (as the authors' MRHal generation does), so each stored conversation is
//! one the model actually produced; the human turns are those of the instruction data.
use crate::data::InstructionRecord;
use crate::error::{AmpDataError, Result};
use mdpo::{Conversation, Turn};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

/// Decoding parameters; defaults from the paper's A.3.1 ("greedy" with 4 beams, temperature 0.7,
/// repetition penalty 1.1, 512 new tokens — effectively beam search).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenParams {
    pub num_beams: usize,
    pub temperature: f32,
    pub repetition_penalty: f32,
    pub max_new_tokens: usize,
}

impl Default for GenParams {
    fn default() -> Self {
        Self {
            num_beams: 4,
            temperature: 0.7,
            repetition_penalty: 1.1,
            max_new_tokens: 512,
        }
    }
}

/// An MLLM that answers image-grounded dialogues.
pub trait Generator: Send + Sync {
    /// The model's name (stored as the response's source).
    fn name(&self) -> String;

    /// Answers the last turn of `history`, which alternates human/gpt, starts and ends with a
    /// human turn; the first human turn carries the `<image>` placeholder.
    fn respond(&self, image: &Path, history: &[Turn]) -> Result<String>;

    /// Regenerates every gpt turn of `conversation`: human turn r is answered given the human
    /// turns before it and the model's own answers to them.
    fn generate(&self, image: &Path, conversation: &[Turn]) -> Result<Conversation> {
        let mut out: Conversation = Vec::with_capacity(conversation.len());
        for t in conversation.iter().filter(|t| t.from == "human") {
            out.push(t.clone());
            let answer = self.respond(image, &out)?;
            out.push(Turn {
                from: "gpt".into(),
                value: answer,
            });
        }
        Ok(out)
    }
}

impl<T: Generator + ?Sized> Generator for Arc<T> {
    fn name(&self) -> String {
        (**self).name()
    }
    fn respond(&self, image: &Path, history: &[Turn]) -> Result<String> {
        (**self).respond(image, history)
    }
    fn generate(&self, image: &Path, conversation: &[Turn]) -> Result<Conversation> {
        (**self).generate(image, conversation)
    }
}

impl<T: Generator + ?Sized> Generator for Box<T> {
    fn name(&self) -> String {
        (**self).name()
    }
    fn respond(&self, image: &Path, history: &[Turn]) -> Result<String> {
        (**self).respond(image, history)
    }
    fn generate(&self, image: &Path, conversation: &[Turn]) -> Result<Conversation> {
        (**self).generate(image, conversation)
    }
}

/// One response source in initial-rank order.
#[derive(Clone)]
pub struct Expert {
    /// Source name stored in the metadata (e.g. "llava-13b", "ig-90k").
    pub name: String,
    pub generator: Arc<dyn Generator>,
}

impl std::fmt::Debug for Expert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Expert").field("name", &self.name).finish()
    }
}

/// MEG: the pool, largest model first, gives levels 1..K−1 (level 0 is the standard response).
/// `levels` = K, when given, must equal `pool.len() + 1`.
pub fn multi_size_experts(pool: Vec<Expert>, levels: Option<usize>) -> Result<Vec<Expert>> {
    if pool.is_empty() {
        return Err(AmpDataError::Config(
            "MEG needs at least one expert model".into(),
        ));
    }
    if let Some(k) = levels {
        if k != pool.len() + 1 {
            return Err(AmpDataError::Config(format!(
                "K = {k} levels needs K-1 = {} experts besides the standard response, got {} ({})",
                k.saturating_sub(1),
                pool.len(),
                pool.iter()
                    .map(|e| e.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let mut names = std::collections::HashSet::new();
    for e in &pool {
        if !names.insert(e.name.clone()) {
            return Err(AmpDataError::Config(format!(
                "expert name {:?} is used twice",
                e.name
            )));
        }
    }
    Ok(pool)
}

/// Fine-tunes the base model for Incremental Generation.
pub trait FineTuner: Send + Sync {
    /// Fine-tunes the *base* model on `subset` (the cumulative subset `[F1..F_stage]`, stage is
    /// 1-based) and returns the tuned model.
    fn fine_tune(&self, subset: &[InstructionRecord], stage: usize) -> Result<Arc<dyn Generator>>;
}

/// End indices of the cumulative subsets: `n` records split into `parts` contiguous parts of
/// equal size (the first `n % parts` parts get one extra record); subset i is `[0, ends[i])`.
pub fn cumulative_splits(n: usize, parts: usize) -> Vec<usize> {
    let (q, r) = (n / parts, n % parts);
    let mut ends = Vec::with_capacity(parts);
    let mut e = 0;
    for i in 0..parts {
        e += q + usize::from(i < r);
        ends.push(e);
    }
    ends
}

/// IG (Algorithm 1): fine-tunes the base on K−2 cumulative subsets of `sft` and returns the
/// experts in initial-rank order: the model tuned on the most data first, the base model last.
pub fn incremental_experts(
    base: Expert,
    tuner: &dyn FineTuner,
    sft: &[InstructionRecord],
    levels: usize,
) -> Result<Vec<Expert>> {
    if levels < 3 {
        return Err(AmpDataError::Config(format!(
            "IG needs K >= 3 (standard, at least one fine-tuned model, base), got K = {levels}"
        )));
    }
    let parts = levels - 2;
    if sft.len() < parts {
        return Err(AmpDataError::Config(format!(
            "IG with K = {levels} splits the SFT data into {parts} parts but it has only {} records",
            sft.len()
        )));
    }
    let ends = cumulative_splits(sft.len(), parts);
    let mut tuned = Vec::with_capacity(parts);
    for (i, &end) in ends.iter().enumerate() {
        let g = tuner.fine_tune(&sft[..end], i + 1)?;
        tuned.push(Expert {
            name: format!("{}+sft{}of{}({})", base.name, i + 1, parts, end),
            generator: g,
        });
    }
    tuned.reverse();
    tuned.push(base);
    Ok(tuned)
}

/// Any OpenAI-compatible chat-completions server with image input (vLLM, llama.cpp server,
/// Ollama): the image goes as a base64 data URL in an `image_url` content part of the first user
/// message; the dialogue's `<image>` placeholder is removed from the text.
///
/// Decoding: `temperature` and `max_tokens` come from [`GenParams`]. The OpenAI API has no beam
/// search or repetition penalty, and `amp-chat` sends only standard fields, so `num_beams` and
/// `repetition_penalty` are not sent (configure them on the server, e.g. vLLM's
/// `--generation-config`).
pub struct OpenAiGenerator {
    client: amp_chat::ChatClient,
    model: String,
    params: GenParams,
    system: Option<String>,
}

impl OpenAiGenerator {
    /// A generator for `model` behind `client`.
    pub fn new(client: amp_chat::ChatClient, model: impl Into<String>, params: GenParams) -> Self {
        Self {
            client,
            model: model.into(),
            params,
            system: None,
        }
    }

    /// Adds a system prompt.
    pub fn with_system(mut self, system: impl Into<String>) -> Self {
        self.system = Some(system.into());
        self
    }

    /// The chat request for a dialogue history (public for tests and dry runs).
    pub fn request(&self, image: &Path, history: &[Turn]) -> Result<amp_chat::ChatRequest> {
        use amp_chat::Message;
        let bytes = std::fs::read(image).map_err(|e| AmpDataError::io(image, e))?;
        let mime = amp_chat::types::sniff_image_mime(&bytes);
        let mut messages = Vec::with_capacity(history.len() + 1);
        if let Some(s) = &self.system {
            messages.push(Message::system(s.clone()));
        }
        for (k, t) in history.iter().enumerate() {
            let text = t
                .value
                .replace("<image>\n", "")
                .replace("\n<image>", "")
                .replace("<image>", "");
            messages.push(match (k, t.from.as_str()) {
                (0, _) => Message::user_with_image(text.trim().to_string(), mime, &bytes),
                (_, "human") => Message::user(text),
                _ => Message::assistant(text),
            });
        }
        Ok(amp_chat::ChatRequest::new(self.model.clone(), messages)
            .temperature(self.params.temperature)
            .max_tokens(self.params.max_new_tokens as u32))
    }
}

impl Generator for OpenAiGenerator {
    fn name(&self) -> String {
        self.model.clone()
    }

    fn respond(&self, image: &Path, history: &[Turn]) -> Result<String> {
        let req = self.request(image, history)?;
        let resp = self
            .client
            .complete(&req)
            .map_err(|e| AmpDataError::Generation {
                model: self.model.clone(),
                record: image.display().to_string(),
                message: e.to_string(),
            })?;
        Ok(resp.content)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_are_cumulative_and_equal() {
        assert_eq!(cumulative_splits(90, 3), vec![30, 60, 90]);
        assert_eq!(cumulative_splits(10, 3), vec![4, 7, 10]);
        assert_eq!(cumulative_splits(5, 1), vec![5]);
    }
}
