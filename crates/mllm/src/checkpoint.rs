//! The one weight loader of `mllm`: memory-mapped safetensors checkpoints (a single file, a
//! sharded `model.safetensors.index.json`, or several sources such as a LLaVA checkpoint plus a
//! separate CLIP directory) read strictly into a model's [`nn::VarStore`].
//!
//! * Every file is mapped (`memmap2`), its header parsed by [`SafeTensors::read_metadata`]; no file
//!   is read whole. Each tensor is created directly in the requested kind on the requested device
//!   from the mapped bytes (one allocation per tensor; a dtype conversion happens on the fly, one
//!   tensor at a time), so loading a model costs its own bytes in anonymous memory, nothing more.
//! * Keys are renamed to the model's names by a caller-given function (for LLaVA,
//!   [`canonical_key`], which accepts every LLaVA spelling), so a checkpoint layout never reaches
//!   the model code.
//! * Strict: a missing tensor, an unexpected tensor, a duplicate and a shape mismatch are errors
//!   naming the key and the file ([`crate::MllmError`]). Models are built through a
//!   [`VarBuilder`], whose [`Weights::finish`] reports them after construction.
//! * [`Checkpoint::fingerprint`] keys the frozen base for the reference-log-prob cache by the
//!   files (header hashes plus a sampled digest of each tensor's bytes) instead of hashing a copy
//!   of every weight.
use crate::error::{MllmError, Result};
use safetensors::tensor::Metadata;
use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use tch::{nn, Device, Kind, Tensor};

/// The safetensors files of a checkpoint directory: the shards listed by
/// `model.safetensors.index.json`, else `model.safetensors`, else every `*.safetensors` file.
pub fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let s = std::fs::read_to_string(&index).map_err(|source| MllmError::Io { path: index.clone(), source })?;
        let v: serde_json::Value = serde_json::from_str(&s).map_err(|source| MllmError::Json { path: index.clone(), source })?;
        let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| MllmError::Config {
            path: index.clone(),
            message: "missing `weight_map`".into(),
        })?;
        let mut files: Vec<String> = map.values().filter_map(|f| f.as_str().map(String::from)).collect();
        files.sort();
        files.dedup();
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let rd = std::fs::read_dir(dir).map_err(|source| MllmError::Io { path: dir.into(), source })?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(MllmError::Config { path: dir.into(), message: "no safetensors checkpoint in this directory".into() });
    }
    Ok(files)
}

/// Map a checkpoint key in any supported spelling to the canonical llava-hf Hub name
/// (`language_model.model.*`, `language_model.lm_head.*`, `vision_tower.vision_model.*`,
/// `multi_modal_projector.linear_{i}.*`). `None` for buffers that are not parameters.
///
/// Spellings: llava-hf Hub; transformers ≥ 5 `save_pretrained` (`vision_tower.<no vision_model>`,
/// `model.language_model.*`, `model.vision_tower.*`, `model.multi_modal_projector.*`, `lm_head.*`);
/// original LLaVA-1.5 (`model.layers.*`, `model.embed_tokens`, `model.norm`, `lm_head`,
/// `model.mm_projector.{0,2,..}`, `model.vision_tower.vision_tower.vision_model.*`); and a CLIP
/// checkpoint (`vision_model.*`).
pub fn canonical_key(k: &str) -> Option<String> {
    if k.ends_with(".position_ids") || k.ends_with("rotary_emb.inv_freq") {
        return None;
    }
    fn vision(r: &str) -> String {
        format!("vision_tower.vision_model.{}", r.strip_prefix("vision_model.").unwrap_or(r))
    }
    let out = if let Some(r) = k.strip_prefix("model.vision_tower.vision_tower.") {
        vision(r)
    } else if let Some(r) = k.strip_prefix("model.mm_projector.") {
        match r.split_once('.') {
            Some((i, rest)) if i.parse::<usize>().is_ok() => {
                let i: usize = i.parse().expect("checked");
                if i % 2 == 1 {
                    return Some(format!("multi_modal_projector.<activation {i}>.{rest}"));
                }
                format!("multi_modal_projector.linear_{}.{rest}", i / 2 + 1)
            }
            _ => format!("multi_modal_projector.linear_1.{r}"),
        }
    } else if let Some(r) = k.strip_prefix("model.language_model.") {
        format!("language_model.model.{r}")
    } else if let Some(r) = k.strip_prefix("model.vision_tower.") {
        vision(r)
    } else if let Some(r) = k.strip_prefix("model.multi_modal_projector.") {
        format!("multi_modal_projector.{r}")
    } else if let Some(r) = k.strip_prefix("lm_head.") {
        format!("language_model.lm_head.{r}")
    } else if let Some(r) = k.strip_prefix("vision_tower.") {
        vision(r)
    } else if let Some(r) = k.strip_prefix("vision_model.") {
        vision(&format!("vision_model.{r}"))
    } else if let Some(r) = k.strip_prefix("model.") {
        format!("language_model.model.{r}")
    } else {
        k.to_string()
    };
    Some(out)
}

