//! # mrhal-bench
//!
//! A hallucination benchmark harness that evaluates any model, local or served, and never lies
//! about a number (docs/paper-notes.md §7):
//!
//! * loaders for MRHal-Bench, MMHal-Bench, POPE and LLaVA-Bench qa90 ([`data`], docs/paper-notes.md
//!   §5–6), with errors that name the file, record and field;
//! * answer generation through a [`Responder`] (multi-round, the model's own answers as
//!   history), written as produced and resumed on rerun ([`answers`]);
//! * a [`Judge`] trait and an LLM judge over `amp-chat` ([`llm_judge`]) with strict parsing
//!   ([`judge`]): a judge failure is a *missing* item, counted and reported, never a 0 or −1;
//! * metrics ([`metrics`]) and reports ([`report`]): results JSON with decoding parameters,
//!   judge model as returned, prompt hashes and missing counts; a Markdown table; a PNG chart;
//! * `pub mod cli` with `answer`, `judge`, `score` and `compare` commands.

pub mod answers;
pub mod cli;
pub mod data;
pub mod error;
pub mod judge;
pub mod jsonl;
pub mod llm_judge;
pub mod metrics;
pub mod prompts;
pub mod report;
pub mod responder;
pub mod runner;

pub use answers::{generate_answers, generate_answers_sequential, load_answers, AnswerSet, AnswerTask, Benchmark};
pub use error::{BenchError, Result};
pub use judge::{Judge, JudgeFailure, Verdict};
pub use llm_judge::{JudgeParams, LlmJudge};
pub use responder::{Decoding, OpenAiResponder, Responder, Speaker, Turn};
pub use runner::{RunResults, JudgmentRecord};
