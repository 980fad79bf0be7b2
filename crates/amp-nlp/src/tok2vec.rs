//! spaCy's `Tok2Vec.v2` = `MultiHashEmbed.v2` + `MaxoutWindowEncoder.v2` (the shared `tok2vec`
//! component of en_core_web_sm).
//!
//! * Embed: each token's attributes (NORM, PREFIX, SUFFIX, SHAPE, SPACY, IS_SPACE as `u64` string
//!   ids / booleans) are hashed with MurmurHash3_x86_128 (one seed per table) into 4 rows of that
//!   attribute's table, summed; the tables' outputs are concatenated, then Maxout + LayerNorm.
//! * Encode: `depth` residual blocks of [window of ±1 tokens concatenated, Maxout, LayerNorm]. As
//!   thinc's `with_array(pad=depth)` does, the sequence is padded with `depth` zero rows on each
//!   side and the padding rows go through the blocks too (they reach the edge tokens).
use crate::error::{field_err, NlpError, Result};
use crate::hash::hash_u64;
use crate::layers::{LayerNorm, Maxout};
use crate::msgpack::ThincModel;
use std::path::Path;

/// A token attribute the embedding reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attr {
    Norm,
    Prefix,
    Suffix,
    Shape,
    Spacy,
    IsSpace,
}

