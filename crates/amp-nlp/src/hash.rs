//! The two hash functions of spaCy's pipeline.
//!
//! * [`murmurhash64a`] (seed 1) is spaCy's `hash_string`: the id of every string in the
//!   `StringStore` (`spacy/strings.pyx`), hence of every token attribute value (NORM, PREFIX,
//!   SUFFIX, SHAPE, ...). Strings in spaCy's fixed symbol table get their small symbol id instead
//!   ([`string_id`]).
//! * [`murmurhash3_x64_128`] of the 8 little-endian bytes of a `u64` attribute id is thinc's
//!   `ops.hash` ([`hash_u64`]), which `HashEmbed` uses to pick 4 rows of its table.

use crate::symbols::SYMBOLS;
use std::collections::HashMap;
use std::sync::OnceLock;

/// Austin Appleby's MurmurHash64A (the `murmurhash` package's `hash64`).
pub fn murmurhash64a(key: &[u8], seed: u64) -> u64 {
    const M: u64 = 0xc6a4_a793_5bd1_e995;
    const R: u32 = 47;
    let len = key.len();
    let mut h: u64 = seed ^ (len as u64).wrapping_mul(M);
    let mut chunks = key.chunks_exact(8);
    for c in &mut chunks {
        let mut k = u64::from_le_bytes(c.try_into().unwrap());
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h ^= k;
        h = h.wrapping_mul(M);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (i, &b) in tail.iter().enumerate().rev() {
            h ^= (b as u64) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> R;
    h = h.wrapping_mul(M);
    h ^= h >> R;
    h
}

fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// MurmurHash3_x64_128 (smhasher) as two `u64` words.
pub fn murmurhash3_x64_128(key: &[u8], seed: u64) -> [u64; 2] {
    const C1: u64 = 0x87c3_7b91_1142_53d5;
    const C2: u64 = 0x4cf5_ad43_2745_937f;
    let (mut h1, mut h2) = (seed, seed);
    let mut blocks = key.chunks_exact(16);
    for b in &mut blocks {
        let k1 = u64::from_le_bytes(b[..8].try_into().unwrap());
        let k2 = u64::from_le_bytes(b[8..].try_into().unwrap());
        h1 ^= k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
        h1 = h1
            .rotate_left(27)
            .wrapping_add(h2)
            .wrapping_mul(5)
            .wrapping_add(0x52dc_e729);
        h2 ^= k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
        h2 = h2
            .rotate_left(31)
            .wrapping_add(h1)
            .wrapping_mul(5)
            .wrapping_add(0x3849_5ab5);
    }
    let tail = blocks.remainder();
    let (mut k1, mut k2) = (0u64, 0u64);
    for (i, &b) in tail.iter().enumerate() {
        if i < 8 {
            k1 ^= (b as u64) << (8 * i);
        } else {
            k2 ^= (b as u64) << (8 * (i - 8));
        }
    }
    if tail.len() > 8 {
        h2 ^= k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
    }
    if !tail.is_empty() {
        h1 ^= k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
    }
    let len = key.len() as u64;
    h1 ^= len;
    h2 ^= len;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    h1 = fmix64(h1);
    h2 = fmix64(h2);
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    [h1, h2]
}

/// thinc's `NumpyOps.hash(ids, seed)` for one id.
///
/// thinc names it `MurmurHash3_x86_128_uint64`, but its body is MurmurHash3_x64_128 of the 8
/// little-endian bytes of the id (the x64 constants and 64-bit mixing), split into 4 `u32`s.
pub fn hash_u64(id: u64, seed: u32) -> [u32; 4] {
    let [h1, h2] = murmurhash3_x64_128(&id.to_le_bytes(), seed as u64);
    [h1 as u32, (h1 >> 32) as u32, h2 as u32, (h2 >> 32) as u32]
}

/// spaCy's `hash_string`: MurmurHash64A of the UTF-8 bytes with seed 1.
pub fn hash_string(s: &str) -> u64 {
    murmurhash64a(s.as_bytes(), 1)
}

fn symbols() -> &'static HashMap<&'static str, u64> {
    static MAP: OnceLock<HashMap<&'static str, u64>> = OnceLock::new();
    MAP.get_or_init(|| SYMBOLS.iter().copied().collect())
}

/// spaCy's `StringStore.add` / `get_string_id`: 0 for "", the symbol id for the strings of
/// `spacy.symbols.IDS`, otherwise [`hash_string`].
pub fn string_id(s: &str) -> u64 {
    if s.is_empty() {
        return 0;
    }
    if let Some(&id) = symbols().get(s) {
        return id;
    }
    hash_string(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// smhasher's VerificationTest: hash keys {}, {0}, {0,1}, ... {0..254} with seed 256 - n,
    /// hash the concatenated outputs with seed 0, take the first 4 bytes.
    fn verification<const W: usize>(f: impl Fn(&[u8], u32) -> [u8; W]) -> u32 {
        let mut key = [0u8; 256];
        let mut hashes = Vec::with_capacity(256 * W);
        for i in 0..256usize {
            key[i] = i as u8;
            hashes.extend_from_slice(&f(&key[..i], (256 - i) as u32));
        }
        let fin = f(&hashes, 0);
        u32::from_le_bytes(fin[..4].try_into().unwrap())
    }

    #[test]
    fn murmurhash3_x64_128_smhasher_verification_value() {
        let v = verification(|k, s| {
            let h = murmurhash3_x64_128(k, s as u64);
            let mut out = [0u8; 16];
            out[..8].copy_from_slice(&h[0].to_le_bytes());
            out[8..].copy_from_slice(&h[1].to_le_bytes());
            out
        });
        assert_eq!(v, 0x6384_BA69);
    }

    #[test]
    fn thinc_hash_of_an_id() {
        // thinc NumpyOps().hash(numpy.array([7425985699627899538], dtype="uint64"), 8)
        // (the NORM id of "the", hashed by en_core_web_sm's first HashEmbed)
        assert_eq!(
            hash_u64(7425985699627899538, 8),
            [2332737498, 1315472909, 1351622599, 1973209364]
        );
    }

    #[test]
    fn murmurhash64a_smhasher_verification_value() {
        let v = verification(|k, s| murmurhash64a(k, s as u64).to_le_bytes());
        assert_eq!(v, 0x1F0D_3804);
    }

    #[test]
    fn spacy_string_ids() {
        // spaCy's documentation: nlp.vocab.strings["coffee"] == 3197928453018144401
        assert_eq!(string_id("coffee"), 3197928453018144401);
        assert_eq!(string_id(""), 0);
        assert_eq!(string_id("IS_ALPHA"), 1);
        assert_eq!(
            string_id("X"),
            SYMBOLS.iter().find(|s| s.0 == "X").unwrap().1
        );
    }
}
