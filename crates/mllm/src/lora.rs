//! LoRA adapters for [`Llava`]: injection on named linear layers, the adapter VarStore (what the
//! optimizer trains; the base stays frozen), the on/off switch (adapters off = MDPO's reference
//! model, AMP §4), PEFT-compatible save/load and merging.
//!
//! On disk an adapter is a PEFT directory: `adapter_model.safetensors` with keys
//! `base_model.model.<module>.lora_{A,B}.weight` and `adapter_config.json`. `<module>` is the
//! module path of transformers ≥ 5's `LlavaForConditionalGeneration`
//! (`model.language_model.layers.0.self_attn.q_proj`, `lm_head`, `model.vision_tower.…`,
//! `model.multi_modal_projector.…`); loading also accepts the transformers 4 and original-LLaVA
//! spellings.
use crate::checkpoint::canonical_key;
use crate::error::{MllmError, Result};
use crate::linear::{AdapterSwitch, LoraLayer};
use crate::llava::Llava;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{nn, Kind, Tensor};

/// LoRA hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Rank r.
    pub r: i64,
    /// Scale numerator: the update is `alpha / r · B A`.
    pub alpha: f64,
    /// Dropout on the adapter input (training only).
    pub dropout: f64,
    /// Module-name suffixes to adapt (PEFT semantics: `name == t` or `name` ends with `.t`),
    /// e.g. `["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]`.
    pub target_modules: Vec<String>,
    /// Only adapt layers of the language model (LLaVA's LoRA recipe leaves the vision tower,
    /// projector and `lm_head` alone).
    pub language_model_only: bool,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            r: 8,
            alpha: 16.,
            dropout: 0.05,
            target_modules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
                .map(String::from)
                .to_vec(),
            language_model_only: true,
        }
    }
}

/// The adapters of a model.
pub struct Adapters {
    pub(crate) vs: nn::VarStore,
    pub(crate) switch: AdapterSwitch,
    pub(crate) cfg: LoraConfig,
}

/// Canonical module name → transformers-5 module path.
pub fn python_module_name(canonical: &str) -> String {
    if let Some(r) = canonical.strip_prefix("language_model.model.") {
        format!("model.language_model.{r}")
    } else if let Some(r) = canonical.strip_prefix("language_model.") {
        r.to_string()
    } else if let Some(r) = canonical.strip_prefix("vision_tower.vision_model.") {
        format!("model.vision_tower.{r}")
    } else {
        format!("model.{canonical}")
    }
}

fn peft_key(canonical_module: &str, ab: &str) -> String {
    format!("base_model.model.{}.lora_{ab}.weight", python_module_name(canonical_module))
}

fn var_at(vs: &nn::VarStore, key: &str, t: Tensor) -> Tensor {
    let parts: Vec<&str> = key.split('.').collect();
    let (last, dirs) = parts.split_last().expect("non-empty key");
    let mut p = vs.root();
    for d in dirs {
        p = p / *d;
    }
    p.var_copy(last, &t)
}

fn matches(cfg: &LoraConfig, name: &str) -> bool {
    if cfg.language_model_only && !name.starts_with("language_model.model.") {
        return false;
    }
    cfg.target_modules.iter().any(|t| name == t || name.ends_with(&format!(".{t}")))
}

/// A stable 64-bit key of a module name (FNV-1a), so each adapter's initial values depend only
/// on the run's seed and the module, not on which other modules are adapted.
fn name_key(name: &str) -> u64 {
    amp_io::rng::fnv1a(amp_io::rng::FNV_OFFSET, name.as_bytes())
}

/// PEFT's `lora_A` initialisation (Kaiming-uniform with `a = sqrt(5)`, i.e. `U(-1/sqrt(in),
/// 1/sqrt(in))`) drawn from the workspace PRNG keyed by `(seed, module)`, on the CPU in f64 and
/// stored as f32: the same bytes on every machine and thread count.
fn lora_a_init(seed: u64, module: &str, r: i64, fan_in: i64) -> Tensor {
    let bound = 1. / (fan_in as f64).sqrt();
    let mut rng = amp_io::Rng::keyed(&[seed, name_key(module), 0x10_4A]);
    let v: Vec<f32> = (0..r * fan_in).map(|_| ((rng.unit() * 2. - 1.) * bound) as f32).collect();
    Tensor::from_slice(&v).view([r, fan_in])
}

