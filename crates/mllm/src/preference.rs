//! [`mdpo::PreferenceModel`] for LLaVA: K responses per example scored with AMP's per-round token
//! weights (`1 + 0.05·r` on response tokens of round r, 0 on prompt/image/padding; paper §4b),
//! each image encoded once per example and its projected features shared across the K responses
//! (set [`LlavaPreference::share_image_encoding`] to `false` to re-encode per response, for
//! benchmarking).
use crate::conversation::ChatTokenizer;
use crate::error::MllmError;
use crate::image_processor::ImageProcessor;
use crate::llava::Llava;
use mdpo::{MdpoError, PreferenceExample, PreferenceModel, ResponseLogps};
use std::ops::Range;
use tch::{nn, Kind, Tensor};

fn merr(e: MllmError) -> MdpoError {
    MdpoError::Model(e.to_string())
}

/// A LLaVA model with its tokenizer and image processor, ready for MDPO.
pub struct LlavaPreference {
    pub model: Llava,
    pub tokenizer: ChatTokenizer,
    pub images: ImageProcessor,
    /// Truncate each conversation's tail to this many tokens (never inside the image span).
    pub max_len: Option<usize>,
    /// Encode each example's image once and share it across its K responses (default `true`).
    pub share_image_encoding: bool,
}

/// An encoded batch: `B·K` right-padded rows (row `b·K + k` = level k of example b).
#[derive(Debug)]
pub struct LlavaBatch {
    pub ids: Tensor,
    pub key_valid: Tensor,
    /// Weight of each token as a prediction target, `[B·K, T]`.
    pub weights: Tensor,
    /// 1 on response tokens, `[B·K, T]`.
    pub response: Tensor,
    /// Pixel values of the examples that have an image, `[n_images, 3, H, W]`.
    pub pixel_values: Option<Tensor>,
    /// For each example, its index into `pixel_values`.
    pub image_index: Vec<Option<i64>>,
    pub b: usize,
    pub k: usize,
}

impl LlavaPreference {
    /// Wrap a model; `share_image_encoding` on, no truncation.
    pub fn new(model: Llava, tokenizer: ChatTokenizer, images: ImageProcessor) -> Self {
        Self { model, tokenizer, images, max_len: None, share_image_encoding: true }
    }

    fn turns(ex: &PreferenceExample, k: usize) -> Result<Vec<String>, MdpoError> {
        let conv = &ex.responses[k];
        let mut out = Vec::with_capacity(conv.len());
        for (i, t) in conv.iter().enumerate() {
            let want = if i % 2 == 0 { "human" } else { "gpt" };
            if t.from != want {
                return Err(MdpoError::Model(format!(
                    "example {}: response {k}, turn {i}: expected `from: {want}`, got `{}`",
                    ex.id, t.from
                )));
            }
            out.push(t.value.clone());
        }
        if out.len() < 2 || out.len() % 2 == 1 {
            return Err(MdpoError::Model(format!("example {}: response {k} must end with a gpt turn", ex.id)));
        }
        Ok(out)
    }
}

impl PreferenceModel for LlavaPreference {
    type Batch = LlavaBatch;

    fn encode(&self, examples: &[PreferenceExample]) -> mdpo::Result<LlavaBatch> {
        let b = examples.len();
        let k = examples.first().map(|e| e.levels()).unwrap_or(0);
        if b == 0 || k == 0 {
            return Err(MdpoError::Model("empty batch".into()));
        }
        let mut rows = Vec::with_capacity(b * k);
        let mut pixels = Vec::new();
        let mut image_index = Vec::with_capacity(b);
        for ex in examples {
            if ex.levels() != k {
                return Err(MdpoError::Model(format!("example {}: {} levels, the batch has {k}", ex.id, ex.levels())));
            }
            let mut n_images = None;
            for lvl in 0..k {
                let e = self.tokenizer.encode(&Self::turns(ex, lvl)?, self.max_len).map_err(|e| {
                    MdpoError::Model(format!("example {}: response {lvl}: {e}", ex.id))
                })?;
                if e.images > 1 {
                    return Err(MdpoError::Model(format!("example {}: more than one <image> per conversation", ex.id)));
                }
                if *n_images.get_or_insert(e.images) != e.images {
                    return Err(MdpoError::Model(format!("example {}: responses disagree on the <image> placeholder", ex.id)));
                }
                rows.push(e);
            }
            match (n_images.unwrap_or(0), &ex.image) {
                (1, Some(path)) => {
                    image_index.push(Some(pixels.len() as i64));
                    pixels.push(self.images.preprocess_file(path).map_err(merr)?);
                }
                (1, None) => return Err(MdpoError::Model(format!("example {}: <image> in the text but no image", ex.id))),
                _ => image_index.push(None),
            }
        }
        let t = rows.iter().map(|r| r.ids.len()).max().expect("non-empty");
        let pad = self.model.cfg.text.pad_token_id.unwrap_or(0).max(0);
        let (mut ids, mut valid, mut w, mut resp) = (vec![], vec![], vec![], vec![]);
        for r in &rows {
            let n = r.ids.len();
            ids.extend(&r.ids);
            ids.extend(std::iter::repeat_n(pad, t - n));
            valid.extend(std::iter::repeat_n(1i64, n));
            valid.extend(std::iter::repeat_n(0i64, t - n));
            w.extend(r.weights());
            w.extend(std::iter::repeat_n(0f32, t - n));
            resp.extend(r.response_mask.iter().map(|&m| m as i64 as f32));
            resp.extend(std::iter::repeat_n(0f32, t - n));
        }
        let shape = [(b * k) as i64, t as i64];
        let dev = self.model.device();
        Ok(LlavaBatch {
            ids: Tensor::from_slice(&ids).view(shape).to_device(dev),
            key_valid: Tensor::from_slice(&valid).view(shape).to_device(dev),
            weights: Tensor::from_slice(&w).view(shape).to_device(dev),
            response: Tensor::from_slice(&resp).view(shape).to_device(dev),
            pixel_values: (!pixels.is_empty()).then(|| Tensor::stack(&pixels, 0).to_device(dev)),
            image_index,
            b,
            k,
        })
    }

