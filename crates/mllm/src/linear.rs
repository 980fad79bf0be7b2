//! A linear layer that can carry a LoRA adapter (Hu et al. 2021), as used for MDPO training
//! (AMP §4: LoRA on the LLM, the frozen base serving as the reference model).
//!
//! The base weight lives in the model's (frozen) [`tch::nn::VarStore`] under its Hugging Face key;
//! the adapter matrices `lora_A` (`[r, in]`) and `lora_B` (`[out, r]`) live in a separate adapter
//! VarStore under their PEFT names (see [`crate::lora`]). The output is
//! `x Wᵀ + b + (alpha / r) · dropout(x) Aᵀ Bᵀ`, the adapter term switched off by an
//! [`AdapterSwitch`] shared by all adapters of one model.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use crate::checkpoint::VarBuilder;
use tch::{nn, Tensor};

/// A shared on/off switch for all the LoRA adapters of one model (off ⇒ the frozen base model,
/// MDPO's reference policy).
#[derive(Debug, Clone)]
pub struct AdapterSwitch(Arc<AtomicBool>);

impl Default for AdapterSwitch {
    fn default() -> Self {
        Self(Arc::new(AtomicBool::new(true)))
    }
}

impl AdapterSwitch {
    /// Whether the adapters are active.
    pub fn enabled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    /// Turn all adapters sharing this switch on or off.
    pub fn set(&self, enabled: bool) {
        self.0.store(enabled, Ordering::Relaxed)
    }
}

/// The adapter part of a LoRA linear layer.
#[derive(Debug)]
pub struct LoraLayer {
    /// `lora_A`, shape `[r, in_features]`.
    pub a: Tensor,
    /// `lora_B`, shape `[out_features, r]`.
    pub b: Tensor,
    /// `alpha / r`.
    pub scaling: f64,
    /// Dropout probability applied to the adapter input in training mode.
    pub dropout: f64,
    /// The model-wide switch.
    pub switch: AdapterSwitch,
}

/// A linear layer `y = x Wᵀ + b`, optionally with a LoRA adapter.
#[derive(Debug)]
pub struct Linear {
    name: String,
    /// Weight, shape `[out_features, in_features]` (the HF/PyTorch layout).
    pub weight: Tensor,
    /// Optional bias, shape `[out_features]`.
    pub bias: Option<Tensor>,
    lora: Option<LoraLayer>,
}

impl Linear {
    /// The variables `<p>.weight` (and `<p>.bias`) of `p`'s VarStore: read from the checkpoint
    /// `p` loads, or randomly initialised (normal, std 0.02) for a random model.
    pub fn new(p: &VarBuilder, in_dim: i64, out_dim: i64, bias: bool) -> Self {
        let weight = p.var("weight", &[out_dim, in_dim], nn::Init::Randn { mean: 0., stdev: 0.02 });
        let bias = bias.then(|| p.var("bias", &[out_dim], nn::Init::Randn { mean: 0., stdev: 0.02 }));
        let name = p.path("weight");
        let name = name.strip_suffix(".weight").unwrap_or(&name).to_string();
        Self { name, weight, bias, lora: None }
    }

    /// The module path: the HF key of the weight without `.weight`
    /// (e.g. `language_model.model.layers.0.self_attn.q_proj`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `(in_features, out_features)`.
    pub fn dims(&self) -> (i64, i64) {
        let s = self.weight.size();
        (s[1], s[0])
    }

    /// The adapter, if any.
    pub fn lora(&self) -> Option<&LoraLayer> {
        self.lora.as_ref()
    }

    /// Attach an adapter (replacing any previous one).
    pub fn set_lora(&mut self, lora: LoraLayer) {
        self.lora = Some(lora);
    }

    /// Detach the adapter and return it.
    pub fn take_lora(&mut self) -> Option<LoraLayer> {
        self.lora.take()
    }

    /// Fold the adapter into the base weight (`W += alpha/r · B A`) and drop it.
    pub fn merge_lora(&mut self) {
        if let Some(l) = self.lora.take() {
            tch::no_grad(|| {
                let delta = l.b.matmul(&l.a).to_kind(self.weight.kind()) * l.scaling;
                let _ = self.weight.f_add_(&delta.to_device(self.weight.device())).expect("merge");
            });
        }
    }

    /// Forward pass; `train` enables the adapter dropout.
    ///
    /// Mixed precision without autocast: the adapter matrices are f32 masters (what the optimizer
    /// and its f32 moments see) and are cast to the activation dtype here, so a bf16 base runs
    /// its LoRA GEMMs in bf16 and autograd carries the gradient back through the cast into the
    /// f32 masters.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let y = xs.linear(&self.weight, self.bias.as_ref());
        match &self.lora {
            Some(l) if l.switch.enabled() => {
                let x = if train && l.dropout > 0. { xs.dropout(l.dropout, true) } else { xs.shallow_clone() };
                let k = xs.kind();
                let (a, b) = if l.a.kind() == k { (l.a.shallow_clone(), l.b.shallow_clone()) } else { (l.a.to_kind(k), l.b.to_kind(k)) };
                y + x.linear::<Tensor>(&a, None).linear::<Tensor>(&b, None) * l.scaling
            }
            _ => y,
        }
    }

    /// Forward pass in evaluation mode.
    pub fn forward(&self, xs: &Tensor) -> Tensor {
        self.forward_t(xs, false)
    }
}
