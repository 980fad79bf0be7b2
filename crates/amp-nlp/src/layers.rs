//! The dense thinc layers the pipeline uses, in plain f32 Rust (rows are tokens; the matrices are
//! small: 96 wide, at most 576 inputs).
use crate::error::Result;
use crate::msgpack::{Node, ThincModel};

/// Dot product with 8 independent partial sums (the compiler vectorises it; a single running sum
/// cannot be reordered). The summation order differs from numpy's BLAS as BLAS's differs between
/// machines: last-bit differences, which the oracle test shows do not change a decision.
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// `y = W x + b`, W stored (nO, nI) row-major as thinc's `Linear`.
pub(crate) fn affine(w: &[f32], b: &[f32], x: &[f32], y: &mut [f32]) {
    let n_i = x.len();
    for (o, yo) in y.iter_mut().enumerate() {
        *yo = dot(&w[o * n_i..(o + 1) * n_i], x) + b[o];
    }
}

/// `Y = X Wᵀ + b` for `rows` rows of X (row-major, `rows × nI`), W (nO, nI) row-major: one
/// GEMM (matrixmultiply's sgemm, AVX/FMA kernels where the CPU has them) instead of a dot product
/// per output. The summation order differs from [`affine`]'s as BLAS's differs between machines.
pub(crate) fn affine_rows(w: &[f32], b: &[f32], n_o: usize, x: &[f32], rows: usize) -> Vec<f32> {
    let mut y = vec![0f32; rows * n_o];
    if rows == 0 || n_o == 0 {
        return y; // an empty doc (no tokens): nothing to multiply
    }
    let n_i = x.len() / rows;
    assert_eq!(n_i * rows, x.len(), "affine_rows: X is rows × nI");
    assert_eq!(w.len(), n_o * n_i, "affine_rows: W is nO × nI");
    for r in y.chunks_exact_mut(n_o) {
        r.copy_from_slice(b);
    }
    // SAFETY: the pointers cover rows×nI (X), nO×nI (W, read as its transpose nI×nO via strides)
    // and rows×nO (Y) f32s, as the asserts above check; Y does not alias X or W.
    unsafe {
        matrixmultiply::sgemm(
            rows,
            n_i,
            n_o,
            1.0,
            x.as_ptr(),
            n_i as isize,
            1,
            w.as_ptr(),
            1,
            n_i as isize,
            1.0,
            y.as_mut_ptr(),
            n_o as isize,
            1,
        );
    }
    y
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
        if n_o == 0 || n_p == 0 || n_i == 0 {
            return Err(crate::error::field_err(
                &m.path,
                format!("{}.W", node.name),
                format!("shape {shape:?}, expected (nO, nP, nI), all > 0"),
            ));
        }
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
    /// `rows` rows at once (X row-major `rows × nI`; the result `rows × nO`), one GEMM.
    pub fn forward_rows(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let y = affine_rows(&self.lin.w, &self.lin.b, self.lin.n_o, x, rows);
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
