//! [`LlavaPreference`]'s gradient-checkpointed backward: the computation of
//! [`PreferenceModel::response_logps`](mdpo::PreferenceModel::response_logps) cut into one
//! [`Segment`] per decoder layer (and per vision layer when the tower carries adapters) and run
//! through [`crate::recompute::backward`].
use super::{full_head, LlavaBatch, LlavaPreference};
use crate::clip_vision::ClipVisionTransformer;
use crate::llama::{position_ids, AttnMask};
use crate::recompute::{self, Segment};
use crate::error::MllmError;
use std::ops::Range;
use tch::{Kind, Tensor};

impl LlavaPreference {
    /// Back-propagates `Σ grad ⊙ sum` (`grad` `[L, B]`) with every layer recomputed in the
    /// backward pass. Same arithmetic as `response_logps` (same ops, same order), so the
    /// gradients equal the plain backward's up to the order of the per-layer accumulations.
    pub(super) fn checkpointed_backward(&self, batch: &LlavaBatch, levels: Range<usize>, train: bool, grad: &Tensor) -> Result<(), MllmError> {
        let (l, b) = (levels.len() as i64, batch.b as i64);
        if grad.size() != [l, b] {
            return Err(MllmError::Input(format!("backward_logps: gradient of shape {:?}, expected [{l}, {b}]", grad.size())));
        }
        let rows = self.rows(batch, &levels)?;
        let plan = if self.share_prefix { self.prefix_plan(&rows, batch.b)? } else { None };
        let m = &self.model;
        let lm = &m.language_model;
        let kind = m.kind();
        let n_img_tokens = rows.ids.eq(m.cfg.image_token_id).sum(Kind::Int64).int64_value(&[]);
        let want = rows.img_rows.len() as i64 * m.cfg.image_tokens();
        if n_img_tokens != want {
            return Err(MllmError::Input(format!("{n_img_tokens} image tokens in the rows but {want} image feature vectors")));
        }
        // image features → embeddings → the decoder's first state
        let bridge = |feats: Option<&Tensor>| -> Vec<Tensor> {
            let e = m.embed(&rows.ids, feats).expect("image-token count checked above");
            match &plan {
                Some(p) => {
                    let (pre_e, cont_e, _) = p.gather(&e, &rows.ids);
                    vec![pre_e, cont_e]
                }
                None => vec![e],
            }
        };
        // everything the segments borrow, created before them
        let vt = &m.vision_tower;
        let image_inputs = self.image_inputs(batch, &rows).filter(|_| vt.has_lora());
        let px = image_inputs.as_ref().map(|(px, _)| px.to_device(m.device()).to_kind(kind));
        let rope_mask = |valid: &Tensor, pos: Tensor, n: i64, t: i64, past: i64| {
            let (cos, sin) = lm.rope(&pos, kind);
            (cos, sin, AttnMask::for_keys(Some(valid), n, t, past, m.device()))
        };
        let (pre, cont) = match &plan {
            None => {
                let (n, t) = (rows.ids.size()[0], rows.ids.size()[1]);
                (None, rope_mask(&rows.valid, position_ids(&rows.valid), n, t, 0))
            }
            Some(p) => (
                Some(rope_mask(&p.pre_valid, position_ids(&p.pre_valid), p.b, p.p, 0)),
                rope_mask(&p.key_valid, position_ids(&p.key_valid).narrow(1, p.p, p.c), p.n, p.c, p.p),
            ),
        };
        let cont_ids = plan.as_ref().map(|p| p.cont_ids(&rows.ids));
        let mut segments: Vec<Segment<'_>> = Vec::new();
        let stem = match (&image_inputs, &px) {
            (Some((_, idx)), Some(px)) => {
                // the trained vision tower: one segment per layer, then the projector and the splice
                let depth = vt.feature_depth(m.cfg.select_layer);
                for layer in &vt.encoder.layers[..depth] {
                    segments.push(Box::new(move |s: &[Tensor]| vec![layer.forward(&s[0], None)]));
                }
                let bridge = &bridge;
                segments.push(Box::new(move |s: &[Tensor]| {
                    let f = ClipVisionTransformer::select_feature(&s[0], m.cfg.select_feature);
                    let f = m.projector.forward_t(&f, train);
                    let f = match idx {
                        Some(i) => f.index_select(0, i),
                        None => f,
                    };
                    bridge(Some(&f))
                }));
                vec![vt.encoder_input(px)]
            }
            _ => bridge(self.image_features(batch, &rows, train)?.as_ref()),
        };
        let n_layers = lm.layers.len();
        let (cos, sin, mask) = (&cont.0, &cont.1, &cont.2);
        match (&plan, &pre) {
            (Some(p), Some(pre)) => {
                let pre = (&pre.0, &pre.1, &pre.2);
                let rep = &p.rep;
                for (i, layer) in lm.layers.iter().enumerate() {
                    let last = i + 1 == n_layers;
                    segments.push(Box::new(move |s: &[Tensor]| {
                        let (next_pre, next_cont) = layer.forward_prefixed(&s[0], &s[1], pre, (cos, sin, mask), rep, last, train);
                        next_pre.into_iter().chain([next_cont]).collect()
                    }));
                }
                let cont_ids = cont_ids.as_ref().expect("with the plan");
                let _ = recompute::backward(&stem, &segments, |s| {
                    surrogate(&p.head(&lm.norm.forward(&s[0]), cont_ids, &|x| lm.lm_head(x, train)), grad, l, b)
                });
            }
            _ => {
                for layer in &lm.layers {
                    segments.push(Box::new(move |s: &[Tensor]| vec![layer.forward(&s[0], cos, sin, mask, None, train)]));
                }
                let _ = recompute::backward(&stem, &segments, |s| {
                    surrogate(&full_head(&lm.norm.forward(&s[0]), &rows.ids, &rows.weights, &|x| lm.lm_head(x, train)), grad, l, b)
                });
            }
        }
        Ok(())
    }
}

/// `Σ grad ⊙ sum` with `sum` `[L·B]` viewed as `[L, B]`.
fn surrogate(sum: &Tensor, grad: &Tensor, l: i64, b: i64) -> Tensor {
    (sum.view([l, b]) * grad.to_kind(Kind::Float).to_device(sum.device())).sum(Kind::Float)
}
