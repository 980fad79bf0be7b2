//! amp-io: the small, torch-free foundations every amp-rs crate shares.
//!
//! - [`rng`]: the one seeded PRNG (SplitMix64 + xoshiro256**); every random draw of a run comes
//!   from a stream derived from the run's seed.
pub mod rng;

pub use rng::Rng;