/// The tch kind of a safetensors dtype (`None` for dtypes libtorch cannot hold).
pub fn kind_of(d: Dtype) -> Option<Kind> {
    Some(match d {
        Dtype::F32 => Kind::Float,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F64 => Kind::Double,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::I16 => Kind::Int16,
        Dtype::I8 => Kind::Int8,
        Dtype::U8 => Kind::Uint8,
        Dtype::BOOL => Kind::Bool,
        _ => return None,
    })
}

fn is_float(k: Kind) -> bool {
    matches!(k, Kind::Half | Kind::Float | Kind::Double | Kind::BFloat16)
}

/// Which keys of a file to consider.
pub type KeyFilter<'a> = &'a dyn Fn(&str) -> bool;

/// One memory-mapped safetensors file.
struct MappedFile {
    path: PathBuf,
    map: memmap2::Mmap,
    /// Offset of the data section (8 + header length).
    data_start: usize,
    meta: Metadata,
}

impl MappedFile {
    fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|source| MllmError::Io { path: path.into(), source })?;
        // SAFETY: the mapping is read-only and private; like every mmap-based safetensors reader
        // (the Python `safetensors` package, candle) this assumes no other process truncates or
        // rewrites the checkpoint while it is being loaded.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| MllmError::Io { path: path.into(), source })?;
        let (n, meta) = SafeTensors::read_metadata(&map).map_err(|e| MllmError::Config {
            path: path.into(),
            message: format!("not a valid safetensors file: {e}"),
        })?;
        Ok(Self { path: path.into(), map, data_start: 8 + n, meta })
    }

    fn bytes(&self, range: (usize, usize)) -> &[u8] {
        &self.map[self.data_start + range.0..self.data_start + range.1]
    }
}

/// Where a model variable lives in the checkpoint.
#[derive(Debug, Clone)]
struct Entry {
    file: usize,
    key: String,
    dtype: Dtype,
    shape: Vec<i64>,
    range: (usize, usize),
}

/// A set of memory-mapped safetensors files indexed by model variable name.
pub struct Checkpoint {
    files: Vec<MappedFile>,
    entries: BTreeMap<String, Entry>,
    /// Keys that map to a name another key already took (reported as unexpected).
    duplicates: Vec<(PathBuf, String)>,
    origin: PathBuf,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint").field("origin", &self.origin).field("tensors", &self.entries.len()).finish()
    }
}

impl Checkpoint {
    /// An empty checkpoint; `origin` is the path missing-tensor errors name (the checkpoint
    /// directory, or its single file).
    pub fn new(origin: &Path) -> Self {
        Self { files: Vec::new(), entries: BTreeMap::new(), duplicates: Vec::new(), origin: origin.into() }
    }

