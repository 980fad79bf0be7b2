//! The CLIP transformer encoder shared by the vision tower ([`crate::clip_vision`]) and the text
//! tower (`clip_text`). Weight names follow Hugging Face `CLIPEncoder`:
//! `encoder.layers.{i}.{self_attn.{q,k,v,out}_proj, layer_norm1, mlp.{fc1,fc2}, layer_norm2}`.
use crate::checkpoint::VarBuilder;
use crate::linear::Linear;
use tch::Tensor;

/// CLIP's MLP activation (`hidden_act` in the HF config; default `quick_gelu`).
pub use crate::layers::Activation as ClipActivation;

/// The sizes of a CLIP encoder (the part of `CLIPVisionConfig`/`CLIPTextConfig` it needs).
#[derive(Debug, Clone, PartialEq)]
pub struct ClipEncoderConfig {
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_attention_heads: i64,
    pub num_hidden_layers: usize,
    pub layer_norm_eps: f64,
    pub hidden_act: ClipActivation,
}

pub use crate::layers::LayerNorm;

/// Multi-head self-attention (`self_attn`), with biases, scale `head_dim^-1/2`.
#[derive(Debug)]
pub struct ClipAttention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub out_proj: Linear,
    num_heads: i64,
    head_dim: i64,
}

impl ClipAttention {
    pub fn new(p: &VarBuilder, cfg: &ClipEncoderConfig) -> Self {
        let h = cfg.hidden_size;
        Self {
            q_proj: Linear::new(&(p / "q_proj"), h, h, true),
            k_proj: Linear::new(&(p / "k_proj"), h, h, true),
            v_proj: Linear::new(&(p / "v_proj"), h, h, true),
            out_proj: Linear::new(&(p / "out_proj"), h, h, true),
            num_heads: cfg.num_attention_heads,
            head_dim: h / cfg.num_attention_heads,
        }
    }

    /// `xs`: `[B, T, D]`; `attn_mask`: an additive float mask broadcastable to `[B, H, T, T]`
    /// (`0` = attend, `-inf`/large negative = masked), e.g. the causal mask of the text tower.
    pub fn forward(&self, xs: &Tensor, attn_mask: Option<&Tensor>) -> Tensor {
        self.attend(xs, attn_mask, false)
    }

    /// [`Self::forward`] with an optional additive mask or, with `causal`, SDPA's `is_causal`
    /// (no mask tensor: the fused kernels stay eligible).
    pub fn attend(&self, xs: &Tensor, attn_mask: Option<&Tensor>, causal: bool) -> Tensor {
        let (b, t, d) = xs.size3().expect("[B, T, D]");
        let shape = |x: Tensor| x.view([b, t, self.num_heads, self.head_dim]).transpose(1, 2);
        let q = shape(self.q_proj.forward(xs));
        let k = shape(self.k_proj.forward(xs));
        let v = shape(self.v_proj.forward(xs));
        let mask = attn_mask.map(|m| m.to_kind(q.kind()));
        let y = Tensor::scaled_dot_product_attention(&q, &k, &v, mask.as_ref(), 0., causal && mask.is_none(), None, false);
        self.out_proj.forward(&y.transpose(1, 2).reshape([b, t, d]))
    }

    /// All linear layers, for LoRA injection.
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        vec![&mut self.q_proj, &mut self.k_proj, &mut self.v_proj, &mut self.out_proj]
    }
}

/// The feed-forward block (`mlp.fc1`, activation, `mlp.fc2`).
#[derive(Debug)]
pub struct ClipMlp {
    pub fc1: Linear,
    pub fc2: Linear,
    act: ClipActivation,
}

impl ClipMlp {
    pub fn new(p: &VarBuilder, cfg: &ClipEncoderConfig) -> Self {
        Self {
            fc1: Linear::new(&(p / "fc1"), cfg.hidden_size, cfg.intermediate_size, true),
            fc2: Linear::new(&(p / "fc2"), cfg.intermediate_size, cfg.hidden_size, true),
            act: cfg.hidden_act,
        }
    }
    pub fn forward(&self, xs: &Tensor) -> Tensor {
        self.fc2.forward(&self.act.apply(&self.fc1.forward(xs)))
    }
}

/// One pre-LN transformer block.
#[derive(Debug)]
pub struct ClipEncoderLayer {
    pub self_attn: ClipAttention,
    pub layer_norm1: LayerNorm,
    pub mlp: ClipMlp,
    pub layer_norm2: LayerNorm,
}

impl ClipEncoderLayer {
    pub fn new(p: &VarBuilder, cfg: &ClipEncoderConfig) -> Self {
        Self {
            self_attn: ClipAttention::new(&(p / "self_attn"), cfg),
            layer_norm1: LayerNorm::new(&(p / "layer_norm1"), cfg.hidden_size, cfg.layer_norm_eps),
            mlp: ClipMlp::new(&(p / "mlp"), cfg),
            layer_norm2: LayerNorm::new(&(p / "layer_norm2"), cfg.hidden_size, cfg.layer_norm_eps),
        }
    }
    pub fn forward(&self, xs: &Tensor, attn_mask: Option<&Tensor>) -> Tensor {
        self.forward_causal(xs, attn_mask, false)
    }

    /// [`Self::forward`]; `causal` = plain causal self-attention without a mask tensor.
    pub fn forward_causal(&self, xs: &Tensor, attn_mask: Option<&Tensor>, causal: bool) -> Tensor {
        let h = xs + self.self_attn.attend(&self.layer_norm1.forward(xs), attn_mask, causal);
        &h + self.mlp.forward(&self.layer_norm2.forward(&h))
    }
}

/// The stack of encoder layers (`<p>.layers.{i}`, where `p` is typically `…encoder`).
#[derive(Debug)]
pub struct ClipEncoder {
    pub layers: Vec<ClipEncoderLayer>,
}

impl ClipEncoder {
    pub fn new(p: &VarBuilder, cfg: &ClipEncoderConfig) -> Self {
        let lp = p / "layers";
        Self { layers: (0..cfg.num_hidden_layers).map(|i| ClipEncoderLayer::new(&(&lp / i), cfg)).collect() }
    }

    /// Output of the last layer.
    pub fn forward(&self, xs: &Tensor, attn_mask: Option<&Tensor>) -> Tensor {
        self.layers.iter().fold(xs.shallow_clone(), |h, l| l.forward(&h, attn_mask))
    }

    /// Output of the last layer under plain causal attention (CLIP's text tower): SDPA's
    /// `is_causal`, equal to the additive `-inf` upper-triangular mask.
    pub fn forward_causal(&self, xs: &Tensor) -> Tensor {
        self.layers.iter().fold(xs.shallow_clone(), |h, l| l.forward_causal(&h, None, true))
    }

    /// HF `hidden_states`: `[input, after layer 1, …, after layer n]`, running only the first
    /// `n` layers (`n ≤ num_hidden_layers`).
    pub fn hidden_states(&self, xs: &Tensor, attn_mask: Option<&Tensor>, n: usize) -> Vec<Tensor> {
        let mut out = vec![xs.shallow_clone()];
        for l in self.layers.iter().take(n) {
            let h = l.forward(out.last().expect("non-empty"), attn_mask);
            out.push(h);
        }
        out
    }

    /// Mutable access to every linear layer, for LoRA injection.
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let mut v = Vec::new();
        for l in &mut self.layers {
            v.extend(l.self_attn.linears_mut());
            v.push(&mut l.mlp.fc1);
            v.push(&mut l.mlp.fc2);
        }
        v
    }
}
