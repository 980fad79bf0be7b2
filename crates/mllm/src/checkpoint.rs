//! Safetensors loading with strict checks: single-file or sharded (`model.safetensors.index.json`)
//! checkpoints in every LLaVA key spelling are mapped onto the canonical (llava-hf Hub) names of
//! the model's VarStore; a missing tensor, an unexpected tensor or a shape mismatch is an error
//! naming the key and the file.
use crate::error::{MllmError, Result};
use safetensors::{Dtype, SafeTensors};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use tch::{nn, Kind, Tensor};

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

fn kind_of(d: Dtype) -> Option<Kind> {
    Some(match d {
        Dtype::F32 => Kind::Float,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F64 => Kind::Double,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::U8 => Kind::Uint8,
        Dtype::BOOL => Kind::Bool,
        _ => return None,
    })
}

/// Which keys of a file to consider.
pub type KeyFilter<'a> = &'a dyn Fn(&str) -> bool;

/// Strictly load checkpoint files into `vs`. Each source is `(file, filter)`: keys the filter
/// rejects are skipped (e.g. the text tower of a full CLIP checkpoint). Every other key must map
/// (via [`canonical_key`]) to exactly one variable of the same shape; every variable must be
/// loaded. Values are converted to the variable's dtype and device.
pub fn load_strict(vs: &nn::VarStore, dir: &Path, sources: &[(PathBuf, KeyFilter)]) -> Result<()> {
    let vars = vs.variables();
    let mut loaded: HashSet<String> = HashSet::new();
    for (file, filter) in sources {
        let bytes = std::fs::read(file).map_err(|source| MllmError::Io { path: file.clone(), source })?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| MllmError::Config {
            path: file.clone(),
            message: format!("not a valid safetensors file: {e}"),
        })?;
        let mut names = st.names();
        names.sort();
        for key in names {
            if !filter(key) {
                continue;
            }
            let Some(canon) = canonical_key(key) else { continue };
            let unexpected = || MllmError::UnexpectedTensor { path: file.clone(), key: key.to_string() };
            let var = vars.get(&canon).ok_or_else(unexpected)?;
            if !loaded.insert(canon.clone()) {
                return Err(unexpected());
            }
            let view = st.tensor(key).map_err(|e| MllmError::Config { path: file.clone(), message: format!("`{key}`: {e}") })?;
            let shape: Vec<i64> = view.shape().iter().map(|&s| s as i64).collect();
            if shape != var.size() {
                return Err(MllmError::ShapeMismatch { path: file.clone(), key: key.to_string(), expected: var.size(), actual: shape });
            }
            let kind = kind_of(view.dtype()).ok_or_else(|| MllmError::Config {
                path: file.clone(),
                message: format!("`{key}`: unsupported dtype {:?}", view.dtype()),
            })?;
            let t = Tensor::f_from_data_size(view.data(), &shape, kind)?;
            tch::no_grad(|| var.shallow_clone().f_copy_(&t))?;
        }
    }
    let mut missing: Vec<&String> = vars.keys().filter(|k| !loaded.contains(*k)).collect();
    missing.sort();
    if let Some(k) = missing.first() {
        return Err(MllmError::MissingTensor { path: dir.into(), key: (*k).clone() });
    }
    Ok(())
}

/// Read every tensor of a safetensors file (name → tensor, on the CPU, in the stored dtype).
pub fn read_all(file: &Path) -> Result<HashMap<String, Tensor>> {
    let v = Tensor::read_safetensors(file).map_err(|e| MllmError::Config { path: file.into(), message: e.to_string() })?;
    Ok(v.into_iter().collect())
}
