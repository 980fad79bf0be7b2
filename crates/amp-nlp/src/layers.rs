//! The dense thinc layers the pipeline uses, in plain f32 Rust (rows are tokens; the matrices are
//! small: 96 wide, at most 576 inputs).
use crate::error::Result;
use crate::msgpack::{Node, ThincModel};

/// `y = W x + b`, W stored (nO, nI) row-major as thinc's `Linear`.
pub(crate) fn affine(w: &[f32], b: &[f32], x: &[f32], y: &mut [f32]) {
    let n_i = x.len();
    for (o, yo) in y.iter_mut().enumerate() {
        let row = &w[o * n_i..(o + 1) * n_i];
        let mut s = 0f32;
        for (a, c) in row.iter().zip(x) {
            s += a * c;
        }
        *yo = s + b[o];
    }
}

/// thinc `Linear`: W (nO, nI), b (nO).
#[derive(Debug, Clone)]
pub struct Linear {
    pub w: Vec<f32>,
    pub b: Vec<f32>,
    pub n_o: usize,
    pub n_i: usize,
}

impl Linear {
    pub(crate) fn load(m: &ThincModel, node: &Node, n_o: usize, n_i: usize) -> Result<Self> {
        Ok(Linear {
            w: m.param(node, "W", &[n_o, n_i])?.data.clone(),
            b: m.param(node, "b", &[n_o])?.data.clone(),
            n_o,
            n_i,
        })
    }
    /// One row.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let mut y = vec![0f32; self.n_o];
        affine(&self.w, &self.b, x, &mut y);
        y
    }
}

/// thinc `Maxout`: W (nO, nP, nI), b (nO, nP); output the max over the nP pieces.
#[derive(Debug, Clone)]
pub struct Maxout {
    pub lin: Linear,
    pub n_p: usize,
}

impl Maxout {
    pub(crate) fn load(m: &ThincModel, node: &Node) -> Result<Self> {
        let shape = node.param("W").map(|a| a.shape.clone()).unwrap_or_default();
        let (n_o, n_p, n_i) = match shape.as_slice() {
            &[o, p, i] => (o, p, i),
            _ => (0, 0, 0),
        };
        let w = m.param(node, "W", &[n_o, n_p, n_i])?.data.clone();
        let b = m.param(node, "b", &[n_o, n_p])?.data.clone();
        Ok(Maxout {
            lin: Linear {
                w,
                b,
                n_o: n_o * n_p,
                n_i,
            },
            n_p,
        })
    }
    pub fn n_o(&self) -> usize {
        self.lin.n_o / self.n_p
    }
    pub fn n_i(&self) -> usize {
        self.lin.n_i
    }
    /// One row.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let y = self.lin.forward(x);
        y.chunks_exact(self.n_p)
            .map(|p| p.iter().copied().fold(f32::NEG_INFINITY, f32::max))
            .collect()
    }
}

/// thinc `LayerNorm`: `(x - mean) / sqrt(var + 1e-8) * G + b` over the row.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    pub g: Vec<f32>,
    pub b: Vec<f32>,
}

impl LayerNorm {
    pub(crate) fn load(m: &ThincModel, node: &Node, n: usize) -> Result<Self> {
        Ok(LayerNorm {
            g: m.param(node, "G", &[n])?.data.clone(),
            b: m.param(node, "b", &[n])?.data.clone(),
        })
    }
    /// In place on one row.
    pub fn forward(&self, x: &mut [f32]) {
        let n = x.len() as f64;
        let mu = x.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = x.iter().map(|&v| (v as f64 - mu).powi(2)).sum::<f64>() / n;
        let inv = ((var as f32) + 1e-8).powf(-0.5);
        let mu = mu as f32;
        for ((v, g), b) in x.iter_mut().zip(&self.g).zip(&self.b) {
            *v = (*v - mu) * inv * g + b;
        }
    }
}