    /// Map `files` and index the keys `filter` accepts under `rename(key)` (`None`: a buffer the
    /// model does not hold, skipped).
    pub fn add_files(&mut self, files: &[PathBuf], filter: KeyFilter, rename: &dyn Fn(&str) -> Option<String>) -> Result<()> {
        for path in files {
            let f = MappedFile::open(path)?;
            let idx = self.files.len();
            let mut keys: Vec<(String, &safetensors::tensor::TensorInfo)> = f.meta.tensors().into_iter().collect();
            keys.sort_by(|a, b| a.0.cmp(&b.0));
            for (key, info) in keys {
                if !filter(&key) {
                    continue;
                }
                let Some(name) = rename(&key) else { continue };
                if self.entries.contains_key(&name) {
                    self.duplicates.push((path.clone(), key));
                    continue;
                }
                let shape = info.shape.iter().map(|&s| s as i64).collect();
                self.entries.insert(name, Entry { file: idx, key, dtype: info.dtype, shape, range: info.data_offsets });
            }
            self.files.push(f);
        }
        Ok(())
    }

    /// Open a single file (or one set of files), keys renamed by `rename`.
    pub fn open(origin: &Path, files: &[PathBuf], rename: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        let mut c = Self::new(origin);
        c.add_files(files, &|_| true, rename)?;
        Ok(c)
    }

    /// Whether the checkpoint holds the variable `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Whether any indexed key (as spelled in the file) satisfies `f`.
    pub fn any_key(&self, f: impl Fn(&str) -> bool) -> bool {
        self.entries.values().any(|e| f(&e.key))
    }

    /// The mapped files, in the order they were added.
    pub fn paths(&self) -> Vec<&Path> {
        self.files.iter().map(|f| f.path.as_path()).collect()
    }

    /// Total bytes of the indexed tensors as stored.
    pub fn stored_bytes(&self) -> usize {
        self.entries.values().map(|e| e.range.1 - e.range.0).sum()
    }

    /// The variable `name` as a new tensor of `kind` (floating-point tensors; others keep their
    /// kind) on `device`, checked against `shape`. `Ok(None)` when the checkpoint lacks it.
    pub fn tensor(&self, name: &str, shape: &[i64], kind: Kind, device: Device) -> Result<Option<Tensor>> {
        let Some(e) = self.entries.get(name) else { return Ok(None) };
        let file = &self.files[e.file];
        if e.shape != shape {
            return Err(MllmError::ShapeMismatch { path: file.path.clone(), key: e.key.clone(), expected: shape.to_vec(), actual: e.shape.clone() });
        }
        let src = kind_of(e.dtype).ok_or_else(|| MllmError::Config {
            path: file.path.clone(),
            message: format!("`{}`: unsupported dtype {:?}", e.key, e.dtype),
        })?;
        let kind = if is_float(src) && is_float(kind) { kind } else { src };
        Ok(Some(tensor_from_bytes(file.bytes(e.range), &e.shape, src, kind, device)?))
    }

