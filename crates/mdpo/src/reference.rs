//! The reference model's log-probs `log π_ref(y_k | x)` (AMP §3.2, Eq. 4–7).
//!
//! The reference is frozen, so by default its log-probs are computed once for the whole dataset
//! (under `no_grad`, eval mode: no dropout) and cached in `ref_cache` (JSON, f64, exact). The cache
//! is keyed by the reference weights' fingerprint, the data fingerprint, the model's
//! `encoding_fingerprint`, K and the round weight; a cache with another key is refused with
//! [`MdpoError::StaleCache`], never silently reused.
use crate::checkpoint::{io_err, write_atomic};
use crate::config::MdpoConfig;
use crate::data::PreferenceExample;
use crate::guard::{catch_oom, Site};
use crate::metrics::progress;
use crate::model::PreferenceModel;
use crate::{MdpoError, Result};
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// Where the reference log-probs come from.
pub enum Reference<M> {
    /// A separate frozen model of the same type (AMP: the base checkpoint loaded twice). It must
    /// have the policy's `encoding_fingerprint`; the policy's encoded batches are reused.
    Model(M),
    /// The policy itself with its adapters disabled (LoRA).
    PolicyWithoutAdapters,
    /// A cache file written by an earlier run for the reference whose weights have this
    /// fingerprint; the data and encoding must match too.
    Cached { path: PathBuf, weights_fingerprint: String },
    /// No reference (`log π_ref ≡ 0`); requires `loss.reference_free`.
    None,
}

/// The key of a reference cache file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheKey {
    pub format: u32,
    pub weights: String,
    pub data: String,
    pub encoding: String,
    pub round_weight: f64,
    pub levels: usize,
}

#[derive(Serialize, Deserialize)]
struct CacheFile {
    key: CacheKey,
    /// `[N][K]` summed weighted log-probs.
    sum: Vec<Vec<f64>>,
    /// `[N][K]` token weights.
    weight: Vec<Vec<f64>>,
}

/// The reference log-probs of the whole dataset: `[N, K]` sums and weights (CPU, f64).
pub(crate) struct RefTable {
    pub sum: Tensor,
    pub weight: Tensor,
}

impl RefTable {
    fn from_rows(sum: &[Vec<f64>], weight: &[Vec<f64>], k: usize) -> Self {
        let flat = |v: &[Vec<f64>]| Tensor::from_slice(&v.concat()).reshape([v.len() as i64, k as i64]);
        Self { sum: flat(sum), weight: flat(weight) }
    }

    /// `[K, B]` sums and weights of the examples `idx`.
    pub fn rows(&self, idx: &[usize]) -> (Tensor, Tensor) {
        let i = Tensor::from_slice(&idx.iter().map(|&i| i as i64).collect::<Vec<_>>());
        (self.sum.index_select(0, &i).transpose(0, 1), self.weight.index_select(0, &i).transpose(0, 1))
    }
}

fn check_key(path: &Path, cached: &CacheKey, current: &CacheKey) -> Result<()> {
    let fields: [(&str, String, String); 6] = [
        ("format", cached.format.to_string(), current.format.to_string()),
        ("reference weights fingerprint", cached.weights.clone(), current.weights.clone()),
        ("data fingerprint", cached.data.clone(), current.data.clone()),
        ("encoding fingerprint", cached.encoding.clone(), current.encoding.clone()),
        ("round_weight", cached.round_weight.to_string(), current.round_weight.to_string()),
        ("levels", cached.levels.to_string(), current.levels.to_string()),
    ];
    for (field, a, b) in fields {
        if a != b {
            return Err(MdpoError::StaleCache { path: path.into(), field: field.into(), cached: a, current: b });
        }
    }
    Ok(())
}

/// The fingerprint of the reference weights for the cache key.
fn weights_fingerprint<M: PreferenceModel>(policy: &M, reference: &Reference<M>, cfg: &MdpoConfig) -> Result<String> {
    if let Some(f) = &cfg.reference_fingerprint {
        return Ok(f.clone());
    }
    match reference {
        Reference::Model(r) => r.weights_fingerprint(true),
        Reference::PolicyWithoutAdapters => policy.weights_fingerprint(false),
        Reference::Cached { weights_fingerprint, .. } => Ok(weights_fingerprint.clone()),
        Reference::None => Ok("none".into()),
    }
}

