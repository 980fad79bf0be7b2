//! # amp — Automated Multi-level Preference for MLLMs, in Rust
//!
//! The umbrella crate: it re-exports the workspace's library crates and owns the `amp` CLI, the
//! examples, the benches and the integration tests.
//!
//! | crate | concern |
//! |---|---|
//! | [`mllm`] | LLaVA-architecture model (CLIP ViT, projector, LLaMA) in tch, generation, LoRA, text experts |
//! | [`mdpo`] | the MDPO loss and a model-agnostic preference / SFT trainer |
//! | [`amp_data`] | human-free multi-level preference data: MEG, IG and the auto-check |
//! | [`mrhal_bench`] | MRHal-Bench, MMHal-Bench, POPE, LLaVA-Bench and a robust LLM judge |
//! | [`amp_chat`] | an OpenAI-compatible chat client shared by the data pipeline and the judge |

pub mod adapters;
pub mod ig;
pub mod model_args;
pub mod pipeline;

pub use amp_chat;
pub use amp_data;
pub use mdpo;
pub use mllm;
pub use mrhal_bench;
