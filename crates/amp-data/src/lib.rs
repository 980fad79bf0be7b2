//! # amp-data — human-free multi-level preference data (AMP, NeurIPS 2024, §3.1)
//!
//! The authors released training and evaluation code only; this crate implements the data
//! pipeline the paper describes:
//!
//! * [`data`] — instruction data in LLaVA conversation JSON (the standard responses).
//! * [`generate`] — the [`Generator`] trait, Multi-size Expert Generation, Incremental Generation
//!   (Algorithm 1, via a [`FineTuner`]) and an OpenAI-compatible chat-server generator.
//! * [`tagger`] — pattern/textblob's Brill POS tagger and tokenizer, loaded from textblob's files.
//! * [`chunker`] — maximal noun chunks with the paper's stop-lists (§3.1.3 items 1–2).
//! * [`autocheck`] — local/global metrics and re-ranking (§3.1.3 items 3–5) over a
//!   [`SentenceEmbedder`].
//! * [`explain`] — per-sample auto-check diagnostics (`diagnostics.jsonl`, `amp check --explain`).
//! * [`pipeline`] — resumable, shardable, parallel runs; the AMP output format and metadata.
//! * `minilm` (feature `mllm`) — `BertEmbedder`: mllm's all-MiniLM-L6-v2 as a [`SentenceEmbedder`].
//! * [`cli`] — clap arguments and run functions for `generate`, `check` and `merge`.
//!
//! ```no_run
//! use amp_data::autocheck::{AutoCheckConfig, AutoChecker, SentenceEmbedder};
//! use amp_data::generate::{multi_size_experts, Expert};
//! use amp_data::pipeline::{self, Shard};
//! use amp_data::{load_llava, BrillTagger, Chunker, TaggerMode};
//! use std::path::Path;
//!
//! fn build(pool: Vec<Expert>, chunk_expert: &dyn SentenceEmbedder, sentence_expert: &dyn SentenceEmbedder)
//!     -> amp_data::Result<()> {
//!     let records = load_llava(Path::new("llava.json"), None)?;
//!     // MEG: largest model first; K = 4 needs three experts.
//!     let experts = multi_size_experts(pool, Some(4))?;
//!     pipeline::generate(&records, &experts, Path::new("out/gen.jsonl"), Shard::ALL, 0)?;
//!     let rows = pipeline::load_rows(Path::new("out/gen.jsonl"))?;
//!     let chunker = Chunker::new(BrillTagger::from_installed(TaggerMode::Brill)?);
//!     let checker = AutoChecker::new(chunker, chunk_expert, sentence_expert, AutoCheckConfig::default());
//!     pipeline::check(&rows, Some(&checker), Path::new("out/checked.jsonl"), Shard::ALL, 0)?;
//!     // out/amp.json (AMP training format), out/meta.jsonl, out/stats.json
//!     pipeline::finalize(pipeline::load_rows(Path::new("out/checked.jsonl"))?, Path::new("out"))?;
//!     Ok(())
//! }
//! ```
pub mod autocheck;
pub mod chunker;
pub mod cli;
pub mod data;
pub mod error;
pub mod explain;
pub mod generate;
#[cfg(feature = "mllm")]
pub mod minilm;
pub mod np_tags;
pub mod pipeline;
pub mod spacy_chunker;
pub mod tagger;

pub use autocheck::{AutoCheckConfig, AutoChecker, SentenceEmbedder};
pub use chunker::{Chunker, NounChunk, CHUNKER_VERSION};
pub use data::{load_llava, InstructionRecord};
pub use error::{AmpDataError, BoxError, Result};
pub use generate::{Expert, FineTuner, GenParams, Generator, OpenAiGenerator};
pub use pipeline::{CheckedRow, GeneratedRow, Shard};
pub use spacy_chunker::{ChunkerChoice, NounChunker, SpacyChunker};
pub use tagger::{BrillTagger, TaggerMode};