impl Llava {
    /// Attach fresh LoRA adapters (A: PEFT's Kaiming-uniform, bound `1/sqrt(in)`, drawn from the
    /// workspace PRNG seeded by `seed` and the module name, so `seed` alone fixes the initial
    /// adapter bytes; B: zeros, so the model starts equal to the base) to every matching linear
    /// layer. The adapter masters are f32 on the model's device whatever the model's dtype; the
    /// forward uses them in the activation dtype ([`crate::linear::Linear::forward_t`]).
    pub fn add_lora(&mut self, cfg: &LoraConfig, seed: u64) -> Result<()> {
        if cfg.r <= 0 {
            return Err(MllmError::Input(format!("LoRA rank must be positive, got {}", cfg.r)));
        }
        let device = self.device();
        let vs = nn::VarStore::new(device);
        let switch = AdapterSwitch::default();
        let scaling = cfg.alpha / cfg.r as f64;
        let mut n = 0;
        for l in self.linears_mut() {
            if !matches(cfg, l.name()) {
                continue;
            }
            let (i, o) = l.dims();
            let a = lora_a_init(seed, l.name(), cfg.r, i).to_device(device);
            let b = Tensor::zeros([o, cfg.r], (Kind::Float, device));
            let a = var_at(&vs, &peft_key(l.name(), "A"), a);
            let b = var_at(&vs, &peft_key(l.name(), "B"), b);
            l.set_lora(LoraLayer { a, b, scaling, dropout: cfg.dropout, switch: switch.clone() });
            n += 1;
        }
        if n == 0 {
            return Err(MllmError::Input(format!("no linear layer matches LoRA target_modules {:?}", cfg.target_modules)));
        }
        self.adapters = Some(Adapters { vs, switch, cfg: cfg.clone() });
        Ok(())
    }

    /// The adapter VarStore (what an optimizer should train), if adapters are attached.
    pub fn lora_var_store(&self) -> Option<&nn::VarStore> {
        self.adapters.as_ref().map(|a| &a.vs)
    }

    /// The LoRA configuration, if adapters are attached.
    pub fn lora_config(&self) -> Option<&LoraConfig> {
        self.adapters.as_ref().map(|a| &a.cfg)
    }

    /// Switch every adapter on or off (off = the frozen base, MDPO's reference model).
    pub fn set_adapters_enabled(&self, enabled: bool) -> Result<()> {
        match &self.adapters {
            Some(a) => {
                a.switch.set(enabled);
                Ok(())
            }
            None => Err(MllmError::Input("the model has no LoRA adapters".into())),
        }
    }

    /// Whether adapters are attached and enabled.
    pub fn adapters_enabled(&self) -> bool {
        self.adapters.as_ref().is_some_and(|a| a.switch.enabled())
    }

    /// Save the adapters as a PEFT directory (`adapter_model.safetensors`, `adapter_config.json`).
    pub fn save_lora(&self, dir: &Path) -> Result<()> {
        let a = self.adapters.as_ref().ok_or_else(|| MllmError::Input("the model has no LoRA adapters".into()))?;
        std::fs::create_dir_all(dir).map_err(|source| MllmError::Io { path: dir.into(), source })?;
        let file = dir.join("adapter_model.safetensors");
        let vars: BTreeMap<String, Tensor> = a.vs.variables().into_iter().collect();
        let named: Vec<(String, Tensor)> = vars.into_iter().map(|(k, v)| (k, v.to_device(tch::Device::Cpu).contiguous())).collect();
        Tensor::write_safetensors(&named, &file).map_err(|e| MllmError::Config { path: file.clone(), message: e.to_string() })?;
        let mut modules: Vec<String> = named
            .iter()
            .filter_map(|(k, _)| k.strip_prefix("base_model.model.").and_then(|k| k.strip_suffix(".lora_A.weight")).map(String::from))
            .collect();
        modules.sort();
        let cfg = serde_json::json!({
            "peft_type": "LORA",
            "task_type": null,
            "base_model_name_or_path": null,
            "r": a.cfg.r,
            "lora_alpha": a.cfg.alpha,
            "lora_dropout": a.cfg.dropout,
            "target_modules": modules,
            "bias": "none",
            "fan_in_fan_out": false,
            "inference_mode": true,
            "init_lora_weights": true,
            "modules_to_save": null,
            "use_rslora": false,
            "use_dora": false
        });
        let path = dir.join("adapter_config.json");
        std::fs::write(&path, serde_json::to_string_pretty(&cfg).expect("json"))
            .map_err(|source| MllmError::Io { path: path.clone(), source })
    }

