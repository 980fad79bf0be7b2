//! # mllm — a LLaVA-architecture multimodal LLM in tch
//!
//! LLaVA-1.5 (CLIP ViT vision tower → MLP projector → LLaMA/Vicuna decoder), the model AMP trains
//! with MDPO (paper §4), loading Hugging Face checkpoints from disk and matching transformers'
//! logits and generations.
//!
//! * [`config`] — serde configs (`LlavaConfig::from_dir` for both checkpoint layouts, `tiny()`).
//! * [`linear`] — a linear layer with an optional LoRA adapter; [`lora`] — injection, the adapter
//!   switch, PEFT-compatible save/load, merging.
//! * [`clip`] — the shared CLIP encoder; [`clip_vision`] — the vision tower with LLaVA's feature
//!   selection; [`projector`]; [`llama`] — the decoder with a KV cache; [`llava`] — the model.
//! * [`checkpoint`] — the one weight loader: memory-mapped (sharded) safetensors in every key
//!   spelling, each tensor created once in the requested kind and device, strict key/shape checks;
//!   [`layers`] — the LayerNorm and activations shared by CLIP and BERT.
//! * [`image_processor`] — the CLIP processor with Pillow-exact bicubic resizing and LLaVA's
//!   pad-to-square; [`conversation`] — vicuna_v1 prompts and the training encoder (response mask,
//!   round index, weights `1 + 0.05·r`).
//! * [`generation`] — greedy / sampling / beam search, penalties, stop strings, batches, chat.
//! * [`preference`] — `mdpo::PreferenceModel` for LLaVA (image features shared across the K
//!   responses of an example).
//! * [`bounds`] — what is checked before input reaches libtorch: sequence length against the
//!   context (and an optional memory budget), token ids against the vocabulary, pixel shapes.
//! * [`recompute`] — gradient checkpointing (activation recomputation) for a chain of layers.
//! * `bert`, `clip_text` — text experts (sentence embeddings, CLIP text tower), both behind the
//!   one [`text_encoder::TextEncoder`] wrapper.

pub mod bert;
pub mod bounds;
pub mod checkpoint;
pub mod config;
pub mod conversation;
pub mod clip;
pub mod clip_text;
pub mod clip_vision;
pub mod error;
pub mod generation;
pub mod image_processor;
pub mod layers;
pub mod projector;
pub mod lora;
pub mod llava;
pub mod llama;
pub mod preference;
pub mod recompute;
pub mod linear;
pub mod text_encoder;

pub use bert::{minilm_dir, BertConfig, BertEncoder, BertModel, SentenceBert};
pub use clip_text::{ClipTextConfig, ClipTextEncoder, ClipTextModel};
pub use text_encoder::{TextEncoder, TextModel};
pub use error::{MllmError, Result};
pub use config::LlavaConfig;
pub use llava::{LoadOptions, Llava};
pub use preference::LlavaPreference;