impl Attr {
    fn parse(s: &str) -> Option<Attr> {
        Some(match s {
            "NORM" => Attr::Norm,
            "PREFIX" => Attr::Prefix,
            "SUFFIX" => Attr::Suffix,
            "SHAPE" => Attr::Shape,
            "SPACY" => Attr::Spacy,
            "IS_SPACE" => Attr::IsSpace,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
struct HashEmbed {
    column: usize,
    seed: u32,
    n_v: usize,
    table: Vec<f32>,
}

/// The tok2vec model.
#[derive(Debug, Clone)]
pub struct Tok2Vec {
    pub attrs: Vec<Attr>,
    embeds: Vec<HashEmbed>,
    mix: Maxout,
    mix_norm: LayerNorm,
    blocks: Vec<(Maxout, LayerNorm)>,
    window: usize,
    pad: usize,
    width: usize,
}

fn attr_u64(v: Option<&rmpv::Value>) -> Option<u64> {
    v.and_then(rmpv::Value::as_u64)
}

impl Tok2Vec {
    /// Reads `tok2vec/model`.
    pub fn load(path: &Path) -> Result<Self> {
        let m = ThincModel::read(path)?;
        let fx = m
            .named("extract_features")
            .next()
            .ok_or_else(|| field_err(path, "extract_features", "no feature extractor node"))?;
        let cols = fx
            .attr("columns")
            .and_then(rmpv::Value::as_array)
            .ok_or_else(|| field_err(path, "extract_features.columns", "missing"))?;
        let mut attrs = Vec::new();
        for c in cols {
            let name = crate::msgpack::as_text(c).unwrap_or("?");
            attrs.push(Attr::parse(name).ok_or_else(|| NlpError::Unsupported {
                path: path.to_path_buf(),
                field: "extract_features.columns".into(),
                what: format!("attribute {name}"),
            })?);
        }
        let mut embeds = Vec::new();
        for (i, n) in m.named("hashembed").enumerate() {
            let f = |k: &str| format!("hashembed[{i}].{k}");
            let column = attr_u64(n.attr("column"))
                .ok_or_else(|| field_err(path, f("column"), "missing"))?
                as usize;
            let seed = attr_u64(n.attr("seed"))
                .ok_or_else(|| field_err(path, f("seed"), "missing"))?
                as u32;
            let e = n
                .param("E")
                .ok_or_else(|| field_err(path, f("E"), "missing"))?;
            if e.shape.len() != 2 {
                return Err(field_err(path, f("E"), "not 2-d"));
            }
            if column >= attrs.len() {
                return Err(field_err(path, f("column"), "beyond the extracted columns"));
            }
            if e.shape[0] == 0 || e.shape[1] == 0 {
                return Err(field_err(path, f("E"), "empty table"));
            }
            embeds.push(HashEmbed {
                column,
                seed,
                n_v: e.shape[0],
                table: e.data.clone(),
            });
        }
        if embeds.is_empty() {
            return Err(field_err(path, "hashembed", "no embedding tables"));
        }
        let width = m
            .nodes
            .iter()
            .find_map(|n| n.param("E"))
            .map(|e| e.shape[1])
            .unwrap_or(0);
        if embeds.iter().any(|e| e.table.len() != e.n_v * width) {
            return Err(field_err(path, "hashembed.E", "tables of different widths"));
        }
        let maxouts: Vec<_> = m.named("maxout").collect();
        let norms: Vec<_> = m.named("layernorm").collect();
        if maxouts.len() < 2 || maxouts.len() != norms.len() {
            return Err(field_err(
                path,
                "maxout",
                "expected one embed maxout + layernorm and one per encoder block",
            ));
        }
        let mix = Maxout::load(&m, maxouts[0])?;
        if mix.n_i() != width * embeds.len() || mix.n_o() != width {
            return Err(field_err(
                path,
                "maxout[0].W",
                "does not mix the concatenated tables",
            ));
        }
        let mix_norm = LayerNorm::load(&m, norms[0], width)?;
        let window = m
            .named("expand_window")
            .next()
            .and_then(|n| attr_u64(n.attr("window_size")))
            .unwrap_or(1) as usize;
        let mut blocks = Vec::new();
        for (i, (mx, ln)) in maxouts[1..].iter().zip(&norms[1..]).enumerate() {
            let mo = Maxout::load(&m, mx)?;
            if mo.n_i() != width * (2 * window + 1) || mo.n_o() != width {
                return Err(field_err(
                    path,
                    format!("maxout[{}].W", i + 1),
                    "not a window encoder block",
                ));
            }
            blocks.push((mo, LayerNorm::load(&m, ln, width)?));
        }
        let pad = m
            .nodes
            .iter()
            .find(|n| n.name.starts_with("with_array(residual"))
            .and_then(|n| attr_u64(n.attr("pad")))
            .map(|p| p as usize)
            .unwrap_or(window * blocks.len());
        Ok(Tok2Vec {
            attrs,
            embeds,
            mix,
            mix_norm,
            blocks,
            window,
            pad,
            width,
        })
    }

    /// Output width.
    pub fn width(&self) -> usize {
        self.width
    }

    /// The embedding of one token's feature row (before the encoder).
    pub fn embed(&self, feats: &[u64]) -> Vec<f32> {
        let mut cat = vec![0f32; self.width * self.embeds.len()];
        self.embed_tables(feats, &mut cat);
        let mut y = self.mix.forward(&cat);
        self.mix_norm.forward(&mut y);
        y
    }

    /// The concatenated hash-embedding rows of one token (the mixing layer's input).
    fn embed_tables(&self, feats: &[u64], cat: &mut [f32]) {
        let w = self.width;
        for (k, e) in self.embeds.iter().enumerate() {
            let keys = hash_u64(feats[e.column], e.seed);
            let out = &mut cat[k * w..(k + 1) * w];
            for key in keys {
                let row = (key as usize) % e.n_v;
                for (o, v) in out.iter_mut().zip(&e.table[row * w..(row + 1) * w]) {
                    *o += v;
                }
            }
        }
    }

    /// Token vectors (n rows of `width`) for the feature rows of one doc ([`forward_many`] of
    /// one doc).
    ///
    /// [`forward_many`]: Self::forward_many
    pub fn forward(&self, feats: &[Vec<u64>]) -> Vec<Vec<f32>> {
        self.forward_many(&[feats]).pop().unwrap_or_default()
    }

    /// Token vectors of several docs at once, as thinc's `with_array(pad)` runs a batch: the
    /// docs' rows in one array, `pad` zero rows before the first doc, between docs and after the
    /// last, each layer one GEMM over the whole array ([`Maxout::forward_rows`]) and the padding
    /// rows going through the blocks too. A token's receptive field is `window × depth` = `pad`
    /// rows each side, so it never reaches the next doc: each doc gets the vectors it gets alone
    /// (the same bits: a GEMM row does not depend on the other rows), and the weights are packed
    /// for the GEMMs once per batch instead of once per doc.
    pub fn forward_many(&self, docs: &[&[Vec<u64>]]) -> Vec<Vec<Vec<f32>>> {
        let w = self.width;
        let pad = self.pad;
        if pad < self.window * self.blocks.len() && docs.len() > 1 {
            // a padding narrower than the receptive field would let docs see each other
            return docs.iter().map(|d| self.forward(d)).collect();
        }
        let total: usize = docs.iter().map(|d| d.len()).sum();
        if total == 0 {
            return docs.iter().map(|_| Vec::new()).collect();
        }
        // the mixing layer over every token's concatenated table rows, all docs at once
        let cw = w * self.embeds.len();
        let mut cat = vec![0f32; total * cw];
        for (f, row) in docs.iter().copied().flatten().zip(cat.chunks_exact_mut(cw)) {
            self.embed_tables(f, row);
        }
        let mixed = self.mix.forward_rows(&cat, total);
        // the padded array: `pad` rows, doc, `pad` rows, doc, ..., `pad` rows (empty docs take no
        // rows); `starts[d]` = the array row of doc d's first token
        let mut starts = Vec::with_capacity(docs.len());
        let mut len = pad;
        for d in docs {
            starts.push(len);
            if !d.is_empty() {
                len += d.len() + pad;
            }
        }
        // `nw` zero rows more on each side of the array: the window of array row i is then the
        // 2·nw + 1 consecutive rows of `x` from row i, read in place by the GEMM (rows overlap)
        let nw = self.window;
        let mut x = vec![0f32; (len + 2 * nw) * w];
        let mut src = mixed.chunks_exact(w);
        for (d, &s) in docs.iter().zip(&starts) {
            for (dst, m) in x[(nw + s) * w..(nw + s + d.len()) * w]
                .chunks_exact_mut(w)
                .zip(&mut src)
            {
                dst.copy_from_slice(m);
                self.mix_norm.forward(dst);
            }
        }
        for (mo, ln) in &self.blocks {
            let mut y = mo.forward_rows_strided(&x, len, w);
            for (out, yr) in x[nw * w..(nw + len) * w]
                .chunks_exact_mut(w)
                .zip(y.chunks_exact_mut(w))
            {
                ln.forward(yr);
                for (a, b) in out.iter_mut().zip(yr.iter()) {
                    *a += b;
                }
            }
        }
        docs.iter()
            .zip(&starts)
            .map(|(d, &s)| {
                x[(nw + s) * w..(nw + s + d.len()) * w]
                    .chunks_exact(w)
                    .map(|r| r.to_vec())
                    .collect()
            })
            .collect()
    }
}
