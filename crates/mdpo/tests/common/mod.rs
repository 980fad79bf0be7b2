//! A tiny f64 byte-level language model implementing `mdpo::PreferenceModel`, for tests only.
//!
//! `log π(x_t | x_<t)` depends on the previous byte and on a pooled embedding of the prompt:
//! `h = emb[x_{t−1}] + mean(emb[prompt]) ; h += h·A (adapter, if any) ; dropout ; logits = h·W + b`.
//! Response tokens of gpt turn r weigh `1 + c·r`; prompt tokens weigh 0.
#![allow(dead_code)]
use mdpo::{MdpoConfig, MdpoError, PreferenceExample, PreferenceModel, ResponseLogps, Result};
use std::path::Path;
use std::cell::Cell;
use std::ops::Range;
use tch::{nn, Device, Kind, Tensor};

pub struct TinyLm {
    pub vs: nn::VarStore,
    emb: Tensor,
    out_w: Tensor,
    out_b: Tensor,
    adapter: Option<Tensor>,
    adapters_on: Cell<bool>,
    pub dropout: f64,
    pub round_weight: f64,
}

/// One level: flat tokens of every example.
pub struct Level {
    prev: Tensor,
    next: Tensor,
    weight: Tensor,
    slot: Tensor,
    prompt: Tensor, // [B, D]-pooling indices: (bytes, example) pairs
    prompt_slot: Tensor,
    poison: Tensor, // [B] 1.0 where the example id contains "nan"
}

pub struct TinyBatch {
    levels: Vec<Level>,
    b: usize,
}

const D: i64 = 8;

impl TinyLm {
    /// `adapters`: base weights frozen and a zero-initialised trainable adapter.
    pub fn new(seed: i64, adapters: bool, dropout: f64) -> Self {
        // A local RNG, not torch's global one: tests run in parallel threads.
        let mut state = seed as u64 ^ 0x5DEE_CE66_D1CE_5EED;
        let mut randn = |shape: [i64; 2]| {
            let n = (shape[0] * shape[1]) as usize;
            let v: Vec<f64> = (0..n)
                .map(|_| {
                    // sum of 4 uniforms, centred: roughly normal with variance 1/3
                    (0..4)
                        .map(|_| {
                            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                            (state >> 11) as f64 / (1u64 << 53) as f64
                        })
                        .sum::<f64>()
                        - 2.0
                })
                .collect();
            Tensor::from_slice(&v).reshape(shape)
        };
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let emb = root.add("emb", randn([256, D]) * 0.5, !adapters);
        let out_w = (&root / "out").add("weight", randn([D, 256]) * 0.5, !adapters);
        let out_b = (&root / "out").add("bias", Tensor::zeros([256], (Kind::Double, Device::Cpu)), !adapters);
        let adapter = adapters.then(|| root.add("adapter", Tensor::zeros([D, D], (Kind::Double, Device::Cpu)), true));
        Self { vs, emb, out_w, out_b, adapter, adapters_on: Cell::new(true), dropout, round_weight: 0.05 }
    }

