//! amp-io: the small, torch-free foundations every amp-rs crate shares.
//!
//! - [`json`]: helpers for JSON readers' error messages ([`json::kind_of`]).
//! - [`rng`]: the one seeded PRNG (SplitMix64 + xoshiro256**); every random draw of a run comes
//!   from a stream derived from the run's seed.
//! - [`jsonl`]: the strict JSONL reader for user input and the lenient one for resuming a
//!   command's own output.
//! - [`lock`]: one writer per output directory or file (an advisory `flock`).
//! - [`paths`]: data-root containment of the file paths found in data files.
//! - [`image_check`] (feature `image`): images decoded and checked before use.
//!
//! docs/reliability.md lists the faults these guard against and the tests that show it.
#[cfg(feature = "image")]
pub mod image_check;
pub mod jsonl;
pub mod lock;
pub mod paths;
pub mod json;
pub mod rng;

pub use rng::Rng;
