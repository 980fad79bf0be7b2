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

/// `y = W x + b` from `wt` = Wᵀ stored (nI, nO) row-major ([`transpose`]): `y` accumulates
/// `x[i] · Wᵀ[i]` row by row, a loop over contiguous outputs that the compiler vectorises
/// without the horizontal sums of one dot product per output (the parser's per-state scores).
/// Each output is summed over `i` in order, so every CPU gives the same bits.
pub(crate) fn affine_t(wt: &[f32], b: &[f32], x: &[f32], y: &mut [f32]) {
    let n_o = y.len();
    y.fill(0.0);
    for (xi, row) in x.iter().zip(wt.chunks_exact(n_o)) {
        for (yo, w) in y.iter_mut().zip(row) {
            *yo += xi * w;
        }
    }
    for (yo, bo) in y.iter_mut().zip(b) {
        *yo += bo;
    }
}

/// `W` (nO, nI) row-major as its transpose (nI, nO) row-major: the layout [`affine_rows`] reads,
/// so that the GEMM packs the weights from contiguous rows instead of gathering columns.
pub(crate) fn transpose(w: &[f32], n_o: usize, n_i: usize) -> Vec<f32> {
    let mut t = vec![0f32; w.len()];
    for o in 0..n_o {
        for i in 0..n_i {
            t[i * n_o + o] = w[o * n_i + i];
        }
    }
    t
}

/// `Y = X Wᵀ + b` for `rows` rows of X (row-major, `rows × nI`), with `wt` = Wᵀ stored (nI, nO)
/// row-major ([`transpose`]): one GEMM (matrixmultiply's sgemm, AVX/FMA kernels where the CPU has
/// them) instead of a dot product per output. The summation order differs from [`affine`]'s as
/// BLAS's differs between machines.
pub(crate) fn affine_rows(wt: &[f32], b: &[f32], n_o: usize, x: &[f32], rows: usize) -> Vec<f32> {
    if rows == 0 {
        return Vec::new(); // an empty doc (no tokens): nothing to multiply
    }
    let n_i = x.len() / rows;
    assert_eq!(n_i * rows, x.len(), "affine_rows: X is rows × nI");
    affine_rows_strided(wt, b, n_o, x, rows, n_i, n_i)
}

/// [`affine_rows`] with row `r` of X at `x[r · stride ..][.. n_i]`: rows may overlap (`stride <
/// n_i`), so a window of consecutive rows of a matrix is read in place, without copying it into
/// a wider one (the tok2vec encoder's ±1-token windows). A row's result does not depend on the
/// other rows, nor on how many there are (matrixmultiply sums each output over K in the same
/// blocks whatever M is), so a batch of docs gives each doc the bits it gets alone.
pub(crate) fn affine_rows_strided(
    wt: &[f32],
    b: &[f32],
    n_o: usize,
    x: &[f32],
    rows: usize,
    n_i: usize,
    stride: usize,
) -> Vec<f32> {
    let mut y = vec![0f32; rows * n_o];
    if rows == 0 || n_o == 0 {
        return y;
    }
    assert!(
        x.len() >= (rows - 1) * stride + n_i,
        "affine_rows: X holds rows × stride"
    );
    assert_eq!(wt.len(), n_o * n_i, "affine_rows: Wᵀ is nI × nO");
    assert_eq!(b.len(), n_o, "affine_rows: b is nO");
    for r in y.chunks_exact_mut(n_o) {
        r.copy_from_slice(b);
    }
    // SAFETY: X's rows lie inside `x` ((rows-1)·stride + nI ≤ len, asserted), Wᵀ is nI×nO and Y
    // rows×nO f32s; Y is a fresh buffer, aliasing neither (overlapping rows of X are only read).
    unsafe {
        matrixmultiply::sgemm(
            rows,
            n_i,
            n_o,
            1.0,
            x.as_ptr(),
            stride as isize,
            1,
            wt.as_ptr(),
            n_o as isize,
            1,
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
    /// `w` transposed, (nI, nO) row-major, for the GEMM of [`affine_rows`].
    pub wt: Vec<f32>,
    pub b: Vec<f32>,
    pub n_o: usize,
    pub n_i: usize,
}

impl Linear {
    /// W (nO, nI) row-major and b (nO).
    pub fn new(w: Vec<f32>, b: Vec<f32>, n_o: usize, n_i: usize) -> Self {
        let wt = transpose(&w, n_o, n_i);
        Linear { w, wt, b, n_o, n_i }
    }
    pub(crate) fn load(m: &ThincModel, node: &Node, n_o: usize, n_i: usize) -> Result<Self> {
        Ok(Linear::new(
            m.param(node, "W", &[n_o, n_i])?.data.clone(),
            m.param(node, "b", &[n_o])?.data.clone(),
            n_o,
            n_i,
        ))
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
            lin: Linear::new(w, b, n_o * n_p, n_i),
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
        self.forward_rows_strided(x, rows, self.n_i())
    }
    /// [`forward_rows`](Self::forward_rows) with row `r` of X at `x[r · stride ..]`
    /// ([`affine_rows_strided`]: overlapping rows allowed).
    pub fn forward_rows_strided(&self, x: &[f32], rows: usize, stride: usize) -> Vec<f32> {
        let (n_o, n_i) = (self.lin.n_o, self.lin.n_i);
        let y = affine_rows_strided(&self.lin.wt, &self.lin.b, n_o, x, rows, n_i, stride);
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
