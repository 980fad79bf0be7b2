//! Checkpoints: `output_dir/checkpoints/step-NNNNNNNN/` holds the trainable weights and AdamW
//! moments (safetensors), the [`TrainState`] and the whole [`MdpoConfig`] (JSON). Each is written
//! into a temporary directory, fsynced and renamed into place, so a kill at any moment leaves
//! either the previous checkpoint or the new one, never a torn one.
//!
//! Resume checks: the data fingerprint and seed (in the state) and every training setting of the
//! saved config ([`config_changes`]); settings that do not change the optimisation (paths,
//! checkpoint cadence, plots, the micro-batch split of an unchanged global batch, level chunking)
//! may change freely.
use crate::config::MdpoConfig;
use crate::optim::AdamW;
use crate::{MdpoError, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

/// Trainer progress: saved in every checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps done (including skipped ones).
    pub step: usize,
    /// Data cursor: epoch and offset into that epoch's permutation.
    pub epoch: usize,
    pub offset: usize,
    /// Steps skipped by the non-finite guard.
    pub skipped: usize,
    /// AdamW's update count.
    pub adam_t: u64,
    /// Fingerprint of the training data (a checkpoint only resumes the same data).
    pub data: String,
    pub seed: u64,
    /// The first step skipped for a non-finite loss or gradient, with its examples.
    #[serde(default)]
    pub first_non_finite: Option<NonFiniteStep>,
    /// Whether the latest step was skipped.
    #[serde(default)]
    pub last_skipped: bool,
}

impl TrainState {
    /// The state before step 1 of a run on data with fingerprint `data`.
    pub fn new(data: String, seed: u64) -> Self {
        Self { step: 0, epoch: 0, offset: 0, skipped: 0, adam_t: 0, data, seed, first_non_finite: None, last_skipped: false }
    }
}

/// A step the non-finite guard skipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NonFiniteStep {
    pub step: usize,
    /// Ids of the examples of the micro-batch whose loss was not finite (all the step's examples
    /// when only the gradient norm was).
    pub ids: Vec<String>,
}

/// One setting that differs between a checkpoint's config and the current one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigChange {
    /// The setting, dotted for nested ones (`loss.beta`).
    pub field: String,
    pub saved: String,
    pub current: String,
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> MdpoError + '_ {
    move |source| MdpoError::Io { path: path.to_path_buf(), source }
}

fn fsync(path: &Path) -> Result<()> {
    File::open(path).and_then(|f| f.sync_all()).map_err(io_err(path))
}

pub(crate) fn to_json<T: Serialize>(value: &T, path: &Path) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(value).map_err(|source| MdpoError::Json { path: path.into(), source })
}

/// Writes `bytes` to `path` atomically (tmp file, fsync, rename).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    {
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    Ok(())
}

