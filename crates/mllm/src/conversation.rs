//! The vicuna_v1 conversation template of LLaVA-1.5 and the tokenizer wrapper: prompts for
//! generation and the training encoder (input ids, response mask, round index per token).
//!
//! Template (LLaVA `conv_vicuna_v1`, `SeparatorStyle.TWO`):
//! `{system} USER: {h0} ASSISTANT: {g0}</s>USER: {h1} ASSISTANT: {g1}</s>…`.
//! The text is tokenized in segments — `{system} USER: {h_r} ASSISTANT:` (prompt) and
//! ` {g_r}</s>` (response of round r) — each split at `<image>`, whose place takes
//! `image_tokens` copies of the image token id (LLaVA's `tokenizer_image_token`). Only the very
//! first piece gets the tokenizer's special tokens (BOS). Segment-wise tokenization keeps the
//! response/prompt boundary exact, which the per-token MDPO weights (1 + 0.05·r on round r,
//! AMP §4) need.
use crate::config::LlavaConfig;
use crate::error::{MllmError, Result};
use std::path::{Path, PathBuf};

/// The default vicuna_v1 system prompt.
pub const VICUNA_SYSTEM: &str = "A chat between a curious user and an artificial intelligence assistant. \
The assistant gives helpful, detailed, and polite answers to the user's questions.";

/// The image placeholder in conversation text.
pub const IMAGE_PLACEHOLDER: &str = "<image>";

/// AMP's per-round token weight: `1 + 0.05·r` (paper §4b, `loss_turbo`).
pub fn round_weight(round: usize) -> f64 {
    1. + 0.05 * round as f64
}

/// An encoded conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub ids: Vec<i64>,
    /// True on response tokens (the gpt turns and their `</s>`).
    pub response_mask: Vec<bool>,
    /// The round index of each response token, −1 elsewhere.
    pub rounds: Vec<i64>,
    /// Number of `<image>` placeholders expanded.
    pub images: usize,
}

impl Encoded {
    /// Token weights: `1 + 0.05·r` on response tokens of round r, 0 elsewhere.
    pub fn weights(&self) -> Vec<f32> {
        self.rounds.iter().map(|&r| if r >= 0 { round_weight(r as usize) as f32 } else { 0. }).collect()
    }
}

/// A `tokenizer.json` tokenizer plus the vicuna_v1 template.
#[derive(Clone)]
pub struct ChatTokenizer {
    tok: tokenizers::Tokenizer,
    path: PathBuf,
    /// Id placed at image positions.
    pub image_token_id: i64,
    /// Image tokens per image.
    pub image_tokens: usize,
    /// System prompt.
    pub system: String,
    /// End-of-sequence ids.
    pub eos_ids: Vec<i64>,
}

impl std::fmt::Debug for ChatTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTokenizer").field("path", &self.path).finish_non_exhaustive()
    }
}

impl ChatTokenizer {
    /// Load `tokenizer.json`.
    pub fn from_file(path: &Path, image_token_id: i64, image_tokens: usize, eos_ids: Vec<i64>) -> Result<Self> {
        if !path.exists() {
            return Err(MllmError::Tokenizer { path: path.into(), message: "file not found".into() });
        }
        let tok = tokenizers::Tokenizer::from_file(path).map_err(|e| MllmError::Tokenizer { path: path.into(), message: e.to_string() })?;
        Ok(Self { tok, path: path.into(), image_token_id, image_tokens, system: VICUNA_SYSTEM.into(), eos_ids })
    }

    /// `<dir>/tokenizer.json` for a model configuration.
    pub fn from_model_dir(dir: &Path, cfg: &LlavaConfig) -> Result<Self> {
        if cfg.mm_use_im_start_end {
            return Err(MllmError::Config { path: dir.join("config.json"), message: "mm_use_im_start_end is not supported".into() });
        }
        Self::from_file(&dir.join("tokenizer.json"), cfg.image_token_id, cfg.image_tokens() as usize, cfg.text.eos_ids())
    }

    /// The underlying tokenizer.
    pub fn tokenizer(&self) -> &tokenizers::Tokenizer {
        &self.tok
    }

    /// A fingerprint of the tokenizer and template (for reference-log-prob cache keys).
    pub fn fingerprint(&self) -> String {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.tok.to_string(false).unwrap_or_default().hash(&mut h);
        format!("vicuna_v1|{}|{}|{}|{:x}", self.system, self.image_token_id, self.image_tokens, h.finish())
    }

    fn encode_text(&self, text: &str, special: bool) -> Result<Vec<i64>> {
        let e = self.tok.encode(text, special).map_err(|e| MllmError::Tokenizer { path: self.path.clone(), message: e.to_string() })?;
        Ok(e.get_ids().iter().map(|&i| i as i64).collect())
    }