    fn batch_len(&self, batch: &LlavaBatch) -> usize {
        batch.b
    }

    fn response_logps(&self, batch: &LlavaBatch, levels: Range<usize>, train: bool) -> mdpo::Result<ResponseLogps> {
        if levels.end > batch.k || levels.is_empty() {
            return Err(MdpoError::Model(format!("levels {levels:?} outside 0..{}", batch.k)));
        }
        let dev = self.model.device();
        let rows: Vec<i64> = levels.clone().flat_map(|l| (0..batch.b).map(move |b| (b * batch.k + l) as i64)).collect();
        let row_idx = Tensor::from_slice(&rows).to_device(dev);
        let ids = batch.ids.index_select(0, &row_idx);
        let valid = batch.key_valid.index_select(0, &row_idx);
        let weights = batch.weights.index_select(0, &row_idx);
        let response = batch.response.index_select(0, &row_idx);
        // image index of each selected row that has an image, in row order
        let img_rows: Vec<i64> = levels.clone().flat_map(|_| batch.image_index.iter().flatten().copied()).collect();
        let feats = match (&batch.pixel_values, img_rows.is_empty()) {
            (Some(px), false) => {
                let idx = Tensor::from_slice(&img_rows).to_device(dev);
                Some(if self.share_image_encoding {
                    self.model.encode_images(px, train).index_select(0, &idx)
                } else {
                    self.model.encode_images(&px.index_select(0, &idx), train)
                })
            }
            _ => None,
        };
        let embeds = self.model.embed(&ids, feats.as_ref()).map_err(merr)?;
        let logits = self.model.logits_from_embeds(&embeds, Some(&valid), None, train);
        let t = ids.size()[1];
        let lp = logits.narrow(1, 0, t - 1).log_softmax(-1, Kind::Float);
        let tgt = ids.narrow(1, 1, t - 1).clamp_min(0);
        let tok_lp = lp.gather(2, &tgt.unsqueeze(-1), false).squeeze_dim(-1);
        let w = weights.narrow(1, 1, t - 1);
        let l = levels.len() as i64;
        let bsz = batch.b as i64;
        Ok(ResponseLogps {
            sum: (tok_lp * &w).sum_dim_intlist(1, false, Kind::Float).view([l, bsz]),
            weight: w.sum_dim_intlist(1, false, Kind::Float).view([l, bsz]),
            tokens: response.narrow(1, 1, t - 1).sum_dim_intlist(1, false, Kind::Float).view([l, bsz]),
        })
    }

    fn trainable_vars(&self) -> &nn::VarStore {
        self.model.lora_var_store().unwrap_or(self.model.var_store())
    }

    /// The base weights (always) and, when asked, the LoRA adapters: with LoRA the optimizer's
    /// store holds only the adapters, so the frozen base must be hashed from the model's own store.
    fn weights_fingerprint(&self, include_trainable: bool) -> mdpo::Result<String> {
        let base = mdpo::fingerprint::var_store(self.model.var_store(), true)?;
        match self.model.lora_var_store() {
            Some(lora) if include_trainable => {
                Ok(mdpo::fingerprint::text(&format!("{base}+lora:{}", mdpo::fingerprint::var_store(lora, true)?)))
            }
            _ => Ok(base),
        }
    }

    fn set_adapters_enabled(&self, enabled: bool) -> mdpo::Result<()> {
        self.model.set_adapters_enabled(enabled).map_err(|_| {
            MdpoError::Config("this model has no adapters to disable: give the trainer a separate reference model".into())
        })
    }

    fn encoding_fingerprint(&self) -> String {
        format!(
            "llava|{}|{}|max_len={:?}|image_tokens={}",
            self.tokenizer.fingerprint(),
            self.images.fingerprint(),
            self.max_len,
            self.model.cfg.image_tokens()
        )
    }
}

impl LlavaPreference {
    /// A tiny random LLaVA ([`crate::config::LlavaConfig::tiny`], seeded) with the byte-level
    /// tokenizer and a 28-px CLIP processor, for tests, benches and demos.
    pub fn tiny(seed: i64) -> crate::Result<Self> {
        Self::tiny_with(&crate::config::LlavaConfig::tiny(), seed, tch::Device::Cpu)
    }

    /// A random-weight model for any configuration whose vocabulary covers the byte-level
    /// tokenizer (≥ 260 ids, image token 259).
    pub fn tiny_with(cfg: &crate::config::LlavaConfig, seed: i64, device: tch::Device) -> crate::Result<Self> {
        if cfg.image_token_id != 259 || cfg.text.vocab_size < 260 {
            return Err(MllmError::Input("tiny models need vocab ≥ 260 and image token id 259".into()));
        }
        let model = Llava::random(cfg, crate::llava::LoadOptions { device, kind: Kind::Float }, seed);
        let tokenizer = ChatTokenizer::byte_level(cfg.image_tokens() as usize)?;
        let images = ImageProcessor::clip(cfg.vision.image_size as u32, cfg.image_aspect_ratio);
        Ok(Self::new(model, tokenizer, images))
    }
}