    /// Load a PEFT LoRA directory (replacing any attached adapters). Every adapter tensor must
    /// name a linear layer of this model with matching shapes.
    pub fn load_lora(&mut self, dir: &Path) -> Result<()> {
        let cpath = dir.join("adapter_config.json");
        let s = std::fs::read_to_string(&cpath).map_err(|source| MllmError::Io { path: cpath.clone(), source })?;
        let v: serde_json::Value = serde_json::from_str(&s).map_err(|source| MllmError::Json { path: cpath.clone(), source })?;
        let cerr = |m: &str| MllmError::Config { path: cpath.clone(), message: m.into() };
        let r = v.get("r").and_then(|x| x.as_i64()).ok_or_else(|| cerr("missing integer `r`"))?;
        let alpha = v.get("lora_alpha").and_then(|x| x.as_f64()).ok_or_else(|| cerr("missing `lora_alpha`"))?;
        let dropout = v.get("lora_dropout").and_then(|x| x.as_f64()).unwrap_or(0.);
        for (k, bad) in [("use_rslora", "rsLoRA"), ("use_dora", "DoRA")] {
            if v.get(k).and_then(|x| x.as_bool()).unwrap_or(false) {
                return Err(cerr(&format!("{bad} adapters are not supported")));
            }
        }
        let file = dir.join("adapter_model.safetensors");
        let tensors = crate::checkpoint::read_all(&file)?;
        let mut by_module: BTreeMap<String, (Option<Tensor>, Option<Tensor>)> = BTreeMap::new();
        for (k, t) in tensors {
            let unexpected = || MllmError::UnexpectedTensor { path: file.clone(), key: k.clone() };
            let body = k.strip_prefix("base_model.model.").ok_or_else(unexpected)?;
            let (module, ab) = if let Some(m) = body.strip_suffix(".lora_A.weight") {
                (m, 0)
            } else if let Some(m) = body.strip_suffix(".lora_B.weight") {
                (m, 1)
            } else {
                return Err(unexpected());
            };
            let canon = canonical_key(&format!("{module}.weight")).ok_or_else(unexpected)?;
            let canon = canon.strip_suffix(".weight").expect("suffix").to_string();
            let e = by_module.entry(canon).or_default();
            if ab == 0 { e.0 = Some(t) } else { e.1 = Some(t) }
        }
        self.adapters = None;
        let device = self.device();
        let vs = nn::VarStore::new(device);
        let switch = AdapterSwitch::default();
        let scaling = alpha / r as f64;
        let mut modules = Vec::new();
        let mut linears: BTreeMap<String, &mut crate::linear::Linear> =
            self.linears_mut().into_iter().map(|l| (l.name().to_string(), l)).collect();
        for (m, (a, b)) in by_module {
            let key_a = peft_key(&m, "A");
            let l = linears.get_mut(&m).ok_or_else(|| MllmError::UnexpectedTensor { path: file.clone(), key: key_a.clone() })?;
            let a = a.ok_or_else(|| MllmError::MissingTensor { path: file.clone(), key: key_a.clone() })?;
            let b = b.ok_or_else(|| MllmError::MissingTensor { path: file.clone(), key: peft_key(&m, "B") })?;
            let (i, o) = l.dims();
            for (t, want, ab) in [(&a, vec![r, i], "A"), (&b, vec![o, r], "B")] {
                if t.size() != want {
                    return Err(MllmError::ShapeMismatch { path: file.clone(), key: peft_key(&m, ab), expected: want, actual: t.size() });
                }
            }
            let a = var_at(&vs, &peft_key(&m, "A"), a.to_kind(Kind::Float).to_device(device));
            let b = var_at(&vs, &peft_key(&m, "B"), b.to_kind(Kind::Float).to_device(device));
            l.set_lora(LoraLayer { a, b, scaling, dropout, switch: switch.clone() });
            modules.push(m.rsplit('.').next().unwrap_or(&m).to_string());
        }
        modules.sort();
        modules.dedup();
        let language_model_only = linears.values().filter(|l| l.lora().is_some()).all(|l| l.name().starts_with("language_model.model."));
        self.adapters = Some(Adapters { vs, switch, cfg: LoraConfig { r, alpha, dropout, target_modules: modules, language_model_only } });
        Ok(())
    }

    /// Fold every adapter into the base weights and drop the adapters.
    pub fn merge_lora(&mut self) {
        for l in self.linears_mut() {
            l.merge_lora();
        }
        self.adapters = None;
        self.base_changed();
    }
}
