//! AdamW over named tensors (exactly `torch.optim.AdamW`'s update) with a state that saves and
//! loads bit-for-bit, and the learning-rate schedule (linear warmup, then constant or cosine).
use crate::Result;
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{Kind, Tensor};

/// AdamW hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay (the authors: 0).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

/// AdamW over a fixed list of named parameters.
///
/// Update (as `torch.optim.AdamW`, non-fused, `amsgrad=False`), for step `t`:
/// `p ← p·(1 − lr·wd)`; `m ← β1 m + (1−β1) g`; `v ← β2 v + (1−β2) g²`;
/// `p ← p − (lr / (1−β1^t)) · m / (√v / √(1−β2^t) + eps)`.
pub struct AdamW {
    pub config: AdamWConfig,
    names: Vec<String>,
    params: Vec<Tensor>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Number of updates done.
    pub t: u64,
}

impl AdamW {
    /// An optimizer over `params` (name, tensor); the state is kept in f32 (f64 for f64 params).
    pub fn new(params: Vec<(String, Tensor)>, config: AdamWConfig) -> Self {
        let (names, params): (Vec<_>, Vec<_>) = params.into_iter().unzip();
        let state = |p: &Tensor| {
            let kind = if p.kind() == Kind::Double { Kind::Double } else { Kind::Float };
            Tensor::zeros(p.size(), (kind, p.device()))
        };
        let m = params.iter().map(state).collect();
        let v = params.iter().map(state).collect();
        Self { config, names, params, m, v, t: 0 }
    }

    /// The parameters, in order.
    pub fn params(&self) -> &[Tensor] {
        &self.params
    }

    /// The first and second moments (`m` then `v`, in parameter order), sharing storage with
    /// the optimizer: what a data-parallel job broadcasts from rank 0 when it starts.
    pub fn moments(&self) -> Vec<Tensor> {
        self.m.iter().chain(&self.v).map(Tensor::shallow_clone).collect()
    }

    /// Parameter names, in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Zeroes the gradients.
    pub fn zero_grad(&mut self) {
        for p in self.params.iter_mut() {
            p.zero_grad();
        }
    }

    /// Global L2 norm of the gradients (f64; NaN/inf propagate).
    pub fn grad_norm(&self) -> f64 {
        let norms: Vec<Tensor> = self
            .params
            .iter()
            .map(|p| p.grad())
            .filter(|g| g.defined())
            .map(|g| g.to_kind(Kind::Double).square().sum(Kind::Double))
            .collect();
        if norms.is_empty() {
            return 0.0;
        }
        Tensor::stack(&norms, 0).sum(Kind::Double).sqrt().double_value(&[])
    }

    /// Multiplies every gradient by `s` (clipping, token-count normalisation).
    pub fn scale_grads(&mut self, s: f64) {
        for p in &self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.g_mul_scalar_(s);
            }
        }
    }

    /// One update with learning rate `lr`. Parameters without a gradient are left untouched.
    pub fn step(&mut self, lr: f64) {
        self.t += 1;
        let c = &self.config;
        let bc1 = 1.0 - c.beta1.powi(self.t as i32);
        let bc2_sqrt = (1.0 - c.beta2.powi(self.t as i32)).sqrt();
        tch::no_grad(|| {
            for ((p, m), v) in self.params.iter_mut().zip(self.m.iter_mut()).zip(self.v.iter_mut()) {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let g = g.to_kind(m.kind());
                if c.weight_decay != 0.0 {
                    let _ = p.g_mul_scalar_(1.0 - lr * c.weight_decay);
                }
                let _ = m.g_mul_scalar_(c.beta1);
                let _ = m.g_add_(&(&g * (1.0 - c.beta1)));
                let _ = v.g_mul_scalar_(c.beta2);
                let _ = v.g_add_(&(&g * &g * (1.0 - c.beta2)));
                let denom = v.sqrt() / bc2_sqrt + c.eps;
                let upd = (&*m / denom) * (lr / bc1);
                let _ = p.g_sub_(&upd.to_kind(p.kind()));
            }
        });
    }

    /// Saves the moments (safetensors) next to nothing else; `t` goes into the trainer state.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut named: Vec<(String, Tensor)> = Vec::new();
        for (n, (m, v)) in self.names.iter().zip(self.m.iter().zip(self.v.iter())) {
            named.push((format!("m.{n}"), m.to_device(tch::Device::Cpu)));
            named.push((format!("v.{n}"), v.to_device(tch::Device::Cpu)));
        }
        Tensor::write_safetensors(&named, path)?;
        Ok(())
    }

    /// Loads moments written by [`Self::save`]; every parameter must be present with its shape.
    pub fn load(&mut self, path: &Path, t: u64) -> Result<()> {
        let map: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(path)?.into_iter().collect();
        for (n, (m, v)) in self.names.iter().zip(self.m.iter_mut().zip(self.v.iter_mut())) {
            for (prefix, dst) in [("m", m), ("v", v)] {
                let key = format!("{prefix}.{n}");
                crate::checkpoint::restore(path, &map, &key, dst, "optimizer state for this parameter is missing")?;
            }
        }
        self.t = t;
        Ok(())
    }
}

