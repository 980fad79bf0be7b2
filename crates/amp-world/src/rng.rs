//! The world's deterministic PRNG: `amp_io::rng` (SplitMix64 seeding + xoshiro256**), re-exported
//! so scene generation keeps its `(seed, split, index)` streams.
pub use amp_io::rng::{mix, splitmix64, Rng};
