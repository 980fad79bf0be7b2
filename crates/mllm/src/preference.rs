//! [`mdpo::PreferenceModel`] for LLaVA: K responses per example scored with AMP's per-round token
//! weights (`1 + 0.05·r` on response tokens of round r, 0 on prompt/image/padding; paper §4b),
//! each image encoded once per example and its projected features shared across the K responses
//! (set [`LlavaPreference::share_image_encoding`] to `false` to re-encode per response, for
//! benchmarking), and — with [`LlavaPreference::share_prefix`] — the shared prompt prefix
//! (system prompt, image tokens, first human turn: identical across the K responses) run through
//! the language model once per example, the K continuations attending to its keys/values.
use crate::conversation::{ChatTokenizer, Encoded};
use crate::error::MllmError;
use crate::image_processor::ImageProcessor;
use crate::llava::Llava;
use mdpo::{MdpoError, PreferenceExample, PreferenceModel, ResponseLogps};
use std::ops::Range;
use tch::{nn, Kind, Tensor};

mod checkpointed;


/// A LLaVA model with its tokenizer and image processor, ready for MDPO.
pub struct LlavaPreference {
    pub model: Llava,
    pub tokenizer: ChatTokenizer,
    pub images: ImageProcessor,
    /// Truncate each conversation's tail to this many tokens (never inside the image span).
    /// Without it a conversation longer than the model's context is refused
    /// ([`crate::bounds::check_length`]).
    pub max_len: Option<usize>,
    /// Refuse a micro-batch whose estimated activation memory
    /// ([`crate::bounds::activation_bytes`]) exceeds this many bytes (`--max-batch-memory`);
    /// `None` (the default): only the context bound applies.
    pub memory_budget: Option<u64>,
    /// Encode each example's image once and share it across its K responses (default `true`).
    pub share_image_encoding: bool,
    /// Run each example's common token prefix through the language model once and the K
    /// continuations against its (row-expanded) KV cache; exact up to float rounding, gradients
    /// flow through the shared prefix (default `true`).
    pub share_prefix: bool,
    /// Gradient checkpointing: [`PreferenceModel::backward_logps`] keeps only each decoder layer's
    /// input (and each vision layer's, when the tower carries adapters) and recomputes the layer
    /// in the backward pass ([`crate::recompute`]); the gradients equal the plain backward.
    /// Off by default (`amp train`/`sft` turn it on for CUDA; `--grad-checkpoint`).
    pub grad_checkpoint: bool,
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
        Self { model, tokenizer, images, max_len: None, memory_budget: None, share_image_encoding: true, share_prefix: true, grad_checkpoint: false }
    }

    fn turns(ex: &PreferenceExample, k: usize) -> Result<Vec<String>, MllmError> {
        let conv = &ex.responses[k];
        let mut out = Vec::with_capacity(conv.len());
        for (i, t) in conv.iter().enumerate() {
            let want = if i % 2 == 0 { "human" } else { "gpt" };
            if t.from != want {
                return Err(MllmError::Input(format!(
                    "example {}: response {k}, turn {i}: expected `from: {want}`, got `{}`",
                    ex.id, t.from
                )));
            }
            out.push(t.value.clone());
        }
        if out.len() < 2 || out.len() % 2 == 1 {
            return Err(MllmError::Input(format!("example {}: response {k} must end with a gpt turn", ex.id)));
        }
        Ok(out)
    }

    /// What encoding an example needs, borrowed from `self` (all of it `Sync`, unlike the model's
    /// tensors, so [`PreferenceModel::check_examples`] can encode examples in parallel).
    fn encoder(&self) -> Encoder<'_> {
        Encoder {
            tokenizer: &self.tokenizer,
            cfg: &self.model.cfg,
            max_len: self.max_len,
            memory_budget: self.memory_budget,
            elem_bytes: crate::bounds::elem_bytes(self.model.kind()),
            grad_checkpoint: self.grad_checkpoint,
        }
    }

    /// Preprocesses `ex`'s image and checks it against the vision tower's input size.
    fn pixels(&self, ex: &PreferenceExample, path: &std::path::Path) -> Result<Tensor, MllmError> {
        let px = self
            .images
            .preprocess_file(path)
            .map_err(|e| MllmError::Input(format!("example {}: {e}", ex.id)))?;
        crate::bounds::check_pixels(&self.model.cfg, || format!("example {}: image {}", ex.id, path.display()), &px.unsqueeze(0))?;
        Ok(px)
    }
}

