//! Content fingerprints (SHA-256) for the reference-log-prob cache key (docs/paper-notes.md §7:
//! precomputed reference log-probs must never be silently reused for other weights or data).
use crate::{MdpoError, Result};
use sha2::{Digest, Sha256};
use std::path::Path;
use tch::{nn, Device, Tensor};

/// Hashes one tensor: kind, shape and raw bytes (moved to the CPU, contiguous).
pub fn hash_tensor(h: &mut Sha256, t: &Tensor) {
    let t = t.detach().to_device(Device::Cpu).contiguous();
    h.update(format!("{:?}{:?}", t.kind(), t.size()).as_bytes());
    let numel = t.numel();
    let bytes = numel * t.kind().elt_size_in_bytes();
    let mut buf = vec![0u8; bytes];
    if numel > 0 {
        t.copy_data_u8(&mut buf, numel);
    }
    h.update(&buf);
}

/// Hashes the variables of a `VarStore` by name order. With `include_trainable = false` only the
/// variables that do not require gradients (the frozen base) are hashed. Errors when nothing is
/// left to hash, since an empty fingerprint would match any weights.
pub fn var_store(vs: &nn::VarStore, include_trainable: bool) -> Result<String> {
    let mut vars: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| include_trainable || !t.requires_grad())
        .collect();
    if vars.is_empty() {
        return Err(MdpoError::Config(
            "no frozen weights to fingerprint in the model's VarStore: set `reference_fingerprint` \
             (e.g. mdpo::fingerprint::files over the base checkpoint)"
                .into(),
        ));
    }
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut h = Sha256::new();
    h.update(b"mdpo-vars-v1");
    for (name, t) in &vars {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        hash_tensor(&mut h, t);
    }
    Ok(hex::encode(h.finalize()))
}

/// Hashes files (e.g. a checkpoint's safetensors shards) in the given order.
pub fn files(paths: &[&Path]) -> Result<String> {
    let mut h = Sha256::new();
    h.update(b"mdpo-files-v1");
    for p in paths {
        let mut f = std::fs::File::open(p).map_err(|source| MdpoError::Io { path: p.to_path_buf(), source })?;
        let mut fh = Sha256::new();
        std::io::copy(&mut f, &mut fh).map_err(|source| MdpoError::Io { path: p.to_path_buf(), source })?;
        h.update(fh.finalize());
    }
    Ok(hex::encode(h.finalize()))
}

/// SHA-256 of a string, hex.
pub fn text(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}