/// The learning-rate schedule after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Constant (the authors' code).
    #[default]
    Constant,
    /// Cosine decay to 0 at the last step (the paper's text).
    Cosine,
}

/// Learning rate at optimizer step `step` (0-based) of `total`: linear warmup `lr·step/warmup`
/// for `step < warmup`, then `schedule` (cosine: `lr·½(1 + cos(π·(step−warmup)/(total−warmup)))`).
/// Matches `transformers.get_{constant,cosine}_schedule_with_warmup`.
pub fn learning_rate(lr: f64, schedule: Schedule, warmup: usize, total: usize, step: usize) -> f64 {
    if step < warmup {
        return lr * step as f64 / warmup.max(1) as f64;
    }
    match schedule {
        Schedule::Constant => lr,
        Schedule::Cosine => {
            let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
            lr * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two AdamW steps on a quadratic, against the closed-form torch update written out by hand:
    /// p0 = 1, g = 2p, lr = 0.1, wd = 0.01, β = (0.9, 0.999), eps = 1e-8.
    #[test]
    fn adamw_matches_torch_formula() {
        let p = Tensor::from_slice(&[1.0f64]).set_requires_grad(true);
        let mut opt = AdamW::new(vec![("p".into(), p.shallow_clone())], AdamWConfig { weight_decay: 0.01, ..Default::default() });
        let (mut pv, mut m, mut v) = (1.0f64, 0.0f64, 0.0f64);
        for t in 1..=2 {
            opt.zero_grad();
            let loss = (&p * &p).sum(Kind::Double);
            loss.backward();
            opt.step(0.1);
            let g = 2.0 * pv;
            pv *= 1.0 - 0.1 * 0.01;
            m = 0.9 * m + 0.1 * g;
            v = 0.999 * v + 0.001 * g * g;
            let denom = v.sqrt() / (1.0 - 0.999f64.powi(t)).sqrt() + 1e-8;
            pv -= 0.1 / (1.0 - 0.9f64.powi(t)) * m / denom;
            assert!((p.double_value(&[0]) - pv).abs() < 1e-15, "step {t}");
        }
    }

    #[test]
    fn schedules() {
        assert_eq!(learning_rate(1.0, Schedule::Constant, 10, 100, 0), 0.0);
        assert_eq!(learning_rate(1.0, Schedule::Constant, 10, 100, 5), 0.5);
        assert_eq!(learning_rate(1.0, Schedule::Constant, 10, 100, 50), 1.0);
        assert!((learning_rate(1.0, Schedule::Cosine, 10, 110, 60) - 0.5).abs() < 1e-12);
        assert!(learning_rate(1.0, Schedule::Cosine, 10, 110, 110).abs() < 1e-12);
    }
}
