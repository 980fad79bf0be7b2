//! The LLaMA decoder (HF `LlamaForCausalLM`: `model.embed_tokens`, `model.layers.{i}`,
//! `model.norm`, `lm_head`): RMSNorm, RoPE (configurable θ), SwiGLU, grouped-query attention,
//! tied or untied `lm_head`, with a full-sequence path for training and a [`KvCache`] for
//! incremental decoding.
use crate::config::LlamaConfig;
use crate::checkpoint::VarBuilder;
use crate::linear::Linear;
use tch::{nn, Kind, Tensor};

/// HF `LlamaRMSNorm`: `w · x / sqrt(mean(x²) + eps)`, the statistic computed in f32.
#[derive(Debug)]
pub struct RmsNorm {
    pub weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(p: &VarBuilder, dim: i64, eps: f64) -> Self {
        Self { weight: p.var("weight", &[dim], nn::Init::Const(1.)), eps }
    }
    pub fn forward(&self, xs: &Tensor) -> Tensor {
        let k = xs.kind();
        let x = xs.to_kind(Kind::Float);
        let var = x.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
        let x = (x * (var + self.eps).rsqrt()).to_kind(k);
        &self.weight * x
    }
}

/// One layer's cached keys and values, `[B, kv_heads, T, head_dim]` each.
///
/// Without a capacity the new positions are concatenated (no in-place writes, so gradients flow
/// through the cache: the shared-prefix training path relies on it). With a capacity
/// ([`KvCache::with_capacity`], generation under `no_grad`) the keys and values are written in
/// place into buffers allocated once, and attention reads a view of the filled part.
#[derive(Debug, Default)]
pub struct LayerCache {
    kv: Option<(Tensor, Tensor)>,
    len: i64,
    capacity: Option<i64>,
}

impl LayerCache {
    /// Append `k`, `v` (`[B, kv_heads, t, head_dim]`) and return all cached keys and values.
    pub fn append(&mut self, k: Tensor, v: Tensor) -> (Tensor, Tensor) {
        let t = k.size()[2];
        let need = self.len + t;
        let Some(cap) = self.capacity else {
            let (k, v) = match self.kv.take() {
                Some((pk, pv)) => (Tensor::cat(&[pk, k], 2), Tensor::cat(&[pv, v], 2)),
                None => (k, v),
            };
            self.kv = Some((k.shallow_clone(), v.shallow_clone()));
            self.len = need;
            return (k, v);
        };
        let (bk, bv) = match self.kv.take() {
            Some((bk, bv)) if bk.size()[2] >= need && bk.size()[0] == k.size()[0] => (bk, bv),
            prev => {
                // first use, or grown past the capacity: a new buffer (doubling), old rows copied
                let old = prev.as_ref().map(|(b, _)| b.size()[2]).unwrap_or(0);
                let size = cap.max(need).max(2 * old);
                let mut shape = k.size();
                shape[2] = size;
                let bk = Tensor::zeros(&shape[..], (k.kind(), k.device()));
                let bv = Tensor::zeros(&shape[..], (v.kind(), v.device()));
                if let Some((pk, pv)) = prev {
                    bk.narrow(2, 0, self.len).copy_(&pk.narrow(2, 0, self.len));
                    bv.narrow(2, 0, self.len).copy_(&pv.narrow(2, 0, self.len));
                }
                (bk, bv)
            }
        };
        bk.narrow(2, self.len, t).copy_(&k);
        bv.narrow(2, self.len, t).copy_(&v);
        self.len = need;
        let out = (bk.narrow(2, 0, need), bv.narrow(2, 0, need));
        self.kv = Some((bk, bv));
        out
    }
}

/// Per-layer key/value cache for incremental decoding: tensors `[B, kv_heads, T, head_dim]`.
#[derive(Debug, Default)]
pub struct KvCache {
    layers: Vec<LayerCache>,
}

