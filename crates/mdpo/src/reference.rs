//! The reference model's log-probs `log π_ref(y_k | x)` (AMP §3.2, Eq. 4–7).
//!
//! The reference is frozen, so by default its log-probs are computed once for the whole dataset
//! (under `no_grad`, eval mode: no dropout) and cached in `ref_cache` (JSON, f64, exact). The cache
//! is keyed by the reference weights' fingerprint, the data fingerprint, the model's
//! `encoding_fingerprint`, K and the round weight; a cache with another key is refused with
//! [`MdpoError::StaleCache`], never silently reused.
use crate::checkpoint::{io_err, write_atomic};
use crate::collective::Collective;
use crate::parallel::{gather_rows, rank_blocks};
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
    /// `[N][K]` summed weighted log-probs (a non-finite value is written as `null`, read as NaN).
    #[serde(deserialize_with = "nan_rows")]
    sum: Vec<Vec<f64>>,
    /// `[N][K]` token weights.
    #[serde(deserialize_with = "nan_rows")]
    weight: Vec<Vec<f64>>,
}

/// JSON has no NaN: serde_json writes it as `null`; read `null` back as NaN so the trainer's
/// non-finite guard, not the cache reader, deals with it.
fn nan_rows<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vec<Vec<f64>>, D::Error> {
    let rows = Vec::<Vec<Option<f64>>>::deserialize(d)?;
    Ok(rows.into_iter().map(|r| r.into_iter().map(|v| v.unwrap_or(f64::NAN)).collect()).collect())
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
///
/// Data parallel (`comm` of more than one rank): rank 0 decides whether the cache exists; if so
/// it loads and checks it and broadcasts the table, else every rank computes its share of the
/// blocks of `ref_batch_size` examples ([`crate::parallel::rank_blocks`]), the rows are gathered
/// and rank 0 alone writes the file.
pub(crate) fn prepare_cache<M: PreferenceModel>(
    policy: &M,
    reference: &Reference<M>,
    examples: &[PreferenceExample],
    data_fingerprint: &str,
    chunks: &[Range<usize>],
    cfg: &MdpoConfig,
    comm: &dyn Collective,
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
    let (n, k, rank, world) = (examples.len(), cfg.levels, comm.rank(), comm.world_size());
    let mut exists = [Tensor::from_slice(&[(path.exists() || matches!(reference, Reference::Cached { .. })) as i64])];
    comm.broadcast(&mut exists, 0)?;
    if exists[0].int64_value(&[0]) != 0 {
        let table = if rank == 0 {
            load_cache(&path, &key, n)?
        } else {
            let zeros = || Tensor::zeros([n as i64, k as i64], (Kind::Double, Device::Cpu));
            RefTable { sum: zeros(), weight: zeros() }
        };
        if world == 1 {
            return Ok(table);
        }
        let mut t = [table.sum, table.weight];
        comm.broadcast(&mut t, 0)?;
        let [sum, weight] = t;
        return Ok(RefTable { sum, weight });
    }
    // Compute once, in order, under no_grad in eval mode (this rank's blocks).
    let bs = cfg.ref_batch_size;
    let blocks = rank_blocks(n, bs, rank, world);
    let pb = if rank == 0 { progress(n as u64, "reference log-probs") } else { indicatif::ProgressBar::hidden() };
    let mut rows: Vec<(usize, Vec<f64>, Vec<f64>)> = Vec::with_capacity(n.div_ceil(world));
    for block in blocks {
        let batch_examples = &examples[block.clone()];
        let site = Site { stage: "the reference precomputation", micro_batch: batch_examples.len(), global_batch: bs };
        let (s, w) = catch_oom(site, || {
            let batch = policy.encode(batch_examples).map_err(MdpoError::model)?;
            compute(policy, reference, &batch, chunks)
        })?;
        let s = s.to_kind(Kind::Double).to_device(Device::Cpu).transpose(0, 1).contiguous();
        let w = w.to_kind(Kind::Double).to_device(Device::Cpu).transpose(0, 1).contiguous();
        for (b, i) in block.enumerate() {
            rows.push((i, Vec::<f64>::try_from(s.get(b as i64))?, Vec::<f64>::try_from(w.get(b as i64))?));
        }
        pb.inc((batch_examples.len() * world) as u64);
    }
    pb.finish_and_clear();
    let (sum, weight): (Vec<Vec<f64>>, Vec<Vec<f64>>) = if world == 1 {
        rows.into_iter().map(|(_, s, w)| (s, w)).unzip()
    } else {
        let (s, w) = gather_rows(comm, n, k, &rows)?;
        let to_rows = |t: &Tensor| -> Result<Vec<Vec<f64>>> {
            (0..n as i64).map(|i| Ok(Vec::<f64>::try_from(t.get(i))?)).collect()
        };
        (to_rows(&s)?, to_rows(&w)?)
    };
    if rank == 0 {
        let file = CacheFile { key, sum, weight };
        let bytes = serde_json::to_vec(&file).map_err(|source| MdpoError::Json { path: path.clone(), source })?;
        write_atomic(&path, &bytes)?;
        return Ok(RefTable::from_rows(&file.sum, &file.weight, k));
    }
    Ok(RefTable::from_rows(&sum, &weight, k))
}

/// A cache file, checked against `key` and the data size.
fn load_cache(path: &Path, key: &CacheKey, n: usize) -> Result<RefTable> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let file: CacheFile = serde_json::from_str(&text).map_err(|e| MdpoError::Data {
        path: path.to_path_buf(),
        location: format!("line {} column {}", e.line(), e.column()),
        message: format!("not a reference cache: {e}"),
    })?;
    check_key(path, &file.key, key)?;
    if file.sum.len() != n || file.weight.len() != n || file.sum.iter().any(|r| r.len() != key.levels) {
        return Err(MdpoError::Data { path: path.to_path_buf(), location: "sum".into(), message: "wrong shape".into() });
    }
    Ok(RefTable::from_rows(&file.sum, &file.weight, key.levels))
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
