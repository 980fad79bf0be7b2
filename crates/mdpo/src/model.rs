//! The trait a model implements to be trained by `mdpo`.
use crate::data::PreferenceExample;
use crate::Result;
use std::ops::Range;
use tch::{nn, Tensor};

/// Per-response log-probabilities for a batch, each tensor of shape `[levels, B]`.
///
/// `sum[k, b] = Σ_t w_t · log π(y_t | x, y_<t)` over the response tokens of level `k` of example
/// `b`, where `w_t` is the token weight (AMP weighs the tokens of round r by `1 + 0.05·r`, §4b;
/// prompt, image and padding tokens weigh 0). `weight[k, b] = Σ_t w_t` and `tokens[k, b]` is the
/// plain number of response tokens; `sum / weight` is the weighted mean log-prob.
#[derive(Debug)]
pub struct ResponseLogps {
    pub sum: Tensor,
    pub weight: Tensor,
    pub tokens: Tensor,
}

/// A model that can score K ranked responses per prompt.
///
/// Implementations should encode each image (and, if they can, each shared prompt prefix) once
/// per example and reuse it across the K responses: that is where most of the speed of a K-level
/// step comes from. The model owns its precision: a bf16 model runs its forward in bf16 (e.g.
/// LoRA factors cast to the activation dtype); the trainer never changes it.
pub trait PreferenceModel {
    /// The model's encoded batch (token ids, masks, pixel values, ...), built by [`Self::encode`].
    type Batch;

    /// The model's own error. The trainer returns it as the `#[source]` of
    /// [`crate::MdpoError::Model`] (downcast it to tell, say, bad input from a device failure);
    /// `MdpoError` itself may be used and then passes through unchanged.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Encode a batch of examples. Every example has the same number of levels K.
    fn encode(&self, examples: &[PreferenceExample]) -> Result<Self::Batch, Self::Error>;

    /// Check every example before training starts, so bad input fails the run at once naming
    /// the example rather than at the step that reaches it (docs/reliability.md): e.g. a
    /// conversation longer than the model's context, a token outside its vocabulary, an
    /// unreadable image. The trainer calls it once, before the reference log-probs. The default
    /// accepts everything ([`Self::encode`] still checks each batch).
    fn check_examples(&self, examples: &[PreferenceExample]) -> Result<(), Self::Error> {
        let _ = examples;
        Ok(())
    }

    /// Number of examples B in an encoded batch.
    fn batch_len(&self, batch: &Self::Batch) -> usize;

    /// Log-probs of the levels in `levels` (a sub-range of `0..K`) for every example:
    /// tensors of shape `[levels.len(), B]`. `train` enables dropout. Gradients flow to the
    /// trainable variables unless the caller runs it under `tch::no_grad`.
    fn response_logps(
        &self,
        batch: &Self::Batch,
        levels: Range<usize>,
        train: bool,
    ) -> Result<ResponseLogps, Self::Error>;

    /// Back-propagate the surrogate `Σ grad ⊙ sum` of the levels in `levels` (`grad`: `[levels.len(),
    /// B]`, typically `∂L/∂sum` from a loss evaluated on detached sums), accumulating the
    /// gradients of the trainable variables: by the chain rule exactly the gradients of the loss.
    /// The default runs [`Self::response_logps`] with a graph and calls `backward` once; a model
    /// with gradient checkpointing overrides it to recompute its activations layer by layer
    /// (and says so in [`Self::recomputes_activations`]).
    fn backward_logps(&self, batch: &Self::Batch, levels: Range<usize>, train: bool, grad: &Tensor) -> Result<(), Self::Error> {
        let lp = self.response_logps(batch, levels, train)?;
        let kind = grad.kind();
        (lp.sum.to_kind(kind) * grad).sum(kind).backward();
        Ok(())
    }

    /// Whether [`Self::backward_logps`] recomputes activations (gradient checkpointing). The
    /// trainer then always takes its two-pass path (values without a graph, then
    /// `backward_logps`), since a single `backward` over one graph could not free anything.
    fn recomputes_activations(&self) -> bool {
        false
    }

    /// The variables the optimizer updates (for LoRA: the adapter weights only).
    fn trainable_vars(&self) -> &nn::VarStore;

    /// Turn adapters off (`false`) or on (`true`), so the frozen base serves as the reference
    /// model. Models without adapters return an error; use a separate reference model instead.
    fn set_adapters_enabled(&self, enabled: bool) -> Result<()> {
        let _ = enabled;
        Err(crate::MdpoError::Config(
            "this model has no adapters to disable: give the trainer a separate reference model".into(),
        ))
    }

    /// A fingerprint of everything that determines the log-probs besides the weights
    /// (tokenizer, chat template, image preprocessing, token weights); part of the
    /// reference-cache key.
    fn encoding_fingerprint(&self) -> String;

    /// Set the per-round token-weight coefficient `c`: the response tokens of round `r`
    /// (0-indexed) weigh `1 + c·r` in [`ResponseLogps`] (AMP's "loss_turbo", `c = 0.05`, §4b). The
    /// trainer calls it once with `MdpoConfig::round_weight`. The default implementation accepts
    /// only AMP's 0.05, for models that hard-code it; models that support other values override it
    /// (and include `c` in [`Self::encoding_fingerprint`]).
    fn set_round_weight(&mut self, coef: f64) -> Result<()> {
        if (coef - 0.05).abs() < 1e-12 {
            Ok(())
        } else {
            Err(crate::MdpoError::Config(format!(
                "this model supports only the AMP round weight 0.05, not {coef}"
            )))
        }
    }

    /// A fingerprint of the weights that determine the log-probs, for the reference-cache key.
    /// `include_trainable = false` asks for the frozen weights only (the reference of a policy
    /// whose adapters are disabled). The default hashes the variables of
    /// [`Self::trainable_vars`]'s `VarStore` (see [`crate::fingerprint::var_store`]); models whose
    /// frozen weights live elsewhere override it (e.g. with
    /// [`crate::fingerprint::files`] over the checkpoint files).
    fn weights_fingerprint(&self, include_trainable: bool) -> Result<String> {
        crate::fingerprint::var_store(self.trainable_vars(), include_trainable)
    }
}