    /// A content fingerprint of the indexed tensors, for the reference-log-prob cache key
    /// (`mdpo`'s `PreferenceModel::weights_fingerprint`): SHA-256 over each file's size and
    /// header, and over every tensor's name, dtype, shape and a sample of its bytes: the whole
    /// tensor up to [`FINGERPRINT_WHOLE`] bytes, else [`FINGERPRINT_WINDOWS`] evenly spaced
    /// windows of [`FINGERPRINT_WINDOW`] bytes (first and last included). A 7B checkpoint costs
    /// about 50 MB of reads instead of hashing 14 GB; any change of a small tensor, of a shape or
    /// dtype, or of a large tensor beyond a few isolated values (e.g. any fine-tune) changes it.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"mllm-checkpoint-v1");
        for f in &self.files {
            h.update((f.map.len() as u64).to_le_bytes());
            h.update(&f.map[..f.data_start]);
        }
        for (name, e) in &self.entries {
            h.update((name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            h.update(format!("{:?}{:?}", e.dtype, e.shape).as_bytes());
            let bytes = self.files[e.file].bytes(e.range);
            if bytes.len() <= FINGERPRINT_WHOLE {
                h.update(bytes);
            } else {
                let last = bytes.len() - FINGERPRINT_WINDOW;
                for i in 0..FINGERPRINT_WINDOWS {
                    let at = last * i / (FINGERPRINT_WINDOWS - 1);
                    h.update(&bytes[at..at + FINGERPRINT_WINDOW]);
                }
            }
        }
        hex::encode(h.finalize())
    }
}

/// Tensors up to this many bytes are hashed whole by [`Checkpoint::fingerprint`].
pub const FINGERPRINT_WHOLE: usize = 64 * 1024;
/// Windows sampled from a larger tensor by [`Checkpoint::fingerprint`].
pub const FINGERPRINT_WINDOWS: usize = 16;
/// Bytes per sampled window.
pub const FINGERPRINT_WINDOW: usize = 4096;

/// A new tensor of `kind` on `device` from the raw bytes of a `src`-kind tensor of `shape`: one
/// allocation (the result); the bytes are read in place when aligned for `src`.
fn tensor_from_bytes(bytes: &[u8], shape: &[i64], src: Kind, kind: Kind, device: Device) -> Result<Tensor> {
    let numel: i64 = shape.iter().product();
    if numel == 0 {
        return Ok(Tensor::f_zeros(shape, (kind, device))?);
    }
    if bytes.as_ptr() as usize % src.elt_size_in_bytes() == 0 {
        let mut strides = vec![1i64; shape.len()];
        for i in (0..shape.len().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * shape[i + 1];
        }
        // SAFETY: `bytes` holds exactly `numel` aligned elements of `src` (safetensors validated
        // the offsets against dtype and shape) and outlives the view, which is consumed by the
        // copy below (`copy = true`: the result never aliases the mapping).
        let view = unsafe { Tensor::f_from_blob(bytes.as_ptr(), shape, &strides, src, Device::Cpu)? };
        Ok(view.f_to_device_(device, kind, false, true)?)
    } else {
        // Unaligned data (legal in safetensors, rare in practice): one aligned host copy first.
        let t = Tensor::f_from_data_size(bytes, shape, src)?;
        Ok(t.f_to_device_(device, kind, false, false)?)
    }
}

/// Where a model's variables come from: a [`Checkpoint`], or seeded random initialisation
/// (tests, benches, models trained from scratch). Collects the checkpoint errors met while a
/// model is built; [`Self::finish`] reports them.
pub struct Weights {
    ckpt: Option<Checkpoint>,
    kind: Kind,
    used: RefCell<HashSet<String>>,
    /// Errors found on the file side (shape, dtype), in the order met.
    errors: RefCell<Vec<MllmError>>,
    missing: RefCell<Vec<String>>,
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weights").field("ckpt", &self.ckpt).field("kind", &self.kind).finish()
    }
}

impl Weights {
    /// Variables from `ckpt`, floating-point tensors created in `kind`.
    pub fn checkpoint(ckpt: Checkpoint, kind: Kind) -> Self {
        Self { ckpt: Some(ckpt), kind, used: Default::default(), errors: Default::default(), missing: Default::default() }
    }

    /// Variables from each constructor's random initialiser (in the VarStore's kind).
    pub fn random() -> Self {
        Self { ckpt: None, kind: Kind::Float, used: Default::default(), errors: Default::default(), missing: Default::default() }
    }

    /// The checkpoint, when loading one.
    pub fn source(&self) -> Option<&Checkpoint> {
        self.ckpt.as_ref()
    }

    /// The first error of the build, strictest first: a shape or dtype error of a file, an
    /// unexpected or duplicate key (sorted), then a missing variable (sorted).
    pub fn finish(self) -> Result<Option<Checkpoint>> {
        if let Some(e) = self.errors.into_inner().into_iter().next() {
            return Err(e);
        }
        let Some(ckpt) = self.ckpt else { return Ok(None) };
        let used = self.used.into_inner();
        let mut unexpected: Vec<(PathBuf, String)> = ckpt
            .entries
            .iter()
            .filter(|(name, _)| !used.contains(*name))
            .map(|(_, e)| (ckpt.files[e.file].path.clone(), e.key.clone()))
            .chain(ckpt.duplicates.iter().cloned())
            .collect();
        unexpected.sort();
        if let Some((path, key)) = unexpected.into_iter().next() {
            return Err(MllmError::UnexpectedTensor { path, key });
        }
        let mut missing = self.missing.into_inner();
        missing.sort();
        if let Some(key) = missing.into_iter().next() {
            return Err(MllmError::MissingTensor { path: ckpt.origin.clone(), key });
        }
        Ok(Some(ckpt))
    }