/// See [`LlavaPreference::encoder`].
struct Encoder<'a> {
    tokenizer: &'a ChatTokenizer,
    cfg: &'a crate::config::LlavaConfig,
    max_len: Option<usize>,
    memory_budget: Option<u64>,
    elem_bytes: u64,
    grad_checkpoint: bool,
}

impl Encoder<'_> {
    /// The K encoded conversations of `ex` and whether they have an image, each checked against
    /// the model ([`crate::bounds`]): ids inside the vocabulary, length inside the context, the
    /// K rows inside the memory budget.
    fn example(&self, ex: &PreferenceExample, k: usize) -> Result<(Vec<Encoded>, bool), MllmError> {
        let mut rows = Vec::with_capacity(k);
        let mut n_images = None;
        for lvl in 0..k {
            let what = || format!("example {}: response {lvl}", ex.id);
            let e = self
                .tokenizer
                .encode(&LlavaPreference::turns(ex, lvl)?, self.max_len)
                .map_err(|e| MllmError::Input(format!("{}: {e}", what())))?;
            crate::bounds::check_length(self.cfg, what, e.ids.len(), self.max_len)?;
            crate::bounds::check_ids(self.cfg, what, &e.ids)?;
            if e.images > 1 {
                return Err(MllmError::Input(format!("example {}: more than one <image> per conversation", ex.id)));
            }
            if *n_images.get_or_insert(e.images) != e.images {
                return Err(MllmError::Input(format!("example {}: responses disagree on the <image> placeholder", ex.id)));
            }
            rows.push(e);
        }
        let has_image = n_images.unwrap_or(0) == 1;
        if has_image && ex.image.is_none() {
            return Err(MllmError::Input(format!("example {}: <image> in the text but no image", ex.id)));
        }
        let t = rows.iter().map(|r| r.ids.len()).max().unwrap_or(0);
        self.check_memory(|| format!("example {}", ex.id), rows.len(), t)?;
        Ok((rows, has_image))
    }

    fn check_memory(&self, what: impl FnOnce() -> String, rows: usize, tokens: usize) -> Result<(), MllmError> {
        crate::bounds::check_memory(self.cfg, self.elem_bytes, self.grad_checkpoint, self.memory_budget, what, rows, tokens)
    }
}

impl PreferenceModel for LlavaPreference {
    type Batch = LlavaBatch;
    type Error = MllmError;

