//! spaCy's `Tagger.v2`: a softmax layer over the shared tok2vec output; the tag is the argmax
//! (softmax is monotonic, so the logits' argmax).
use crate::error::{field_err, NlpError, Result};
use crate::layers::Linear;
use crate::msgpack::ThincModel;
use std::path::Path;

/// The tagger.
#[derive(Debug, Clone)]
pub struct Tagger {
    pub labels: Vec<String>,
    out: Linear,
}

impl Tagger {
    /// Reads `tagger/model` and the labels of `tagger/cfg`.
    pub fn load(model: &Path, cfg: &Path) -> Result<Self> {
        let text = crate::error::read_file(cfg)?;
        let cfg_v: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| NlpError::Decode {
                path: cfg.to_path_buf(),
                format: "JSON",
                msg: e.to_string(),
            })?;
        let labels: Vec<String> = cfg_v
            .get("labels")
            .and_then(|l| l.as_array())
            .ok_or_else(|| field_err(cfg, "labels", "missing"))?
            .iter()
            .map(|l| l.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| field_err(cfg, "labels", "non-string label"))?;
        if labels.is_empty() {
            return Err(field_err(cfg, "labels", "empty"));
        }
        let m = ThincModel::read(model)?;
        let node = m
            .named("softmax")
            .next()
            .ok_or_else(|| field_err(model, "softmax", "missing"))?;
        let n_i = node
            .param("W")
            .and_then(|w| w.shape.get(1).copied())
            .ok_or_else(|| field_err(model, "softmax.W", "missing"))?;
        let out = Linear::load(&m, node, labels.len(), n_i)?;
        Ok(Tagger { labels, out })
    }

    /// Input width.
    pub fn input_width(&self) -> usize {
        self.out.n_i
    }

    /// The tag index of each token vector.
    pub fn predict(&self, tokvecs: &[Vec<f32>]) -> Vec<usize> {
        let x: Vec<f32> = tokvecs.iter().flatten().copied().collect();
        self.predict_rows(&x, tokvecs.len())
    }

    /// The tag index of each of `rows` token vectors stored one after another in `x`, as one GEMM.
    pub fn predict_rows(&self, x: &[f32], rows: usize) -> Vec<usize> {
        let y = crate::layers::affine_rows(&self.out.wt, &self.out.b, self.out.n_o, x, rows);
        y.chunks_exact(self.out.n_o.max(1))
            .map(|y| {
                let mut best = 0;
                for (i, &v) in y.iter().enumerate() {
                    if v > y[best] {
                        best = i;
                    }
                }
                best
            })
            .collect()
    }
}