    pub fn weights(&self) -> Vec<(String, Tensor)> {
        let mut v: Vec<_> = self.vs.variables().into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

fn encode_level(examples: &[PreferenceExample], k: usize, c: f64) -> Level {
    let (mut prev, mut next, mut weight, mut slot, mut prompt, mut pslot, mut poison) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for (b, ex) in examples.iter().enumerate() {
        poison.push(if ex.id.contains("nan") { 1.0 } else { 0.0 });
        let mut last = 0u8;
        let mut round = 0usize;
        for turn in &ex.responses[k] {
            let bytes = turn.value.as_bytes();
            if turn.from == "human" {
                for &x in bytes {
                    prompt.push(x as i64);
                    pslot.push(b as i64);
                }
            } else {
                for &x in bytes {
                    prev.push(last as i64);
                    next.push(x as i64);
                    weight.push(1.0 + c * round as f64);
                    slot.push(b as i64);
                    last = x;
                }
                round += 1;
                continue;
            }
            last = *bytes.last().unwrap_or(&0);
        }
    }
    Level {
        prev: Tensor::from_slice(&prev),
        next: Tensor::from_slice(&next),
        weight: Tensor::from_slice(&weight),
        slot: Tensor::from_slice(&slot),
        prompt: Tensor::from_slice(&prompt),
        prompt_slot: Tensor::from_slice(&pslot),
        poison: Tensor::from_slice(&poison),
    }
}

impl PreferenceModel for TinyLm {
    type Batch = TinyBatch;
    type Error = MdpoError;

    fn encode(&self, examples: &[PreferenceExample]) -> Result<TinyBatch> {
        let k = examples.first().map(|e| e.levels()).unwrap_or(0);
        if examples.iter().any(|e| e.levels() != k) {
            return Err(MdpoError::Model("mixed K".into()));
        }
        Ok(TinyBatch { levels: (0..k).map(|l| encode_level(examples, l, self.round_weight)).collect(), b: examples.len() })
    }

    fn batch_len(&self, batch: &TinyBatch) -> usize {
        batch.b
    }

    fn response_logps(&self, batch: &TinyBatch, levels: Range<usize>, train: bool) -> Result<ResponseLogps> {
        let b = batch.b as i64;
        let (mut s, mut w, mut n) = (vec![], vec![], vec![]);
        for l in levels {
            let lv = &batch.levels[l];
            let pooled = Tensor::zeros([b, D], (Kind::Double, Device::Cpu))
                .index_add(0, &lv.prompt_slot, &self.emb.index_select(0, &lv.prompt));
            let counts = Tensor::zeros([b], (Kind::Double, Device::Cpu))
                .index_add(0, &lv.prompt_slot, &Tensor::ones([lv.prompt.size()[0]], (Kind::Double, Device::Cpu)))
                .clamp_min(1.0);
            let pooled = pooled / counts.unsqueeze(1);
            let mut h = self.emb.index_select(0, &lv.prev) + pooled.index_select(0, &lv.slot);
            if let (Some(a), true) = (&self.adapter, self.adapters_on.get()) {
                h = &h + h.matmul(a);
            }
            let h = h.dropout(self.dropout, train);
            let logits = h.matmul(&self.out_w) + &self.out_b;
            let lp = logits.log_softmax(-1, Kind::Double).gather(1, &lv.next.unsqueeze(1), false).squeeze_dim(1);
            let per = Tensor::zeros([b], (Kind::Double, Device::Cpu)).index_add(0, &lv.slot, &(lp * &lv.weight));
            let nan = Tensor::full([b], f64::NAN, (Kind::Double, Device::Cpu));
            let per = per.where_self(&lv.poison.lt(0.5), &nan);
            s.push(per);
            w.push(Tensor::zeros([b], (Kind::Double, Device::Cpu)).index_add(0, &lv.slot, &lv.weight));
            n.push(Tensor::zeros([b], (Kind::Double, Device::Cpu)).index_add(
                0,
                &lv.slot,
                &Tensor::ones([lv.slot.size()[0]], (Kind::Double, Device::Cpu)),
            ));
        }
        Ok(ResponseLogps { sum: Tensor::stack(&s, 0), weight: Tensor::stack(&w, 0), tokens: Tensor::stack(&n, 0) })
    }

    fn trainable_vars(&self) -> &nn::VarStore {
        &self.vs
    }

    fn set_adapters_enabled(&self, enabled: bool) -> Result<()> {
        if self.adapter.is_none() {
            return Err(MdpoError::Config("no adapters".into()));
        }
        self.adapters_on.set(enabled);
        Ok(())
    }

    fn encoding_fingerprint(&self) -> String {
        format!("tiny-bytes-v1 c={}", self.round_weight)
    }

    fn set_round_weight(&mut self, coef: f64) -> Result<()> {
        self.round_weight = coef;
        Ok(())
    }
}

fn conv(prompt: &str, answer: &str) -> mdpo::Conversation {
    vec![
        mdpo::Turn { from: "human".into(), value: prompt.into() },
        mdpo::Turn { from: "gpt".into(), value: answer.into() },
    ]
}

/// `n` K-level examples: level k of example i answers with letters drawn further down the
/// alphabet as k grows, so the ranking is learnable. Two-round dialogues on odd i.
pub fn synthetic(n: usize, k: usize) -> Vec<PreferenceExample> {
    (0..n)
        .map(|i| {
            let prompt = format!("Q{i}: describe");
            let responses = (0..k)
                .map(|l| {
                    let ans: String =
                        (0..6 + (i % 3)).map(|t| (b'a' + ((l * 5 + (t * 7 + i) % 4) as u8)) as char).collect();
                    let mut c = conv(&prompt, &ans);
                    if i % 2 == 1 {
                        c.extend(conv("and more?", &ans[..3]));
                    }
                    c
                })
                .collect();
            PreferenceExample { id: format!("ex{i}"), image: None, responses }
        })
        .collect()
}

/// The trainer config the tests share: K levels, batch 2, 2 epochs, no clipping, no plots.
pub fn config(dir: &Path, k: usize) -> MdpoConfig {
    MdpoConfig {
        levels: k,
        lr: 1e-2,
        warmup_steps: 2,
        batch_size: 2,
        grad_accum: 1,
        epochs: 2,
        max_grad_norm: None,
        save_every: 0,
        plots: false,
        output_dir: dir.to_path_buf(),
        ..MdpoConfig::default()
    }
}

/// Bit-for-bit equality of two named tensor lists.
pub fn assert_equal(a: &[(String, Tensor)], b: &[(String, Tensor)]) {
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(b) {
        assert_eq!(na, nb);
        assert!(ta.equal(tb), "{na} differs: max diff {}", (ta - tb).abs().max().double_value(&[]));
    }
}