impl KvCache {
    /// An empty cache for `n_layers` layers that grows by concatenation (autograd-friendly).
    pub fn new(n_layers: usize) -> Self {
        Self { layers: (0..n_layers).map(|_| LayerCache::default()).collect() }
    }
    /// An empty cache whose per-layer buffers hold `capacity` positions, written in place (for
    /// decoding under `no_grad`: no copy of the whole cache per token). It still grows, by
    /// doubling, if more positions arrive.
    pub fn with_capacity(n_layers: usize, capacity: i64) -> Self {
        Self { layers: (0..n_layers).map(|_| LayerCache { capacity: Some(capacity.max(1)), ..Default::default() }).collect() }
    }
    /// Number of cached positions.
    pub fn len(&self) -> i64 {
        self.layers.first().map(|l| l.len).unwrap_or(0)
    }
    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Keep the batch rows `idx` (beam search reordering, dropping finished rows).
    pub fn index_select(&mut self, idx: &Tensor) {
        for l in &mut self.layers {
            let (len, prealloc) = (l.len, l.capacity.is_some());
            let Some((k, v)) = l.kv.as_mut() else { continue };
            let i = idx.to_device(k.device());
            if prealloc && i.size()[0] == k.size()[0] {
                // same batch size (a beam reorder): permute only the filled part, in place
                for t in [k, v] {
                    let mut filled = t.narrow(2, 0, len);
                    filled.copy_(&filled.index_select(0, &i));
                }
            } else {
                *k = k.index_select(0, &i);
                *v = v.index_select(0, &i);
            }
        }
    }
}

/// Self-attention with RoPE and grouped-query attention.
#[derive(Debug)]
pub struct LlamaAttention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
}

fn rotate_half(x: &Tensor) -> Tensor {
    let d = *x.size().last().expect("dims");
    let x1 = x.narrow(-1, 0, d / 2);
    let x2 = x.narrow(-1, d / 2, d / 2);
    Tensor::cat(&[x2.neg(), x1], -1)
}

impl LlamaAttention {
    pub fn new(p: &VarBuilder, cfg: &LlamaConfig) -> Self {
        let (h, hd) = (cfg.hidden_size, cfg.head_dim());
        let b = cfg.attention_bias;
        Self {
            q_proj: Linear::new(&(p / "q_proj"), h, cfg.num_attention_heads * hd, b),
            k_proj: Linear::new(&(p / "k_proj"), h, cfg.kv_heads() * hd, b),
            v_proj: Linear::new(&(p / "v_proj"), h, cfg.kv_heads() * hd, b),
            o_proj: Linear::new(&(p / "o_proj"), cfg.num_attention_heads * hd, h, b),
            heads: cfg.num_attention_heads,
            kv_heads: cfg.kv_heads(),
            head_dim: hd,
        }
    }

    /// The rotated keys and the values of `xs` `[B, T, D]`, each `[B, kv_heads, T, head_dim]`.
    pub fn keys_values(&self, xs: &Tensor, cos: &Tensor, sin: &Tensor, train: bool) -> (Tensor, Tensor) {
        let (b, t, _) = xs.size3().expect("[B, T, D]");
        let k = self.k_proj.forward_t(xs, train).view([b, t, self.kv_heads, self.head_dim]).transpose(1, 2);
        let v = self.v_proj.forward_t(xs, train).view([b, t, self.kv_heads, self.head_dim]).transpose(1, 2);
        (&k * cos + rotate_half(&k) * sin, v)
    }

    /// `xs` `[B, T, D]`; `cos`/`sin` `[B, 1, T, head_dim]`; `mask`: a boolean `[B, 1, T, T_past + T]`
    /// (true = attend), [`AttnMask::Causal`] (no padding, no past) or [`AttnMask::None`] (one
    /// query attending to everything before it).
    pub fn forward(
        &self,
        xs: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &AttnMask,
        cache: Option<&mut LayerCache>,
        train: bool,
    ) -> Tensor {
        let (b, t, _) = xs.size3().expect("[B, T, D]");
        let q = self.q_proj.forward_t(xs, train).view([b, t, self.heads, self.head_dim]).transpose(1, 2);
        let q = &q * cos + rotate_half(&q) * sin;
        let (k, v) = self.keys_values(xs, cos, sin, train);
        let (k, v) = match cache {
            Some(slot) => slot.append(k, v),
            None => (k, v),
        };
        let (m, causal) = match mask {
            AttnMask::Mask(m) => (Some(m), false),
            AttnMask::Causal => (None, true),
            AttnMask::None => (None, false),
        };
        let gqa = self.heads != self.kv_heads;
        let y = Tensor::scaled_dot_product_attention(&q, &k, &v, m, 0., causal, None, gqa);
        self.o_proj.forward_t(&y.transpose(1, 2).reshape([b, t, self.heads * self.head_dim]), train)
    }
}