    fn encode(&self, examples: &[PreferenceExample]) -> Result<LlavaBatch, MllmError> {
        let b = examples.len();
        let k = examples.first().map(|e| e.levels()).unwrap_or(0);
        if b == 0 || k == 0 {
            return Err(MllmError::Input("empty batch".into()));
        }
        let mut rows = Vec::with_capacity(b * k);
        let mut pixels = Vec::new();
        let mut image_index = Vec::with_capacity(b);
        for ex in examples {
            if ex.levels() != k {
                return Err(MllmError::Input(format!("example {}: {} levels, the batch has {k}", ex.id, ex.levels())));
            }
            let (enc, has_image) = self.encoder().example(ex, k)?;
            rows.extend(enc);
            match (has_image, &ex.image) {
                (true, Some(path)) => {
                    image_index.push(Some(pixels.len() as i64));
                    pixels.push(self.pixels(ex, path)?);
                }
                _ => image_index.push(None),
            }
        }
        let t = rows.iter().map(|r| r.ids.len()).max().expect("non-empty");
        let ids_of = || examples.iter().map(|e| e.id.as_str()).collect::<Vec<_>>().join(", ");
        self.encoder().check_memory(|| format!("the micro-batch of examples {}", ids_of()), rows.len(), t)?;
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

    /// Encodes every example once (in parallel) before training: a conversation longer than the
    /// context, a token outside the vocabulary or an unreadable image fails the run at once,
    /// naming the example, instead of at the step that reaches it.
    fn check_examples(&self, examples: &[PreferenceExample]) -> Result<(), MllmError> {
        use rayon::prelude::*;
        let (enc, images) = (self.encoder(), &self.images);
        let results: Vec<Result<(), MllmError>> = examples
            .par_iter()
            .map(|ex| {
                let (_, has_image) = enc.example(ex, ex.levels())?;
                if let (true, Some(path)) = (has_image, &ex.image) {
                    let what = || format!("example {}: image {}", ex.id, path.display());
                    let (w, h) = image::image_dimensions(path).map_err(|e| MllmError::Input(format!("{}: {e}", what())))?;
                    images.check_dimensions(what, w, h)?;
                }
                Ok(())
            })
            .collect();
        results.into_iter().collect()
    }

    fn batch_len(&self, batch: &LlavaBatch) -> usize {
        batch.b
    }

    fn response_logps(&self, batch: &LlavaBatch, levels: Range<usize>, train: bool) -> Result<ResponseLogps, MllmError> {
        let rows = self.rows(batch, &levels)?;
        let feats = self.image_features(batch, &rows, train)?;
        let embeds = self.model.embed(&rows.ids, feats.as_ref())?;
        let plan = if self.share_prefix { self.prefix_plan(&rows, batch.b)? } else { None };
        let sum = match &plan {
            Some(p) => {
                let (pre_e, cont_e, cont_ids) = p.gather(&embeds, &rows.ids);
                // the prefix once per example, its keys/values then repeated for the L levels
                let mut cache = self.model.new_cache();
                self.model.prefill_from_embeds(&pre_e, Some(&p.pre_valid), &mut cache, train);
                cache.index_select(&p.rep);
                let h = self.model.hidden_from_embeds(&cont_e, Some(&p.key_valid), Some(&mut cache), train);
                p.head(&h, &cont_ids, &|x| self.model.language_model.lm_head(x, train))
            }
            None => {
                let h = self.model.hidden_from_embeds(&embeds, Some(&rows.valid), None, train);
                full_head(&h, &rows.ids, &rows.weights, &|x| self.model.language_model.lm_head(x, train))
            }
        };
        Ok(rows.logps(sum, levels.len(), batch.b))
    }

    fn backward_logps(&self, batch: &LlavaBatch, levels: Range<usize>, train: bool, grad: &Tensor) -> Result<(), MllmError> {
        if !self.grad_checkpoint {
            let lp = self.response_logps(batch, levels, train)?;
            let kind = grad.kind();
            (lp.sum.to_kind(kind) * grad).sum(kind).backward();
            return Ok(());
        }
        self.checkpointed_backward(batch, levels, train, grad)
    }

    fn recomputes_activations(&self) -> bool {
        self.grad_checkpoint
    }

    fn trainable_vars(&self) -> &nn::VarStore {
        self.model.lora_var_store().unwrap_or(self.model.var_store())
    }

    /// The base weights (always) and, when asked, the LoRA adapters: with LoRA the optimizer's
    /// store holds only the adapters, so the frozen base is keyed separately, by its checkpoint
    /// files when it was loaded from one ([`Llava::base_fingerprint`]).
    fn weights_fingerprint(&self, include_trainable: bool) -> mdpo::Result<String> {
        let base = self.model.base_fingerprint()?;
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

fn to_vec<T>(x: &Tensor) -> Result<Vec<T>, MllmError>
where
    Vec<T>: TryFrom<Tensor, Error = tch::TchError>,
{
    Vec::<T>::try_from(x.to_device(tch::Device::Cpu).contiguous().view([-1])).map_err(MllmError::Torch)
}

/// The `L·B` rows of one call (row `li·B + b` = level `levels.start + li` of example `b`).
struct Rows {
    ids: Tensor,
    valid: Tensor,
    weights: Tensor,
    response: Tensor,
    /// The image index of each row that has an image, in row order.
    img_rows: Vec<i64>,
}

impl Rows {
    fn logps(&self, sum: Tensor, l: usize, b: usize) -> ResponseLogps {
        let t = self.ids.size()[1];
        let (l, b) = (l as i64, b as i64);
        ResponseLogps {
            sum: sum.view([l, b]),
            weight: self.weights.narrow(1, 1, t - 1).sum_dim_intlist(1, false, Kind::Float).view([l, b]),
            tokens: self.response.narrow(1, 1, t - 1).sum_dim_intlist(1, false, Kind::Float).view([l, b]),
        }
    }
}

/// Weighted log-prob sums `[N]` of rows (full rows, or a prefix plan's continuations) from their
/// final hidden states `[N, T, D]` (after the norm): target `t + 1` is predicted from position
/// `t`, with weight `weights[t + 1]`.
fn full_head(hidden: &Tensor, ids: &Tensor, weights: &Tensor, lm_head: &dyn Fn(&Tensor) -> Tensor) -> Tensor {
    let t = ids.size()[1];
    if t < 2 {
        return Tensor::zeros([ids.size()[0]], (Kind::Float, hidden.device()));
    }
    weighted_logps(&hidden.narrow(1, 0, t - 1), &ids.narrow(1, 1, t - 1), &weights.narrow(1, 1, t - 1), lm_head)
}

/// `Σ_t w[n, t] · log softmax(lm_head(h[n, t]))[tgt[n, t]]` for `h` `[N, S, D]`, `tgt` and `w`
/// `[N, S]`, with the `lm_head` and the log-softmax run **only at the positions with a weight**
/// (the response tokens). A prompt's positions are most of a row, and their logits `[S, V]`
/// would be the largest tensors of the step (32,000 × T floats per row for LLaMA); the sum is
/// the same, term for term, as over the full logits with the weightless terms zero.
fn weighted_logps(h: &Tensor, tgt: &Tensor, w: &Tensor, lm_head: &dyn Fn(&Tensor) -> Tensor) -> Tensor {
    let (n, s, d) = h.size3().expect("[N, S, D]");
    let w = w.to_kind(Kind::Float).reshape([-1]);
    let at = w.ne(0.0).nonzero().squeeze_dim(1);
    let logits = lm_head(&h.reshape([-1, d]).index_select(0, &at)).to_kind(Kind::Float);
    let lp = logits.log_softmax(-1, Kind::Float);
    let tgt = tgt.reshape([-1]).index_select(0, &at).clamp_min(0);
    let tok = lp.gather(1, &tgt.unsqueeze(-1), false).squeeze_dim(-1) * w.index_select(0, &at);
    // back to [N, S] (zeros elsewhere), summed per row: deterministic on every device
    Tensor::zeros([n * s], (Kind::Float, h.device())).index_copy(0, &at, &tok).view([n, s]).sum_dim_intlist(1, false, Kind::Float)
}

/// How a batch's rows split into a shared prefix per example and continuations (see
/// [`LlavaPreference::prefix_plan`]).
struct PrefixPlan {
    /// Flat `[B·P]` and `[N·C]` gather indices into the `[N·T]` rows.
    pre_idx: Tensor,
    cont_idx: Tensor,
    pre_valid: Tensor,
    cont_w: Tensor,
    /// `[N]`: the example of each continuation row.
    rep: Tensor,
    /// `[prefix | continuation]` key validity, `[N, P + C]`.
    key_valid: Tensor,
    b: i64,
    n: i64,
    p: i64,
    c: i64,
}

impl PrefixPlan {
    /// Prefix embeddings `[B, P, D]`, continuation embeddings `[N, C, D]` and ids `[N, C]`.
    fn gather(&self, embeds: &Tensor, ids: &Tensor) -> (Tensor, Tensor, Tensor) {
        let d = embeds.size()[2];
        let flat_e = embeds.reshape([-1, d]);
        let pre_e = flat_e.index_select(0, &self.pre_idx).view([self.b, self.p, d]);
        let cont_e = flat_e.index_select(0, &self.cont_idx).view([self.n, self.c, d]);
        (pre_e, cont_e, self.cont_ids(ids))
    }

    /// Continuation ids `[N, C]`.
    fn cont_ids(&self, ids: &Tensor) -> Tensor {
        ids.reshape([-1]).index_select(0, &self.cont_idx).view([self.n, self.c])
    }

    /// Weighted log-prob sums `[N]` from the continuation's final hidden states `[N, C, D]`.
    fn head(&self, hidden: &Tensor, cont_ids: &Tensor, lm_head: &dyn Fn(&Tensor) -> Tensor) -> Tensor {
        full_head(hidden, cont_ids, &self.cont_w, lm_head)
    }
}

impl LlavaPreference {
    fn rows(&self, batch: &LlavaBatch, levels: &Range<usize>) -> Result<Rows, MllmError> {
        if levels.end > batch.k || levels.is_empty() {
            return Err(MllmError::Input(format!("levels {levels:?} outside 0..{}", batch.k)));
        }
        let dev = self.model.device();
        let rows: Vec<i64> = levels.clone().flat_map(|l| (0..batch.b).map(move |b| (b * batch.k + l) as i64)).collect();
        let row_idx = Tensor::from_slice(&rows).to_device(dev);
        Ok(Rows {
            ids: batch.ids.index_select(0, &row_idx),
            valid: batch.key_valid.index_select(0, &row_idx),
            weights: batch.weights.index_select(0, &row_idx),
            response: batch.response.index_select(0, &row_idx),
            img_rows: levels.clone().flat_map(|_| batch.image_index.iter().flatten().copied()).collect(),
        })
    }

    /// The pixel values to encode and, when they are the batch's unique images, the index of
    /// each image row into their features.
    fn image_inputs(&self, batch: &LlavaBatch, rows: &Rows) -> Option<(Tensor, Option<Tensor>)> {
        let px = batch.pixel_values.as_ref().filter(|_| !rows.img_rows.is_empty())?;
        let idx = Tensor::from_slice(&rows.img_rows).to_device(self.model.device());
        Some(if self.share_image_encoding { (px.shallow_clone(), Some(idx)) } else { (px.index_select(0, &idx), None) })
    }

    /// Projected image features of the rows that have an image, in row order.
    fn image_features(&self, batch: &LlavaBatch, rows: &Rows, train: bool) -> Result<Option<Tensor>, MllmError> {
        let Some((px, idx)) = self.image_inputs(batch, rows) else { return Ok(None) };
        let f = self.model.encode_images(&px, train)?;
        Ok(Some(match idx {
            Some(i) => f.index_select(0, &i),
            None => f,
        }))
    }

    /// The shared-prefix split of `L·B` rows.
    ///
    /// Rows are `li·B + b` (right-padded, `[L·B, T]`). For example `b` the cached prefix is its
    /// first `q_b` tokens, where `q_b` is at most the longest common prefix of its L rows and at
    /// most (first weighted target position − 1): every target `t` with a weight is then predicted
    /// from position `t − 1 ≥ q_b`, i.e. from the continuation, whose first token is the last
    /// shared one. Prefix rows are right-padded to `max q_b`, continuations to their longest
    /// length; the key-validity mask `[prefix | continuation]` hides both paddings and gives the
    /// continuation the positions `q_b, q_b + 1, …`. `None` when no example has a prefix to share.
    fn prefix_plan(&self, rows: &Rows, b: usize) -> Result<Option<PrefixPlan>, MllmError> {
        let (ids, valid, weights) = (&rows.ids, &rows.valid, &rows.weights);
        let dev = ids.device();
        let t = ids.size()[1] as usize;
        let idv: Vec<i64> = to_vec(ids)?;
        let vv: Vec<i64> = to_vec(&valid.to_kind(Kind::Int64))?;
        let wv: Vec<f32> = to_vec(&weights.to_kind(Kind::Float))?;
        let n = ids.size()[0] as usize;
        let l = n / b;
        let len: Vec<usize> = (0..n).map(|r| vv[r * t..(r + 1) * t].iter().filter(|&&x| x != 0).count()).collect();
        let mut q = vec![0usize; b];
        for (bi, qb) in q.iter_mut().enumerate() {
            let rows: Vec<usize> = (0..l).map(|li| li * b + bi).collect();
            let min_len = rows.iter().map(|&r| len[r]).min().unwrap_or(0);
            let lcp = (0..min_len).take_while(|&j| rows.iter().all(|&r| idv[r * t + j] == idv[rows[0] * t + j])).count();
            let first_w = rows
                .iter()
                .map(|&r| (1..len[r]).find(|&j| wv[r * t + j] != 0.).unwrap_or(len[r]))
                .min()
                .unwrap_or(0);
            *qb = lcp.min(first_w.saturating_sub(1)).min(min_len.saturating_sub(1));
        }
        let pm = q.iter().copied().max().unwrap_or(0);
        if pm == 0 {
            return Ok(None);
        }
        let c = (0..n).map(|r| len[r] - q[r % b]).max().unwrap_or(1).max(1);
        // flat gather indices into [L·B·T] and validity
        let (mut pre_idx, mut pre_valid) = (Vec::with_capacity(b * pm), Vec::with_capacity(b * pm));
        for (bi, &qb) in q.iter().enumerate() {
            for j in 0..pm {
                pre_idx.push((bi * t + j.min(qb.saturating_sub(1))) as i64);
                pre_valid.push((j < qb) as i64);
            }
        }
        let (mut cont_idx, mut cont_valid, mut cont_w) = (Vec::with_capacity(n * c), Vec::with_capacity(n * c), Vec::with_capacity(n * c));
        for r in 0..n {
            let qb = q[r % b];
            for j in 0..c {
                let pos = qb + j;
                let ok = pos < len[r];
                cont_idx.push((r * t + if ok { pos } else { qb }) as i64);
                cont_valid.push(ok as i64);
                cont_w.push(if ok { wv[r * t + pos] } else { 0. });
            }
        }
        let (b_, n_, pm_, c_) = (b as i64, n as i64, pm as i64, c as i64);
        let pre_valid = Tensor::from_slice(&pre_valid).view([b_, pm_]).to_device(dev);
        let cont_valid = Tensor::from_slice(&cont_valid).view([n_, c_]).to_device(dev);
        let rep: Vec<i64> = (0..l).flat_map(|_| 0..b_).collect();
        let rep = Tensor::from_slice(&rep).to_device(dev);
        let key_valid = Tensor::cat(&[pre_valid.index_select(0, &rep), cont_valid], 1);
        Ok(Some(PrefixPlan {
            pre_idx: Tensor::from_slice(&pre_idx).to_device(dev),
            cont_idx: Tensor::from_slice(&cont_idx).to_device(dev),
            pre_valid,
            cont_w: Tensor::from_slice(&cont_w).view([n_, c_]).to_device(dev),
            rep,
            key_valid,
            b: b_,
            n: n_,
            p: pm_,
            c: c_,
        }))
    }

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
