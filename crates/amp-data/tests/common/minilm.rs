//! The real all-MiniLM-L6-v2 for the tests and the benchmark: the crate's own
//! `amp_data::minilm::BertEmbedder` (feature `mllm`, which this crate's dev-dependency on itself
//! turns on), so they measure exactly the code a user runs.
#![allow(dead_code)]
pub use amp_data::minilm::BertEmbedder;

/// Loads the expert (`MiniLm::load()`: an error saying where it was looked for when missing).
pub struct MiniLm;

impl MiniLm {
    pub fn load() -> amp_data::Result<BertEmbedder> {
        BertEmbedder::minilm()
    }
}
