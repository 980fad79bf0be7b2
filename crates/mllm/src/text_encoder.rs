//! The one sentence-encoder wrapper of the crate: tokenizer + a [`TextModel`] (BERT with
//! sentence-transformers pooling, or the CLIP text tower), with what both need around the model:
//! de-duplication of repeated texts, length-sorted batches padded to their longest text,
//! optional L2 normalisation, and rows returned in input order. Used by the auto-check's experts
//! (paper §3.1.3): [`crate::BertEncoder`] and [`crate::ClipTextEncoder`] are this type.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};
use tokenizers::{Encoding, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{MllmError, Result};

/// Default batch size of [`TextEncoder::embed`] (the fastest on CPU in
/// `crates/mllm/BENCHMARKS-text.md`).
pub const DEFAULT_BATCH_SIZE: usize = 128;

/// One length-sorted batch, right-padded to its longest text.
#[derive(Debug)]
pub struct TextBatch<'a> {
    /// Token ids `[n, T]` (int64), padded with [`TextModel::pad_id`].
    pub ids: Tensor,
    /// Token type ids `[n, T]` (int64; 0 on padding).
    pub types: Tensor,
    /// 1 on tokens, 0 on padding, `[n, T]` (f32).
    pub mask: Tensor,
    /// The unpadded encodings, row by row.
    pub encodings: Vec<&'a Encoding>,
}

/// The model part of a [`TextEncoder`].
pub trait TextModel {
    /// Width of an output row.
    fn dim(&self) -> i64;
    /// Token id used for padding.
    fn pad_id(&self) -> i64;
    /// One row per text of the batch, `[n, dim]` (f32, unnormalised).
    fn embed_batch(&self, batch: &TextBatch) -> Tensor;
}

/// A tokenizer and a [`TextModel`]: sentence embeddings for raw strings.
pub struct TextEncoder<M> {
    model: M,
    tokenizer: Tokenizer,
    tokenizer_path: PathBuf,
    max_seq_length: usize,
    lowercase: bool,
    normalize: bool,
    batch_size: usize,
    device: Device,
}

impl<M: std::fmt::Debug> std::fmt::Debug for TextEncoder<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextEncoder")
            .field("model", &self.model)
            .field("max_seq_length", &self.max_seq_length)
            .field("normalize", &self.normalize)
            .field("batch_size", &self.batch_size)
            .field("device", &self.device)
            .finish()
    }
}

impl<M: TextModel> TextEncoder<M> {
    /// Wrap `model` with the `tokenizer.json` at `tokenizer_path`, truncating at `max_seq_length`
    /// tokens (special tokens included).
    pub(crate) fn new(
        model: M,
        tokenizer_path: &Path,
        max_seq_length: impl FnOnce(&Tokenizer) -> usize,
        lowercase: bool,
        normalize: bool,
        device: Device,
    ) -> Result<Self> {
        std::fs::metadata(tokenizer_path).map_err(|source| MllmError::Io { path: tokenizer_path.into(), source })?;
        let terr = |e: tokenizers::Error| MllmError::Tokenizer { path: tokenizer_path.into(), message: e.to_string() };
        let mut tokenizer = Tokenizer::from_file(tokenizer_path).map_err(terr)?;
        let max_seq_length = max_seq_length(&tokenizer);
        let trunc = TruncationParams {
            direction: TruncationDirection::Right,
            max_length: max_seq_length,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
        };
        tokenizer.with_truncation(Some(trunc)).map_err(terr)?;
        tokenizer.with_padding(None);
        Ok(Self {
            model,
            tokenizer,
            tokenizer_path: tokenizer_path.into(),
            max_seq_length,
            lowercase,
            normalize,
            batch_size: DEFAULT_BATCH_SIZE,
            device,
        })
    }

    /// Number of texts per forward pass (texts are length-sorted first). Default
    /// [`DEFAULT_BATCH_SIZE`].
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Switch L2 normalisation of the rows on or off.
    pub fn with_normalize(mut self, normalize: bool) -> Self {
        self.normalize = normalize;
        self
    }

