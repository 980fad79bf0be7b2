//! LLaVA-1.5: CLIP vision tower → projector → LLaMA decoder, with image features spliced into the
//! token embeddings at the image-token positions.
use crate::checkpoint::{canonical_key, safetensors_files, Checkpoint, KeyFilter, VarBuilder, Weights};
use crate::clip_vision::ClipVisionTransformer;
use crate::config::{CheckpointLayout, LlavaConfig};
use crate::error::{MllmError, Result};
use crate::linear::Linear;
use crate::llama::{position_ids, KvCache, Llama};
use crate::lora::Adapters;
use crate::projector::Projector;
use std::path::Path;
use tch::{nn, Device, Kind, Tensor};

/// Where and in which precision to put the model.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    pub device: Device,
    /// `Kind::Float` (CPU), `Kind::BFloat16` or `Kind::Half` (CUDA).
    pub kind: Kind,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { device: Device::Cpu, kind: Kind::Float }
    }
}

/// A LLaVA model. Base weights live in [`Llava::var_store`] (frozen after loading) under the
/// canonical llava-hf names; LoRA adapters (see [`crate::lora`]) in their own VarStore.
pub struct Llava {
    pub cfg: LlavaConfig,
    pub vision_tower: ClipVisionTransformer,
    pub projector: Projector,
    pub language_model: Llama,
    pub(crate) vs: nn::VarStore,
    pub(crate) adapters: Option<Adapters>,
    /// [`Checkpoint::fingerprint`] of the files the base was loaded from.
    checkpoint_fingerprint: Option<String>,
}

impl std::fmt::Debug for Llava {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Llava").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

impl Llava {
    fn build(p: &VarBuilder, cfg: &LlavaConfig) -> Self {
        let vision_tower = ClipVisionTransformer::new(&(p / "vision_tower" / "vision_model"), &cfg.vision);
        let projector = Projector::new(
            &(p / "multi_modal_projector"),
            cfg.projector,
            cfg.vision.hidden_size,
            cfg.text.hidden_size,
            cfg.projector_bias,
        );
        let language_model = Llama::new(&(p / "language_model"), &cfg.text);
        Self {
            cfg: cfg.clone(),
            vision_tower,
            projector,
            language_model,
            vs: nn::VarStore::new(p.device()),
            adapters: None,
            checkpoint_fingerprint: None,
        }
    }

    /// A model with random weights (normal, std 0.02; norms at 1), seeded — for tests, benches and
    /// demos (see [`LlavaConfig::tiny`]).
    pub fn random(cfg: &LlavaConfig, opts: LoadOptions, seed: i64) -> Self {
        tch::manual_seed(seed);
        let mut vs = nn::VarStore::new(opts.device);
        let weights = Weights::random();
        let mut m = Self::build(&VarBuilder::new(&vs, &weights), cfg);
        vs.set_kind(opts.kind);
        vs.freeze();
        m.vs = vs;
        m
    }

    /// Load a checkpoint directory in either layout (see [`LlavaConfig::from_dir`] and
    /// [`canonical_key`]); loading is strict.
    pub fn load(dir: &Path, opts: LoadOptions) -> Result<Self> {
        let cfg = LlavaConfig::from_dir(dir)?;
        Self::load_with_config(dir, &cfg, opts)
    }

    /// The memory-mapped checkpoint of `dir` for `cfg`: its safetensors files (sharded or not),
    /// and for the original layout without an embedded tower the CLIP directory's vision keys.
    pub fn checkpoint(dir: &Path, cfg: &LlavaConfig) -> Result<Checkpoint> {
        let files = safetensors_files(dir)?;
        let origin = if files.len() == 1 { files[0].clone() } else { dir.to_path_buf() };
        let origin = if cfg.layout == CheckpointLayout::Original { dir.to_path_buf() } else { origin };
        let tied = cfg.text.tie_word_embeddings;
        let main: KeyFilter = &move |k: &str| !(tied && canonical_key(k).as_deref() == Some("language_model.lm_head.weight"));
        let mut ckpt = Checkpoint::new(&origin);
        ckpt.add_files(&files, main, &canonical_key)?;
        if cfg.layout == CheckpointLayout::Original && !ckpt.any_key(|k| k.starts_with("model.vision_tower.")) {
            let vdir = cfg.vision_tower_dir.as_ref().ok_or_else(|| MllmError::Config {
                path: dir.join("config.json"),
                message: "the checkpoint has no vision tower and `mm_vision_tower` names no local CLIP directory".into(),
            })?;
            ckpt.add_files(&safetensors_files(vdir)?, &|k: &str| k.starts_with("vision_model."), &canonical_key)?;
        }
        Ok(ckpt)
    }