    fn get(&self, name: &str, shape: &[i64], device: Device) -> Option<Tensor> {
        let ckpt = self.ckpt.as_ref()?;
        self.used.borrow_mut().insert(name.to_string());
        match ckpt.tensor(name, shape, self.kind, device) {
            Ok(Some(t)) => Some(t),
            Ok(None) => {
                self.missing.borrow_mut().push(name.to_string());
                None
            }
            Err(e) => {
                self.errors.borrow_mut().push(e);
                None
            }
        }
    }
}

/// A path in a model's [`nn::VarStore`] bound to the [`Weights`] its variables come from, in the
/// spirit of candle's `VarBuilder`: constructors ask it for each variable by name and shape.
#[derive(Clone)]
pub struct VarBuilder<'a> {
    path: nn::Path<'a>,
    weights: &'a Weights,
}

impl<'a> VarBuilder<'a> {
    /// The root of `vs`, filled from `weights`.
    pub fn new(vs: &'a nn::VarStore, weights: &'a Weights) -> Self {
        Self { path: vs.root(), weights }
    }

    /// The full variable name of `name` under this path.
    pub fn path(&self, name: &str) -> String {
        self.path.path(name)
    }

    /// The VarStore's device.
    pub fn device(&self) -> Device {
        self.path.device()
    }

    /// Whether the variable `name` (dots allowed) can be read (always `false` with random weights).
    pub fn contains(&self, name: &str) -> bool {
        let base: Vec<&str> = self.path.components().collect();
        let full = if base.is_empty() { name.to_string() } else { format!("{}.{name}", base.join(".")) };
        self.weights.ckpt.as_ref().is_some_and(|c| c.contains(&full))
    }

    /// The variable `name` of `shape`: read from the checkpoint (registered trainable, to be
    /// frozen by the caller), or created with `init` when the weights are random. A missing or
    /// mis-shaped tensor is recorded for [`Weights::finish`] and an empty placeholder returned.
    pub fn var(&self, name: &str, shape: &[i64], init: nn::Init) -> Tensor {
        if self.weights.ckpt.is_none() {
            return self.path.var(name, shape, init);
        }
        let t = self
            .weights
            .get(&self.path(name), shape, self.device())
            .unwrap_or_else(|| Tensor::empty([0], (self.weights.kind, self.device())));
        self.path.add(name, t, true)
    }
}

impl<'a, T: std::string::ToString> std::ops::Div<T> for &VarBuilder<'a> {
    type Output = VarBuilder<'a>;
    fn div(self, rhs: T) -> VarBuilder<'a> {
        VarBuilder { path: &self.path / rhs, weights: self.weights }
    }
}

impl<'a, T: std::string::ToString> std::ops::Div<T> for VarBuilder<'a> {
    type Output = VarBuilder<'a>;
    fn div(self, rhs: T) -> VarBuilder<'a> {
        &self / rhs
    }
}

/// Read every tensor of a small safetensors file (name → tensor, on the CPU, in the stored dtype),
/// e.g. a LoRA adapter.
pub fn read_all(file: &Path) -> Result<std::collections::HashMap<String, Tensor>> {
    let f = MappedFile::open(file)?;
    let mut out = std::collections::HashMap::new();
    for (key, info) in f.meta.tensors() {
        let src = kind_of(info.dtype).ok_or_else(|| MllmError::Config {
            path: file.into(),
            message: format!("`{key}`: unsupported dtype {:?}", info.dtype),
        })?;
        let shape: Vec<i64> = info.shape.iter().map(|&s| s as i64).collect();
        out.insert(key.clone(), tensor_from_bytes(f.bytes(info.data_offsets), &shape, src, src, Device::Cpu)?);
    }
    Ok(out)
}
