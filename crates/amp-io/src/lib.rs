//! amp-io: the small, torch-free foundations every amp-rs crate shares.
//!
//! - [`json`]: helpers for JSON readers' error messages ([`json::kind_of`]).
//! - [`rng`]: the one seeded PRNG (SplitMix64 + xoshiro256**); every random draw of a run comes
//!   from a stream derived from the run's seed.
pub mod json;
pub mod rng;

pub use rng::Rng;