/// The complete checkpoints under `output_dir/checkpoints`, oldest first.
pub fn list(output_dir: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let dir = output_dir.join("checkpoints");
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(&dir) else { return Ok(out) };
    for e in rd {
        let e = e.map_err(io_err(&dir))?;
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(n) = name.strip_prefix("step-").and_then(|n| n.parse::<usize>().ok()) {
            if e.path().join("state.json").is_file() {
                out.push((n, e.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The newest complete checkpoint.
pub fn latest(output_dir: &Path) -> Result<Option<PathBuf>> {
    Ok(list(output_dir)?.pop().map(|c| c.1))
}

/// What a checkpoint holds.
pub(crate) struct Snapshot<'a> {
    pub trainable: Vec<(String, Tensor)>,
    pub optimizer: &'a AdamW,
    pub state: &'a TrainState,
    pub config: &'a MdpoConfig,
}

/// Writes `checkpoints/step-N` atomically, keeps the newest `config.keep_checkpoints`, returns
/// its path. An existing complete checkpoint of the same step is kept as it is.
pub(crate) fn save(s: &Snapshot) -> Result<PathBuf> {
    let dir = s.config.output_dir.join("checkpoints");
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let fin = dir.join(format!("step-{:08}", s.state.step));
    if fin.join("state.json").is_file() {
        return Ok(fin);
    }
    let tmp = dir.join(format!(".tmp-step-{:08}-{}", s.state.step, std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    let weights: Vec<(String, Tensor)> =
        s.trainable.iter().map(|(n, t)| (n.clone(), t.detach().to_device(Device::Cpu))).collect();
    let wpath = tmp.join("trainable.safetensors");
    Tensor::write_safetensors(&weights, &wpath)?;
    let opath = tmp.join("optimizer.safetensors");
    s.optimizer.save(&opath)?;
    let spath = tmp.join("state.json");
    std::fs::write(&spath, to_json(s.state, &spath)?).map_err(io_err(&spath))?;
    let cpath = tmp.join("config.json");
    std::fs::write(&cpath, to_json(s.config, &cpath)?).map_err(io_err(&cpath))?;
    for p in [&wpath, &opath, &spath, &cpath, &tmp] {
        fsync(p)?;
    }
    if fin.exists() {
        std::fs::remove_dir_all(&fin).map_err(io_err(&fin))?;
    }
    std::fs::rename(&tmp, &fin).map_err(io_err(&fin))?;
    fsync(&dir)?;
    let all = list(&s.config.output_dir)?;
    let keep = s.config.keep_checkpoints.max(1);
    for (_, p) in all.iter().take(all.len().saturating_sub(keep)) {
        std::fs::remove_dir_all(p).map_err(io_err(p))?;
    }
    Ok(fin)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    serde_json::from_str(&text).map_err(|e| MdpoError::Data { path: path.into(), location: what.into(), message: e.to_string() })
}

/// The state of a checkpoint.
pub fn read_state(dir: &Path) -> Result<TrainState> {
    read_json(&dir.join("state.json"), "state")
}

/// The config a checkpoint was trained with, as JSON.
pub fn read_config(dir: &Path) -> Result<Value> {
    read_json(&dir.join("config.json"), "config")
}

/// Copies the tensor `key` of the safetensors file `path` (read into `map`) into `dst`; a missing
/// key (`missing` says what it is) or another shape is a [`MdpoError::Data`] naming both.
pub(crate) fn restore(path: &Path, map: &HashMap<String, Tensor>, key: &str, dst: &mut Tensor, missing: &str) -> Result<()> {
    let src = map.get(key).ok_or_else(|| MdpoError::Data { path: path.into(), location: key.into(), message: missing.into() })?;
    if src.size() != dst.size() {
        return Err(MdpoError::Data {
            path: path.into(),
            location: key.into(),
            message: format!("shape {:?}, expected {:?}", src.size(), dst.size()),
        });
    }
    tch::no_grad(|| dst.copy_(src));
    Ok(())
}

/// Copies a checkpoint's trainable weights into `trainable` (names and shapes must match).
pub(crate) fn load_weights(dir: &Path, trainable: Vec<(String, Tensor)>) -> Result<()> {
    let wpath = dir.join("trainable.safetensors");
    let map: HashMap<String, Tensor> = Tensor::read_safetensors(&wpath)?.into_iter().collect();
    for (name, mut p) in trainable {
        restore(&wpath, &map, &name, &mut p, "trainable variable missing from the checkpoint")?;
    }
    Ok(())
}

/// Settings that may change on resume: where things are written and how often, the reference
/// precomputation, how the levels are chunked (exact gradients) and the micro-batch split (the
/// global batch `batch_size × grad_accum` is compared instead).
const FREE: &[&str] = &[
    "output_dir",
    "resume",
    "override_config",
    "save_every",
    "keep_checkpoints",
    "plots",
    "ref_cache",
    "ref_batch_size",
    "precompute_reference",
    "level_chunk",
    "max_skipped_steps",
    "batch_size",
    "grad_accum",
    "world_size",
];

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, x, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

fn global_batch(v: &Value) -> Option<u64> {
    let world = v.get("world_size").and_then(Value::as_u64).unwrap_or(1).max(1);
    Some(v.get("batch_size")?.as_u64()? * v.get("grad_accum")?.as_u64()? * world)
}

/// The training settings of `current` that differ from the checkpoint's `saved` config: every
/// field of [`MdpoConfig`] except those that do not change the optimisation (paths, checkpoint
/// cadence, plots, reference precomputation, level chunking, the micro-batch split), plus the
/// global batch. Settings present in only one of them (added or retired fields) are not compared.
pub fn config_changes(saved: &Value, current: &MdpoConfig) -> Result<Vec<ConfigChange>> {
    let now = serde_json::to_value(current)
        .map_err(|source| MdpoError::Json { path: current.output_dir.join("config.json"), source })?;
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    flatten("", saved, &mut a);
    flatten("", &now, &mut b);
    let free = |k: &str| FREE.iter().any(|f| k == *f || k.starts_with(&format!("{f}.")));
    let mut out: Vec<ConfigChange> = a
        .iter()
        .filter(|(k, _)| !free(k))
        .filter_map(|(k, s)| {
            let c = b.get(k)?;
            (s != c).then(|| ConfigChange { field: k.clone(), saved: s.clone(), current: c.clone() })
        })
        .collect();
    if let (Some(s), Some(c)) = (global_batch(saved), global_batch(&now)) {
        if s != c {
            out.push(ConfigChange {
                field: "global batch (batch_size × grad_accum × world_size)".into(),
                saved: s.to_string(),
                current: c.to_string(),
            });
        }
    }
    Ok(out)
}

/// The resume checks: the checkpoint in `dir` must come from the same data (`data`, its
/// fingerprint) and seed, and from the same training settings unless `cfg.override_config`.
/// Returns its state and the overridden changes.
pub fn check_resume(dir: &Path, data: &str, cfg: &MdpoConfig) -> Result<(TrainState, Vec<ConfigChange>)> {
    let state = read_state(dir)?;
    if state.data != data {
        return Err(MdpoError::Config(format!(
            "{}: checkpoint was trained on other data (fingerprint {} ≠ {data})",
            dir.display(),
            state.data
        )));
    }
    if state.seed != cfg.seed {
        return Err(MdpoError::Config(format!(
            "{}: checkpoint used seed {}, the config says {}",
            dir.display(),
            state.seed,
            cfg.seed
        )));
    }
    let changes = config_changes(&read_config(dir)?, cfg)?;
    match changes.first() {
        Some(c) if !cfg.override_config => Err(MdpoError::ConfigChanged {
            checkpoint: dir.to_path_buf(),
            field: c.field.clone(),
            saved: c.saved.clone(),
            current: c.current.clone(),
        }),
        _ => Ok((state, changes)),
    }
}