/// Loads the reference cache (checking its key), or computes it in data order and writes it.
pub(crate) fn prepare_cache<M: PreferenceModel>(
    policy: &M,
    reference: &Reference<M>,
    examples: &[PreferenceExample],
    data_fingerprint: &str,
    chunks: &[Range<usize>],
    cfg: &MdpoConfig,
) -> Result<RefTable> {
    let key = CacheKey {
        format: 1,
        weights: weights_fingerprint(policy, reference, cfg)?,
        data: data_fingerprint.to_string(),
        encoding: policy.encoding_fingerprint(),
        round_weight: cfg.round_weight,
        levels: cfg.levels,
    };
    let path = match reference {
        Reference::Cached { path, .. } => path.clone(),
        _ => cfg.ref_cache_path(),
    };
    let n = examples.len();
    if path.exists() || matches!(reference, Reference::Cached { .. }) {
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        let file: CacheFile = serde_json::from_str(&text).map_err(|e| MdpoError::Data {
            path: path.clone(),
            location: format!("line {} column {}", e.line(), e.column()),
            message: format!("not a reference cache: {e}"),
        })?;
        check_key(&path, &file.key, &key)?;
        if file.sum.len() != n || file.weight.len() != n || file.sum.iter().any(|r| r.len() != key.levels) {
            return Err(MdpoError::Data { path, location: "sum".into(), message: "wrong shape".into() });
        }
        return Ok(RefTable::from_rows(&file.sum, &file.weight, key.levels));
    }
    // Compute once, in order, under no_grad in eval mode.
    let bs = cfg.ref_batch_size;
    let pb = progress(n as u64, "reference log-probs");
    let mut sums: Vec<Vec<f64>> = Vec::with_capacity(n);
    let mut weights: Vec<Vec<f64>> = Vec::with_capacity(n);
    for start in (0..n).step_by(bs) {
        let batch_examples = &examples[start..(start + bs).min(n)];
        let site = Site { stage: "the reference precomputation", micro_batch: batch_examples.len(), global_batch: bs };
        let (s, w) = catch_oom(site, || {
            let batch = policy.encode(batch_examples).map_err(MdpoError::model)?;
            compute(policy, reference, &batch, chunks)
        })?;
        let s = s.to_kind(Kind::Double).to_device(Device::Cpu).transpose(0, 1).contiguous();
        let w = w.to_kind(Kind::Double).to_device(Device::Cpu).transpose(0, 1).contiguous();
        for b in 0..batch_examples.len() as i64 {
            sums.push(Vec::<f64>::try_from(s.get(b))?);
            weights.push(Vec::<f64>::try_from(w.get(b))?);
        }
        pb.inc(batch_examples.len() as u64);
    }
    pb.finish_and_clear();
    let file = CacheFile { key, sum: sums, weight: weights };
    let bytes = serde_json::to_vec(&file).map_err(|source| MdpoError::Json { path: path.clone(), source })?;
    write_atomic(&path, &bytes)?;
    Ok(RefTable::from_rows(&file.sum, &file.weight, cfg.levels))
}

/// Reference `[K, B]` sums and weights for an encoded batch, computed now (no_grad, eval mode),
/// `chunks` of levels at a time.
pub(crate) fn compute<M: PreferenceModel>(
    policy: &M,
    reference: &Reference<M>,
    batch: &M::Batch,
    chunks: &[Range<usize>],
) -> Result<(Tensor, Tensor)> {
    let run = |m: &M| -> Result<(Tensor, Tensor)> {
        let (mut s, mut w) = (Vec::new(), Vec::new());
        for r in chunks {
            let lp = tch::no_grad(|| m.response_logps(batch, r.clone(), false)).map_err(MdpoError::model)?;
            s.push(lp.sum.detach().to_kind(Kind::Double));
            w.push(lp.weight.detach().to_kind(Kind::Double));
        }
        Ok((Tensor::cat(&s, 0), Tensor::cat(&w, 0)))
    };
    match reference {
        Reference::Model(r) => run(r),
        Reference::PolicyWithoutAdapters => {
            policy.set_adapters_enabled(false)?;
            let out = run(policy);
            policy.set_adapters_enabled(true)?;
            out
        }
        Reference::Cached { .. } | Reference::None => {
            Err(MdpoError::Config("no reference model to compute log-probs with".into()))
        }
    }
}
