//! Gradient checkpointing (activation recomputation, Chen et al. 2016, "Training Deep Nets with
//! Sublinear Memory Cost") for a chain of segments, e.g. one decoder layer each.
//!
//! tch 0.24 has no custom autograd functions and no tensor hooks, so the recomputation is driven
//! from outside autograd with one `backward` per segment (the "surrogate" form of the chain
//! rule: for `y = f(x)` and an upstream gradient `g = ∂L/∂y`, back-propagating the scalar
//! `Σ g ⊙ f(x)` from a leaf copy of `x` accumulates exactly `∂L/∂θ` into the segment's
//! parameters and leaves `∂L/∂x` in the leaf's `.grad`):
//!
//! 1. every segment runs once under `no_grad`, keeping only its input state (e.g. `[B, T, D]`
//!    hidden states per layer) — no graph;
//! 2. the head (final norm, `lm_head`, log-probs, the caller's surrogate) runs with a graph from
//!    a leaf copy of the last state, and is back-propagated;
//! 3. from the last segment to the first: rerun it with a graph from a leaf copy of its saved
//!    input, back-propagate `Σ g ⊙ output`, read the input's gradient, drop the graph;
//! 4. if the stem (what produced the first state, e.g. embeddings) carries a graph, it gets the
//!    last gradient the same way.
//!
//! Peak activation memory is one segment's graph plus the saved states, for one extra forward.
//! Dropout masks agree between the two forwards of a segment: the torch generator is re-seeded
//! before each with a seed derived from one draw of the (run-seeded) global generator and the
//! segment index.
use tch::{Kind, Tensor};

/// One segment of a checkpointed chain: the chain state (a few tensors) → the next state.
pub type Segment<'a> = Box<dyn Fn(&[Tensor]) -> Vec<Tensor> + 'a>;

fn leaves(xs: &[Tensor]) -> Vec<Tensor> {
    xs.iter().map(|x| x.detach().set_requires_grad(x.is_floating_point())).collect()
}

/// `Σ_j Σ (y_j ⊙ g_j)` over the pairs whose gradient is defined, `None` when none is.
fn surrogate(ys: &[Tensor], gs: &[Tensor]) -> Option<Tensor> {
    ys.iter()
        .zip(gs)
        .filter(|(y, g)| g.defined() && y.requires_grad())
        .map(|(y, g)| (y * g.to_kind(y.kind())).sum(y.kind()).to_kind(Kind::Double))
        .reduce(|a, b| a + b)
}

fn seed_of(base: i64, i: usize) -> i64 {
    (amp_io::rng::mix(&[base as u64, i as u64]) >> 1) as i64
}

/// Back-propagates `head(segments(stem))` with every segment's activations recomputed in the
/// backward pass (see the module docs) and returns the head's value (detached).
///
/// `head` must return a scalar (the caller's surrogate loss). The gradients accumulate into the
/// parameters the segments, the head and the stem's graph use, exactly as one `backward` of the
/// uncheckpointed computation would (up to float rounding of the sums of per-segment terms).
pub fn backward(stem: &[Tensor], segments: &[Segment<'_>], head: impl FnOnce(&[Tensor]) -> Tensor) -> Tensor {
    let base = Tensor::randint(i64::MAX, [1], (Kind::Int64, tch::Device::Cpu)).int64_value(&[0]);
    // 1. forward without a graph, keeping each segment's input
    let mut states: Vec<Vec<Tensor>> = Vec::with_capacity(segments.len() + 1);
    states.push(stem.iter().map(|t| t.detach()).collect());
    tch::no_grad(|| {
        for (i, seg) in segments.iter().enumerate() {
            tch::manual_seed(seed_of(base, i));
            let next = seg(states.last().expect("non-empty"));
            states.push(next);
        }
    });
    // 2. the head, from a leaf copy of the last state
    let last = leaves(&states.pop().expect("non-empty"));
    let out = head(&last);
    let value = out.detach();
    if out.requires_grad() {
        out.backward();
    }
    let mut grads: Vec<Tensor> = last.iter().map(|t| t.grad()).collect();
    drop(last);
    // 3. segments in reverse, each rerun with a graph and back-propagated at once
    for (i, seg) in segments.iter().enumerate().rev() {
        let input = leaves(&states.pop().expect("one state per segment"));
        tch::manual_seed(seed_of(base, i));
        let ys = seg(&input);
        if let Some(s) = surrogate(&ys, &grads) {
            s.backward();
        }
        drop(ys);
        grads = input.iter().map(|t| if t.requires_grad() { t.grad() } else { Tensor::new() }).collect();
    }
    // 4. the stem's own graph, if any
    if let Some(s) = surrogate(stem, &grads) {
        s.backward();
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A three-segment chain of tanh layers with dropout: checkpointed gradients equal one
    /// plain backward of the same computation with the same dropout masks.
    #[test]
    fn checkpointed_gradients_equal_the_plain_backward() {
        let w: Vec<Tensor> = (0..3).map(|i| (Tensor::randn([5, 5], (Kind::Double, tch::Device::Cpu)) * (0.3 + 0.1 * i as f64)).set_requires_grad(true)).collect();
        let x0 = Tensor::randn([4, 5], (Kind::Double, tch::Device::Cpu)).set_requires_grad(true);
        let seg = |i: usize| -> Segment<'_> {
            let w = &w[i];
            Box::new(move |s: &[Tensor]| vec![s[0].matmul(w).tanh().dropout(0.3, true), s[1].shallow_clone() * 2.0])
        };
        let segments: Vec<Segment<'_>> = (0..3).map(seg).collect();
        let head = |s: &[Tensor]| (s[0].pow_tensor_scalar(2).sum(Kind::Double) + s[1].sum(Kind::Double)).to_kind(Kind::Float);
        // checkpointed
        let stem = [x0.sin(), x0.cos()];
        tch::manual_seed(3);
        let v1 = backward(&stem, &segments, head);
        let g1: Vec<Tensor> = w.iter().chain([&x0]).map(|t| t.grad().copy()).collect();
        for t in w.iter().chain([&x0]) {
            let _ = t.grad().zero_();
        }
        // plain, with the same per-segment seeds
        tch::manual_seed(3);
        let base = Tensor::randint(i64::MAX, [1], (Kind::Int64, tch::Device::Cpu)).int64_value(&[0]);
        let mut s = vec![x0.sin(), x0.cos()];
        for (i, f) in segments.iter().enumerate() {
            tch::manual_seed(seed_of(base, i));
            s = f(&s);
        }
        let v0 = head(&s);
        v0.backward();
        assert!((v0.double_value(&[]) - v1.double_value(&[])).abs() < 1e-5);
        for (a, b) in w.iter().chain([&x0]).map(|t| t.grad()).zip(&g1) {
            let d = (&a - b).abs().max().double_value(&[]);
            assert!(d < 1e-12 && a.abs().max().double_value(&[]) > 1e-3, "{d}");
        }
    }
}
