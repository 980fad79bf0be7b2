//! A byte-level BPE tokenizer trained on the world's text with the `tokenizers` crate.
//!
//! Byte-level BPE (GPT-2 style) is lossless: every string encodes (no `<unk>` is ever produced)
//! and `decode(encode(s)) == s`. Trained to convergence on the world corpus, every word of the
//! world (and of the vicuna_v1 template) is a single token. Special tokens, with fixed ids:
//! `<unk>`=0, `<s>`=1, `</s>`=2, `<image>`=3, `<pad>`=4 (LLaMA's unk/bos/eos ids). The
//! post-processor prepends `<s>` when `add_special_tokens` is true, as LLaMA's tokenizer does.
use crate::error::{Result, WorldError};
use crate::text::{vicuna_v1_prompt, Turn, IMAGE_TOKEN, SHORT_ANSWER, VICUNA_SYSTEM};
use std::collections::HashSet;
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

/// Special tokens in id order.
pub const SPECIAL_TOKENS: [&str; 5] = ["<unk>", "<s>", "</s>", IMAGE_TOKEN, "<pad>"];
pub const UNK_ID: u32 = 0;
pub const BOS_ID: u32 = 1;
pub const EOS_ID: u32 = 2;
pub const IMAGE_ID: u32 = 3;
pub const PAD_ID: u32 = 4;

fn tk_err(e: impl std::fmt::Display) -> WorldError {
    WorldError::Tokenizer(e.to_string())
}

/// Strings the chat template adds around the world's text: the vicuna_v1 system prompt, the
/// role markers, the POPE short-answer instruction.
pub fn template_corpus() -> Vec<String> {
    let conv = vec![
        Turn::human(format!("{IMAGE_TOKEN}\nDescribe the image.")),
        Turn::gpt("There is a circle."),
        Turn::human("Is there a square?"),
    ];
    vec![
        VICUNA_SYSTEM.to_string(),
        vicuna_v1_prompt(&conv),
        SHORT_ANSWER.to_string(),
    ]
}

/// Train a byte-level BPE on `corpus` (plus [`template_corpus`]) up to `vocab_size` entries.
pub fn train_tokenizer(corpus: &[String], vocab_size: usize) -> Result<Tokenizer> {
    let specials: Vec<AddedToken> = SPECIAL_TOKENS
        .iter()
        .map(|t| AddedToken::from(*t, true))
        .collect();
    let alphabet: HashSet<char> = ByteLevel::alphabet().into_iter().collect();
    let trainer = BpeTrainer::builder()
        .vocab_size(vocab_size)
        .min_frequency(0)
        .show_progress(false)
        .special_tokens(specials.clone())
        .initial_alphabet(alphabet)
        .build();
    let mut trainer: TrainerWrapper = trainer.into();
    let bpe = BPE::builder()
        .unk_token("<unk>".into())
        .build()
        .map_err(tk_err)?;
    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    tok.add_special_tokens(specials.clone()).map_err(tk_err)?;
    // Repeat the template strings so their merges are learned first.
    let mut all: Vec<String> = corpus.to_vec();
    for _ in 0..50 {
        all.extend(template_corpus());
    }
    tok.train(&mut trainer, all.iter()).map_err(tk_err)?;
    tok.with_post_processor(Some(
        TemplateProcessing::builder()
            .try_single("<s> $A")
            .map_err(tk_err)?
            .try_pair("<s> $A $B")
            .map_err(tk_err)?
            .special_tokens(vec![("<s>", BOS_ID)])
            .build()
            .map_err(tk_err)?,
    ));
    for (i, t) in SPECIAL_TOKENS.iter().enumerate() {
        if tok.token_to_id(t) != Some(i as u32) {
            return Err(WorldError::Tokenizer(format!(
                "special token {t} did not get id {i}"
            )));
        }
    }
    Ok(tok)
}

/// The tokenizer.json text (deterministic for a given corpus).
pub fn tokenizer_json(tok: &Tokenizer) -> Result<String> {
    tok.to_string(true).map_err(tk_err)
}

/// Load a tokenizer.json.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    Tokenizer::from_file(path)
        .map_err(|e| WorldError::Tokenizer(format!("{}: {e}", path.display())))
}