/// SwiGLU feed-forward: `down(silu(gate(x)) · up(x))`.
#[derive(Debug)]
pub struct LlamaMlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

impl LlamaMlp {
    pub fn new(p: &VarBuilder, cfg: &LlamaConfig) -> Self {
        let (h, i, b) = (cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias);
        Self {
            gate_proj: Linear::new(&(p / "gate_proj"), h, i, b),
            up_proj: Linear::new(&(p / "up_proj"), h, i, b),
            down_proj: Linear::new(&(p / "down_proj"), i, h, b),
        }
    }
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.down_proj.forward_t(&(self.gate_proj.forward_t(xs, train).silu() * self.up_proj.forward_t(xs, train)), train)
    }
}

/// One decoder block.
#[derive(Debug)]
pub struct LlamaDecoderLayer {
    pub self_attn: LlamaAttention,
    pub mlp: LlamaMlp,
    pub input_layernorm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
}

impl LlamaDecoderLayer {
    pub fn new(p: &VarBuilder, cfg: &LlamaConfig) -> Self {
        Self {
            self_attn: LlamaAttention::new(&(p / "self_attn"), cfg),
            mlp: LlamaMlp::new(&(p / "mlp"), cfg),
            input_layernorm: RmsNorm::new(&(p / "input_layernorm"), cfg.hidden_size, cfg.rms_norm_eps),
            post_attention_layernorm: RmsNorm::new(&(p / "post_attention_layernorm"), cfg.hidden_size, cfg.rms_norm_eps),
        }
    }
}

impl LlamaDecoderLayer {
    /// The block: `h + attn(norm(h))`, then `+ mlp(norm(·))`; `cache` as in
    /// [`LlamaAttention::forward`].
    pub fn forward(
        &self,
        h: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &AttnMask,
        cache: Option<&mut LayerCache>,
        train: bool,
    ) -> Tensor {
        let a = self.self_attn.forward(&self.input_layernorm.forward(h), cos, sin, mask, cache, train);
        // (not `+=`: an in-place add would modify the caller's embeddings and break autograd)
        let h1 = a + h;
        &h1 + self.mlp.forward_t(&self.post_attention_layernorm.forward(&h1), train)
    }

    /// One layer of a shared-prefix run (what [`Llama::prefill`], [`KvCache::index_select`] and
    /// [`Llama::forward_embeds`] with that cache do, for this layer only, without a cache
    /// object): the prefix rows `h_pre` `[B, P, D]` produce the layer's keys/values, which are
    /// repeated to the continuation rows by `rep` (`[N]` indices into `0..B`) and attended to by
    /// `h_cont` `[N, C, D]`. `pre` and `cont` are each `(cos, sin, mask)`. Returns the next
    /// prefix state (`None` for the `last` layer, whose prefix outputs nothing reads) and the
    /// next continuation state. Used layer by layer for gradient checkpointing.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_prefixed(
        &self,
        h_pre: &Tensor,
        h_cont: &Tensor,
        pre: (&Tensor, &Tensor, &AttnMask),
        cont: (&Tensor, &Tensor, &AttnMask),
        rep: &Tensor,
        last: bool,
        train: bool,
    ) -> (Option<Tensor>, Tensor) {
        let mut slot = LayerCache::default();
        let next_pre = if last {
            let (k, v) = self.self_attn.keys_values(&self.input_layernorm.forward(h_pre), pre.0, pre.1, train);
            let _ = slot.append(k, v);
            None
        } else {
            Some(self.forward(h_pre, pre.0, pre.1, pre.2, Some(&mut slot), train))
        };
        let (k, v) = slot.kv.take().expect("the prefix fills the slot");
        let i = rep.to_device(k.device());
        let (k, v) = (k.index_select(0, &i), v.index_select(0, &i));
        let mut slot = LayerCache { len: k.size()[2], kv: Some((k, v)), capacity: None };
        (next_pre, self.forward(h_cont, cont.0, cont.1, cont.2, Some(&mut slot), train))
    }
}