    /// Whether rows are L2-normalised.
    pub fn normalize(&self) -> bool {
        self.normalize
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The device the model runs on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Embedding width.
    pub fn dim(&self) -> i64 {
        self.model.dim()
    }

    /// Token limit per text (special tokens included); longer texts are truncated.
    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    /// Token ids (with special tokens, truncated) of each text, as the model sees them.
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        Ok(self.encode(texts)?.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }

    fn encode(&self, texts: &[&str]) -> Result<Vec<Encoding>> {
        let inputs: Vec<String> =
            texts.iter().map(|t| if self.lowercase { t.to_lowercase() } else { t.to_string() }).collect();
        self.tokenizer
            .encode_batch(inputs, true)
            .map_err(|e| MllmError::Tokenizer { path: self.tokenizer_path.clone(), message: e.to_string() })
    }

    /// Embeddings `[n, dim]` (f32, on the encoder's device), in the order of `texts`. Repeated
    /// texts are encoded once; texts are length-sorted into batches of
    /// [`with_batch_size`](Self::with_batch_size), each padded to its longest text.
    pub fn embed(&self, texts: &[&str]) -> Result<Tensor> {
        let (unique, index) = dedup(texts);
        let rows = self.embed_unique(&unique)?;
        if unique.len() == texts.len() {
            return Ok(rows);
        }
        Ok(rows.index_select(0, &Tensor::from_slice(&index).to_device(self.device)))
    }

    fn embed_unique(&self, texts: &[&str]) -> Result<Tensor> {
        if texts.is_empty() {
            return Ok(Tensor::zeros([0, self.dim()], (Kind::Float, self.device)));
        }
        let encodings = self.encode(texts)?;
        if let Some(i) = encodings.iter().position(|e| e.is_empty()) {
            return Err(MllmError::Input(format!("text {i} ({:?}) tokenizes to no tokens", texts[i])));
        }
        let lens: Vec<usize> = encodings.iter().map(|e| e.len()).collect();
        let batches = length_sorted_batches(&lens, self.batch_size);
        let pad = self.model.pad_id();
        let rows = tch::no_grad(|| {
            batches
                .iter()
                .map(|batch| {
                    let t = batch.iter().map(|&i| lens[i]).max().unwrap_or(0);
                    let mut ids = vec![pad; batch.len() * t];
                    let mut types = vec![0i64; batch.len() * t];
                    let mut mask = vec![0f32; batch.len() * t];
                    for (r, &i) in batch.iter().enumerate() {
                        let e = &encodings[i];
                        for (j, (&id, &ty)) in e.get_ids().iter().zip(e.get_type_ids()).enumerate() {
                            ids[r * t + j] = id as i64;
                            types[r * t + j] = ty as i64;
                            mask[r * t + j] = 1.0;
                        }
                    }
                    let shape = [batch.len() as i64, t as i64];
                    let b = TextBatch {
                        ids: Tensor::from_slice(&ids).view(shape).to_device(self.device),
                        types: Tensor::from_slice(&types).view(shape).to_device(self.device),
                        mask: Tensor::from_slice(&mask).view(shape).to_device(self.device),
                        encodings: batch.iter().map(|&i| &encodings[i]).collect(),
                    };
                    let rows = self.model.embed_batch(&b);
                    if self.normalize {
                        l2_normalize(&rows)
                    } else {
                        rows
                    }
                })
                .collect::<Vec<_>>()
        });
        Ok(unsort_rows(rows, &batches, self.device))
    }

    /// [`embed`](Self::embed) copied to host memory, one `Vec<f32>` per text.
    pub fn embed_vecs(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let t = self.embed(texts)?.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
        let (n, d) = t.size2()?;
        let flat = Vec::<f32>::try_from(t.view([-1]))?;
        Ok((0..n as usize).map(|i| flat[i * d as usize..(i + 1) * d as usize].to_vec()).collect())
    }
}

/// Batch order: indices of `lens` sorted by decreasing length (stable), cut into batches.
pub(crate) fn length_sorted_batches(lens: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lens.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lens[i]));
    order.chunks(batch_size.max(1)).map(|c| c.to_vec()).collect()
}

/// The distinct texts (in first-occurrence order) and, for each input text, its row among them:
/// the auto-check embeds the same chunks many times (the standard response against every
/// generated one), so each distinct text is encoded once per call.
pub(crate) fn dedup<'a>(texts: &[&'a str]) -> (Vec<&'a str>, Vec<i64>) {
    let mut seen: HashMap<&'a str, i64> = HashMap::with_capacity(texts.len());
    let mut unique = Vec::with_capacity(texts.len());
    let index = texts
        .iter()
        .map(|&t| {
            *seen.entry(t).or_insert_with(|| {
                unique.push(t);
                unique.len() as i64 - 1
            })
        })
        .collect();
    (unique, index)
}

/// Rows computed in `order` (concatenated batches) put back into input order.
pub(crate) fn unsort_rows(rows: Vec<Tensor>, batches: &[Vec<usize>], device: Device) -> Tensor {
    let stacked = Tensor::cat(&rows, 0);
    let mut inverse = vec![0i64; stacked.size()[0] as usize];
    for (pos, &orig) in batches.iter().flatten().enumerate() {
        inverse[orig] = pos as i64;
    }
    stacked.index_select(0, &Tensor::from_slice(&inverse).to_device(device))
}

/// `x / max(‖x‖₂, 1e-12)` row-wise (torch's `F.normalize`).
pub(crate) fn l2_normalize(x: &Tensor) -> Tensor {
    let n = x.norm_scalaropt_dim(2, &[1i64][..], true).clamp_min(1e-12);
    x / n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_length_sorted_and_unsorted_back() {
        let lens = [3, 9, 1, 9, 5];
        let b = length_sorted_batches(&lens, 2);
        assert_eq!(b, vec![vec![1, 3], vec![4, 0], vec![2]]);
        let rows: Vec<Tensor> = b
            .iter()
            .map(|batch| Tensor::from_slice(&batch.iter().map(|&i| i as f32).collect::<Vec<_>>()).view([-1, 1]))
            .collect();
        let back = unsort_rows(rows, &b, Device::Cpu);
        assert_eq!(Vec::<f32>::try_from(back.view([-1])).unwrap(), vec![0.0, 1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn dedup_maps_every_text_to_its_unique_row() {
        let (u, idx) = dedup(&["b", "a", "b", "c", "a"]);
        assert_eq!(u, vec!["b", "a", "c"]);
        assert_eq!(idx, vec![0, 1, 0, 2, 1]);
    }
}