    /// Load weights for an explicit configuration: each tensor is created once, in `opts.kind`
    /// on `opts.device`, from the memory-mapped files ([`crate::checkpoint`]).
    pub fn load_with_config(dir: &Path, cfg: &LlavaConfig, opts: LoadOptions) -> Result<Self> {
        cfg.validate(&dir.join("config.json"))?;
        let ckpt = Self::checkpoint(dir, cfg)?;
        let mut vs = nn::VarStore::new(opts.device);
        vs.set_kind(opts.kind);
        let weights = Weights::checkpoint(ckpt, opts.kind);
        let mut m = Self::build(&VarBuilder::new(&vs, &weights), cfg);
        let ckpt = weights.finish()?.expect("loaded from a checkpoint");
        vs.freeze();
        m.vs = vs;
        m.checkpoint_fingerprint = Some(ckpt.fingerprint());
        Ok(m)
    }

    /// A fingerprint of the base weights for the reference-log-prob cache key: for a model loaded
    /// from a checkpoint whose base is still frozen and unmerged, [`Checkpoint::fingerprint`] of
    /// its files (computed while loading; seconds for 7B instead of a copy-and-hash of every
    /// weight) with the kind the weights were loaded in; otherwise a hash of every base variable.
    pub fn base_fingerprint(&self) -> mdpo::Result<String> {
        if let Some(f) = &self.checkpoint_fingerprint {
            if self.vs.variables().values().all(|t| !t.requires_grad()) {
                // The kind the weights were created in is part of what the reference scores with.
                return Ok(format!("checkpoint:{:?}:{f}", self.kind()));
            }
        }
        mdpo::fingerprint::var_store(&self.vs, true)
    }

    /// Forget the checkpoint fingerprint (the base weights no longer equal the files, e.g. after
    /// merging an adapter into them).
    pub(crate) fn base_changed(&mut self) {
        self.checkpoint_fingerprint = None;
    }

    /// The base weights (canonical llava-hf names).
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// Device of the weights.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Floating-point kind of the weights.
    pub fn kind(&self) -> Kind {
        self.language_model.embed_tokens.kind()
    }

    /// Projected image features `[N, image_tokens, text_hidden]` for `pixel_values`
    /// `[N, 3, image_size, image_size]`; other shapes are refused ([`crate::bounds::check_pixels`]).
    pub fn encode_images(&self, pixel_values: &Tensor, train: bool) -> Result<Tensor> {
        crate::bounds::check_pixels(&self.cfg, || "encode_images".into(), pixel_values)?;
        let px = pixel_values.to_device(self.device()).to_kind(self.kind());
        let f = self.vision_tower.features(&px, self.cfg.select_layer, self.cfg.select_feature);
        Ok(self.projector.forward_t(&f, train))
    }

    /// Embeddings of freshly generated tokens `[B, T]`: plain token embeddings, even for an id that
    /// equals the image token (a model may emit it; as in transformers, only the prompt's image
    /// tokens are replaced by image features).
    pub fn embed_generated(&self, ids: &Tensor) -> Tensor {
        self.language_model.embed(&ids.to_device(self.device()))
    }