/// HF `LlamaForCausalLM`; `p` is its root (`language_model` in a LLaVA model).
#[derive(Debug)]
pub struct Llama {
    pub embed_tokens: Tensor,
    pub layers: Vec<LlamaDecoderLayer>,
    pub norm: RmsNorm,
    /// `None` when the embeddings are tied.
    pub lm_head: Option<Linear>,
    inv_freq: Tensor,
    pub cfg: LlamaConfig,
}

/// The attention mask of one forward call.
#[derive(Debug)]
pub enum AttnMask {
    /// A boolean mask `[B, 1, T, past + T]` (true = attend).
    Mask(Tensor),
    /// Plain causal attention (no padding, nothing cached).
    Causal,
    /// No mask (a single new query without padding sees the whole cache).
    None,
}

/// Whether every key position is a real token (so the batch has no padding).
fn all_valid(key_valid: &Tensor) -> bool {
    key_valid.ne(0).all().int64_value(&[]) != 0
}

impl AttnMask {
    /// The mask of a forward call over `t` new positions after `past` cached ones:
    /// [`AttnMask::Causal`] when nothing is cached and no key is padding (SDPA's `is_causal`: no
    /// mask tensor, so its fused flash / memory-efficient kernels are eligible),
    /// [`AttnMask::None`] for one new query without padding, else the explicit boolean mask
    /// ([`attention_mask`]): padded batches and continuations attending to a cached (shared)
    /// prefix. `is_causal` is never used with a cache: SDPA aligns it top-left, and a
    /// continuation's queries sit bottom-right of the key span.
    pub fn for_keys(key_valid: Option<&Tensor>, b: i64, t: i64, past: i64, device: tch::Device) -> Self {
        let unpadded = key_valid.is_none_or(all_valid);
        match (unpadded, past, t) {
            (true, 0, _) => AttnMask::Causal,
            (true, _, 1) => AttnMask::None,
            _ => AttnMask::Mask(attention_mask(key_valid, b, t, past, device)),
        }
    }
}

/// Boolean attention mask `[B, 1, T, past + T]` (true = attend): causal, hiding padded keys
/// (`key_valid` `[B, past + T]`, 1 = real token), and always letting a query see itself so
/// rows of padding stay finite.
pub fn attention_mask(key_valid: Option<&Tensor>, b: i64, t: i64, past: i64, device: tch::Device) -> Tensor {
    let tk = past + t;
    let qpos = Tensor::arange(t, (Kind::Int64, device)).view([t, 1]) + past;
    let kpos = Tensor::arange(tk, (Kind::Int64, device)).view([1, tk]);
    let causal = kpos.le_tensor(&qpos);
    let diag = kpos.eq_tensor(&qpos);
    let m = causal.view([1, 1, t, tk]).expand([b, 1, t, tk], false);
    match key_valid {
        Some(v) => {
            let v = v.to_device(device).to_kind(Kind::Bool).view([b, 1, 1, tk]);
            m.logical_and(&v).logical_or(&diag.view([1, 1, t, tk]))
        }
        None => m.contiguous(),
    }
}

/// HF position ids for a (left-)padded batch: `cumsum(mask) − 1`, padding set to 1.
pub fn position_ids(key_valid: &Tensor) -> Tensor {
    let m = key_valid.to_kind(Kind::Int64);
    let p = m.cumsum(-1, Kind::Int64) - 1;
    p.masked_fill(&m.eq(0), 1)
}

impl Llama {
    pub fn new(p: &VarBuilder, cfg: &LlamaConfig) -> Self {
        let mp = p / "model";
        let lp = &mp / "layers";
        let embed_tokens = (&mp / "embed_tokens").var("weight", &[cfg.vocab_size, cfg.hidden_size], nn::Init::Randn { mean: 0., stdev: 0.02 });
        let layers = (0..cfg.num_hidden_layers).map(|i| LlamaDecoderLayer::new(&(&lp / i), cfg)).collect();
        let norm = RmsNorm::new(&(&mp / "norm"), cfg.hidden_size, cfg.rms_norm_eps);
        let lm_head = (!cfg.tie_word_embeddings).then(|| Linear::new(&(p / "lm_head"), cfg.hidden_size, cfg.vocab_size, false));
        let hd = cfg.head_dim();
        // HF: 1 / base^(arange(0, d, 2) / d), in f32.
        let expo = Tensor::arange_start_step(0, hd, 2, (Kind::Int64, p.device())).to_kind(Kind::Float) / hd as f64;
        let inv_freq = Tensor::pow_scalar(cfg.rope_theta(), &expo).reciprocal();
        Self { embed_tokens, layers, norm, lm_head, inv_freq, cfg: cfg.clone() }
    }

