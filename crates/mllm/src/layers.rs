//! Layers shared by every transformer of the crate besides [`crate::linear::Linear`]: the
//! LayerNorm of CLIP (vision and text towers) and BERT, and the hidden activations of Hugging
//! Face's `ACT2FN` they use.
use crate::checkpoint::VarBuilder;
use crate::error::{MllmError, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{nn, Kind, Tensor};

/// A hidden activation named as in Hugging Face's `ACT2FN` (`hidden_act` of a config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `quick_gelu`: `x · σ(1.702 x)`, the activation of OpenAI CLIP (CLIP's default).
    #[default]
    QuickGelu,
    /// `gelu`: exact (erf) GELU.
    Gelu,
    /// `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`: tanh-approximated GELU.
    #[serde(alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluNew,
    /// `relu`.
    Relu,
    /// `silu` / `swish`.
    #[serde(alias = "swish")]
    Silu,
}

impl Activation {
    /// Parse an `ACT2FN` name; the error names `config` and the field.
    pub fn parse(name: &str, config: &Path) -> Result<Self> {
        serde_json::from_value(serde_json::Value::String(name.into())).map_err(|_| MllmError::Config {
            path: config.to_path_buf(),
            message: format!("hidden_act `{name}` is not supported (gelu, gelu_new, quick_gelu, relu, silu)"),
        })
    }

    /// Apply the activation.
    pub fn apply(self, xs: &Tensor) -> Tensor {
        match self {
            Self::QuickGelu => xs * (xs * 1.702).sigmoid(),
            Self::Gelu => xs.gelu("none"),
            Self::GeluNew => xs.gelu("tanh"),
            Self::Relu => xs.relu(),
            Self::Silu => xs.silu(),
        }
    }
}

/// A LayerNorm with HF names `weight` and `bias`, computed in f32 and returned in the input kind.
#[derive(Debug)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    /// `<p>.weight` and `<p>.bias`, read from the checkpoint `p` loads (ones and zeros for a
    /// random model).
    pub fn new(p: &VarBuilder, dim: i64, eps: f64) -> Self {
        Self { weight: p.var("weight", &[dim], nn::Init::Const(1.)), bias: p.var("bias", &[dim], nn::Init::Const(0.)), eps }
    }

    /// Normalise over the last dimension.
    pub fn forward(&self, xs: &Tensor) -> Tensor {
        let d = *self.weight.size().last().expect("1-d weight");
        let k = xs.kind();
        xs.to_kind(Kind::Float)
            .layer_norm([d], Some(&self.weight.to_kind(Kind::Float)), Some(&self.bias.to_kind(Kind::Float)), self.eps, true)
            .to_kind(k)
    }
}
