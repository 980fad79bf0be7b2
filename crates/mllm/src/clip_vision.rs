//! The CLIP vision tower (HF `CLIPVisionModel` → `vision_model.*`), with LLaVA's feature
//! selection (`select_layer`, `select_feature`).
use crate::clip::{ClipEncoder, LayerNorm};
use crate::config::{ClipVisionConfig, SelectFeature};
use crate::checkpoint::VarBuilder;
use crate::linear::Linear;
use tch::{nn, Tensor};

/// Patch + class + position embeddings (`embeddings.*`).
#[derive(Debug)]
pub struct ClipVisionEmbeddings {
    pub patch_embedding: Tensor,
    pub class_embedding: Tensor,
    pub position_embedding: Tensor,
    patch_size: i64,
}

impl ClipVisionEmbeddings {
    pub fn new(p: &VarBuilder, cfg: &ClipVisionConfig) -> Self {
        let init = nn::Init::Randn { mean: 0., stdev: 0.02 };
        let d = cfg.hidden_size;
        Self {
            patch_embedding: (p / "patch_embedding").var("weight", &[d, cfg.num_channels, cfg.patch_size, cfg.patch_size], init),
            class_embedding: p.var("class_embedding", &[d], init),
            position_embedding: (p / "position_embedding").var("weight", &[cfg.num_patches() + 1, d], init),
            patch_size: cfg.patch_size,
        }
    }

    /// `pixel_values`: `[N, C, H, W]` → `[N, 1 + patches, D]`.
    pub fn forward(&self, pixel_values: &Tensor) -> Tensor {
        let x = pixel_values.to_kind(self.patch_embedding.kind()).conv2d::<Tensor>(
            &self.patch_embedding,
            None,
            [self.patch_size, self.patch_size],
            [0, 0],
            [1, 1],
            1,
        );
        let n = x.size()[0];
        let x = x.flatten(2, -1).transpose(1, 2);
        let d = self.class_embedding.size()[0];
        let cls = self.class_embedding.view([1, 1, d]).expand([n, 1, d], false);
        Tensor::cat(&[cls, x], 1) + self.position_embedding.unsqueeze(0)
    }
}

/// HF `CLIPVisionTransformer` (`vision_model.*`).
#[derive(Debug)]
pub struct ClipVisionTransformer {
    pub embeddings: ClipVisionEmbeddings,
    pub pre_layrnorm: LayerNorm,
    pub encoder: ClipEncoder,
    pub post_layernorm: LayerNorm,
}

impl ClipVisionTransformer {
    /// `p` is the `vision_model` path.
    pub fn new(p: &VarBuilder, cfg: &ClipVisionConfig) -> Self {
        Self {
            embeddings: ClipVisionEmbeddings::new(&(p / "embeddings"), cfg),
            pre_layrnorm: LayerNorm::new(&(p / "pre_layrnorm"), cfg.hidden_size, cfg.layer_norm_eps),
            encoder: ClipEncoder::new(&(p / "encoder"), &cfg.encoder()),
            post_layernorm: LayerNorm::new(&(p / "post_layernorm"), cfg.hidden_size, cfg.layer_norm_eps),
        }
    }

    /// LLaVA's image features: `hidden_states[select_layer]` (HF indexing: 0 is the input to the
    /// first layer, negative counts from the end), with the CLS token dropped for
    /// [`SelectFeature::Patch`]. Only the layers needed are run.
    pub fn features(&self, pixel_values: &Tensor, select_layer: i64, select: SelectFeature) -> Tensor {
        let idx = self.feature_depth(select_layer);
        let h = self.encoder_input(pixel_values);
        let hs = self.encoder.hidden_states(&h, None, idx);
        Self::select_feature(&hs.into_iter().last().expect("non-empty"), select)
    }

    /// How many encoder layers LLaVA's `select_layer` runs (HF `hidden_states` indexing).
    pub fn feature_depth(&self, select_layer: i64) -> usize {
        let n_layers = self.encoder.layers.len() as i64;
        let idx = if select_layer < 0 { n_layers + 1 + select_layer } else { select_layer };
        assert!((0..=n_layers).contains(&idx), "select_layer {select_layer} out of range for {n_layers} layers");
        idx as usize
    }

    /// The first encoder layer's input: `pre_layrnorm(embeddings(pixel_values))`.
    pub fn encoder_input(&self, pixel_values: &Tensor) -> Tensor {
        self.pre_layrnorm.forward(&self.embeddings.forward(pixel_values))
    }

    /// LLaVA's feature selection on a layer's output `[N, 1 + patches, D]`.
    pub fn select_feature(f: &Tensor, select: SelectFeature) -> Tensor {
        match select {
            SelectFeature::Patch => f.narrow(1, 1, f.size()[1] - 1),
            SelectFeature::ClsPatch => f.shallow_clone(),
        }
    }

    /// Whether any encoder layer carries a LoRA adapter (the tower is trained).
    pub fn has_lora(&self) -> bool {
        self.encoder.layers.iter().any(|l| {
            let a = &l.self_attn;
            [&a.q_proj, &a.k_proj, &a.v_proj, &a.out_proj, &l.mlp.fc1, &l.mlp.fc2].iter().any(|x| x.lora().is_some())
        })
    }

    /// HF `pooler_output`: the post-LayerNormed CLS token of the last layer.
    pub fn pooled(&self, pixel_values: &Tensor) -> Tensor {
        let h = self.pre_layrnorm.forward(&self.embeddings.forward(pixel_values));
        let h = self.encoder.forward(&h, None);
        self.post_layernorm.forward(&h.select(1, 0))
    }

    /// Every linear layer.
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        self.encoder.linears_mut()
    }
}