    /// Decode ids (skipping special tokens and image positions).
    pub fn decode(&self, ids: &[i64]) -> Result<String> {
        let ids: Vec<u32> = ids.iter().filter(|&&i| i >= 0 && i != self.image_token_id).map(|&i| i as u32).collect();
        self.tok.decode(&ids, true).map_err(|e| MllmError::Tokenizer { path: self.path.clone(), message: e.to_string() })
    }

    /// Encode alternating `turns` (human first). With an odd number of turns the prompt ends
    /// with `ASSISTANT:` (a generation prompt). `max_len` truncates the tail only; a cut inside
    /// an image span is an error.
    pub fn encode(&self, turns: &[String], max_len: Option<usize>) -> Result<Encoded> {
        if turns.is_empty() {
            return Err(MllmError::Input("empty conversation".into()));
        }
        let mut out = Encoded { ids: vec![], response_mask: vec![], rounds: vec![], images: 0 };
        let mut first = true;
        for (i, t) in turns.iter().enumerate() {
            let r = i / 2;
            let response = i % 2 == 1;
            let text = if response {
                if t.contains(IMAGE_PLACEHOLDER) {
                    return Err(MllmError::Input(format!("turn {i}: a response must not contain {IMAGE_PLACEHOLDER}")));
                }
                format!(" {t}</s>")
            } else {
                format!("{}USER: {t} ASSISTANT:", if r == 0 { format!("{} ", self.system) } else { String::new() })
            };
            for (j, piece) in text.split(IMAGE_PLACEHOLDER).enumerate() {
                if j > 0 {
                    out.images += 1;
                    out.ids.extend(std::iter::repeat_n(self.image_token_id, self.image_tokens));
                    out.response_mask.extend(std::iter::repeat_n(false, self.image_tokens));
                    out.rounds.extend(std::iter::repeat_n(-1, self.image_tokens));
                }
                if piece.is_empty() && !first {
                    continue;
                }
                let e = self.encode_text(piece, first)?;
                first = false;
                out.response_mask.extend(std::iter::repeat_n(response, e.len()));
                out.rounds.extend(std::iter::repeat_n(if response { r as i64 } else { -1 }, e.len()));
                out.ids.extend(e);
            }
        }
        if let Some(m) = max_len {
            if out.ids.len() > m {
                if out.ids[..m].iter().filter(|&&i| i == self.image_token_id).count()
                    != out.ids.iter().filter(|&&i| i == self.image_token_id).count()
                {
                    return Err(MllmError::Input(format!(
                        "max_len {m} would cut into an image span ({} tokens in total)",
                        out.ids.len()
                    )));
                }
                out.ids.truncate(m);
                out.response_mask.truncate(m);
                out.rounds.truncate(m);
            }
        }
        Ok(out)
    }
}

/// GPT-2's byte → printable-character map (used by byte-level BPE vocabularies).
fn bytes_to_unicode() -> Vec<char> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut out = vec![' '; 256];
    for (b, c) in bs.into_iter().zip(cs) {
        out[b as usize] = char::from_u32(c).expect("valid char");
    }
    out
}

impl ChatTokenizer {
    /// A byte-level tokenizer without merges (ids: `<unk>` 0, `<s>` 1, `</s>` 2, the 256 bytes
    /// 3..=258, `<image>` 259) for tiny random models ([`crate::config::LlavaConfig::tiny`]):
    /// every text is encodable, nothing needs to be on disk.
    pub fn byte_level(image_tokens: usize) -> Result<Self> {
        let mut vocab = serde_json::Map::new();
        for (i, s) in ["<unk>", "<s>", "</s>"].iter().enumerate() {
            vocab.insert(s.to_string(), (i as i64).into());
        }
        for (b, c) in bytes_to_unicode().into_iter().enumerate() {
            vocab.insert(c.to_string(), (b as i64 + 3).into());
        }
        vocab.insert("<image>".into(), 259.into());
        let added: Vec<serde_json::Value> = [("<unk>", 0), ("<s>", 1), ("</s>", 2), ("<image>", 259)]
            .iter()
            .map(|(c, id)| serde_json::json!({"id": id, "content": c, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
            .collect();
        let j = serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
            "post_processor": {
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}
            },
            "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
                      "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab, "merges": []}
        });
        let path = PathBuf::from("<byte-level>");
        let tok: tokenizers::Tokenizer = j
            .to_string()
            .parse()
            .map_err(|e: tokenizers::Error| MllmError::Tokenizer { path: path.clone(), message: e.to_string() })?;
        Ok(Self { tok, path, image_token_id: 259, image_tokens, system: VICUNA_SYSTEM.into(), eos_ids: vec![2] })
    }
}
