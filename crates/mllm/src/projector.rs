//! The multimodal projector (`mm_projector_type`: `linear` or `mlp{N}x_gelu`), named
//! `multi_modal_projector.linear_{i}` (llava-hf; the original `model.mm_projector.{2(i-1)}` keys
//! are renamed on load).
use crate::config::ProjectorType;
use crate::checkpoint::VarBuilder;
use crate::linear::Linear;
use tch::Tensor;

/// Linear layers with exact GELU between them.
#[derive(Debug)]
pub struct Projector {
    pub layers: Vec<Linear>,
}

impl Projector {
    pub fn new(p: &VarBuilder, kind: ProjectorType, vision_dim: i64, text_dim: i64, bias: bool) -> Self {
        let layers = (0..kind.depth())
            .map(|i| Linear::new(&(p / format!("linear_{}", i + 1)), if i == 0 { vision_dim } else { text_dim }, text_dim, bias))
            .collect();
        Self { layers }
    }

    /// `[.., vision_dim]` → `[.., text_dim]`.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut h = self.layers[0].forward_t(xs, train);
        for l in &self.layers[1..] {
            h = l.forward_t(&h.gelu("none"), train);
        }
        h
    }

    /// Every linear layer.
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        self.layers.iter_mut().collect()
    }
}