    /// Token embeddings `[B, T, D]`.
    pub fn embed(&self, ids: &Tensor) -> Tensor {
        Tensor::embedding(&self.embed_tokens, ids, -1, false, false)
    }

    /// RoPE `(cos, sin)` `[B, 1, T, head_dim]` for `position_ids` `[B, T]`, in `kind`.
    pub fn rope(&self, position_ids: &Tensor, kind: Kind) -> (Tensor, Tensor) {
        let freqs = position_ids.to_kind(Kind::Float).unsqueeze(-1) * self.inv_freq.view([1, 1, -1]);
        let emb = Tensor::cat(&[&freqs, &freqs], -1).unsqueeze(1);
        (emb.cos().to_kind(kind), emb.sin().to_kind(kind))
    }

    /// Decoder hidden states after the final norm, `[B, T, D]`.
    ///
    /// `position_ids` `[B, T]`; `key_valid` `[B, past + T]` (1 = real token; `None` = no padding);
    /// `cache`: when given, the past keys/values are read from it and the new ones appended.
    pub fn forward_embeds(
        &self,
        embeds: &Tensor,
        position_ids: &Tensor,
        key_valid: Option<&Tensor>,
        mut cache: Option<&mut KvCache>,
        train: bool,
    ) -> Tensor {
        let (b, t, _) = embeds.size3().expect("[B, T, D]");
        let past = cache.as_ref().map(|c| c.len()).unwrap_or(0);
        let mask = AttnMask::for_keys(key_valid, b, t, past, embeds.device());
        let (cos, sin) = self.rope(position_ids, embeds.kind());
        let mut h = embeds.shallow_clone();
        for (i, l) in self.layers.iter().enumerate() {
            let slot = cache.as_mut().map(|c| &mut c.layers[i]);
            h = l.forward(&h, &cos, &sin, &mask, slot, train);
        }
        self.norm.forward(&h)
    }

    /// Fill the empty `cache` with the keys/values of `embeds` (a prompt prefix), computing only
    /// what they need: the last layer's attention output and MLP and the final norm are skipped.
    /// Arguments as in [`Self::forward_embeds`] (`key_valid` `[B, T]`); no in-place ops, so
    /// gradients flow from whatever later attends to the cache back into `embeds` and the weights.
    pub fn prefill(&self, embeds: &Tensor, position_ids: &Tensor, key_valid: Option<&Tensor>, cache: &mut KvCache, train: bool) {
        assert!(cache.is_empty(), "prefill needs an empty cache");
        let (b, t, _) = embeds.size3().expect("[B, T, D]");
        let mask = AttnMask::for_keys(key_valid, b, t, 0, embeds.device());
        let (cos, sin) = self.rope(position_ids, embeds.kind());
        let mut h = embeds.shallow_clone();
        let n = self.layers.len();
        for (i, l) in self.layers.iter().enumerate() {
            if i + 1 == n {
                let (k, v) = l.self_attn.keys_values(&l.input_layernorm.forward(&h), &cos, &sin, train);
                let _ = cache.layers[i].append(k, v);
                break;
            }
            h = l.forward(&h, &cos, &sin, &mask, Some(&mut cache.layers[i]), train);
        }
    }

    /// Logits (in the model's dtype) from hidden states.
    pub fn lm_head(&self, h: &Tensor, train: bool) -> Tensor {
        match &self.lm_head {
            Some(l) => l.forward_t(h, train),
            None => h.linear::<Tensor>(&self.embed_tokens, None),
        }
    }

    /// Every linear layer (attention, MLP, lm_head).
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let mut v = Vec::new();
        for l in &mut self.layers {
            let a = &mut l.self_attn;
            v.extend([&mut a.q_proj, &mut a.k_proj, &mut a.v_proj, &mut a.o_proj]);
            v.extend([&mut l.mlp.gate_proj, &mut l.mlp.up_proj, &mut l.mlp.down_proj]);
        }
        if let Some(h) = &mut self.lm_head {
            v.push(h);
        }
        v
    }
}