    /// Token embeddings `[B, T, D]` with the rows at image-token positions replaced, in order, by
    /// the rows of `image_features` (`[N, n, D]` or `[N·n, D]`). Their counts must agree, and
    /// every other id must index the embedding table ([`crate::bounds::check_id_tensor`]).
    pub fn embed(&self, ids: &Tensor, image_features: Option<&Tensor>) -> Result<Tensor> {
        let ids = ids.to_device(self.device());
        if ids.dim() != 2 {
            return Err(MllmError::Input(format!("token ids of shape {:?}, expected [B, T]", ids.size())));
        }
        crate::bounds::check_id_tensor(&self.cfg, || "embed".into(), &ids)?;
        let is_img = ids.eq(self.cfg.image_token_id);
        let n_img = is_img.sum(Kind::Int64).int64_value(&[]);
        let e = self.language_model.embed(&ids.masked_fill(&is_img, 0));
        match image_features {
            None if n_img == 0 => Ok(e),
            None => Err(MllmError::Input(format!("{n_img} image tokens in the input but no image"))),
            Some(f) => {
                let d = e.size()[2];
                let f = f.f_reshape([-1, d])?;
                if f.size()[0] != n_img {
                    return Err(MllmError::Input(format!(
                        "{n_img} image tokens in the input but {} image feature vectors",
                        f.size()[0]
                    )));
                }
                Ok(e.masked_scatter(&is_img.unsqueeze(-1).expand_as(&e), &f.to_kind(e.kind())))
            }
        }
    }

    /// Full-sequence logits `[B, T, V]` in f32 (training / scoring). `key_valid` `[B, T]` marks
    /// real tokens (1) vs padding (0); `None` means no padding.
    pub fn forward(&self, ids: &Tensor, pixel_values: Option<&Tensor>, key_valid: Option<&Tensor>) -> Result<Tensor> {
        self.forward_t(ids, pixel_values, key_valid, false)
    }

    /// [`Self::forward`] with a training flag (LoRA dropout).
    pub fn forward_t(&self, ids: &Tensor, pixel_values: Option<&Tensor>, key_valid: Option<&Tensor>, train: bool) -> Result<Tensor> {
        let feats = pixel_values.map(|p| self.encode_images(p, train)).transpose()?;
        let e = self.embed(ids, feats.as_ref())?;
        Ok(self.logits_from_embeds(&e, key_valid, None, train))
    }

    /// Logits `[B, T, V]` (f32) from input embeddings, reading/extending `cache` when given.
    /// `key_valid` covers the cached positions too (`[B, past + T]`).
    pub fn logits_from_embeds(&self, embeds: &Tensor, key_valid: Option<&Tensor>, cache: Option<&mut KvCache>, train: bool) -> Tensor {
        let h = self.hidden_from_embeds(embeds, key_valid, cache, train);
        self.language_model.lm_head(&h, train).to_kind(Kind::Float)
    }

    /// Final hidden states `[B, T, D]` from input embeddings.
    pub fn hidden_from_embeds(&self, embeds: &Tensor, key_valid: Option<&Tensor>, cache: Option<&mut KvCache>, train: bool) -> Tensor {
        let (b, t, _) = embeds.size3().expect("[B, T, D]");
        let past = cache.as_ref().map(|c| c.len()).unwrap_or(0);
        let pos = match key_valid {
            Some(v) => {
                let v = v.to_device(embeds.device());
                position_ids(&v).narrow(1, past, t)
            }
            None => (Tensor::arange(t, (Kind::Int64, embeds.device())) + past).unsqueeze(0).expand([b, t], false),
        };
        self.language_model.forward_embeds(embeds, &pos, key_valid, cache, train)
    }

    /// Fill an empty `cache` with the keys/values of `embeds` `[B, T, D]` (a shared prompt
    /// prefix; `key_valid` `[B, T]`), skipping the work only outputs would need
    /// ([`Llama::prefill`]). Differentiable.
    pub fn prefill_from_embeds(&self, embeds: &Tensor, key_valid: Option<&Tensor>, cache: &mut KvCache, train: bool) {
        let (b, t, _) = embeds.size3().expect("[B, T, D]");
        let pos = match key_valid {
            Some(v) => position_ids(&v.to_device(embeds.device())),
            None => Tensor::arange(t, (Kind::Int64, embeds.device())).unsqueeze(0).expand([b, t], false),
        };
        self.language_model.prefill(embeds, &pos, key_valid, cache, train)
    }

    /// A fresh KV cache.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.cfg.text.num_hidden_layers)
    }

    /// Every linear layer with its canonical module name ([`Linear::name`]).
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let mut v = self.vision_tower.linears_mut();
        v.extend(self.projector.linears_mut());
        v.extend(self.language_model.linears_mut());
        v
    }
}
