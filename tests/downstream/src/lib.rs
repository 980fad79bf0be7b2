//! A downstream model trained with `mdpo`'s public API only: a byte-bigram language model
//! (`log π(y_t | y_{t−1}) = log softmax(W[y_{t−1}])[y_t]`) with its own error type, implementing
//! [`mdpo::PreferenceModel`].
use mdpo::{PreferenceExample, PreferenceModel, ResponseLogps};
use std::ops::Range;
use tch::{nn, Device, Kind, Tensor};

/// This crate's error, returned through the trait and handed back by the trainer as the source
/// of `mdpo::MdpoError::Model`.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum BigramError {
    #[error("example {id}: level {level} has no answer text")]
    EmptyAnswer { id: String, level: usize },
    #[error("level {0} is out of range")]
    Level(usize),
}

/// A byte-bigram table, trainable.
pub struct Bigram {
    pub vs: nn::VarStore,
    table: Tensor,
}

impl Bigram {
    /// A table with small values drawn from `seed` (torch's generator, seeded here).
    pub fn new(seed: i64) -> Self {
        tch::manual_seed(seed);
        let vs = nn::VarStore::new(Device::Cpu);
        let table = vs.root().var("table", &[256, 256], nn::Init::Randn { mean: 0.0, stdev: 0.1 });
        Self { vs, table }
    }
}

/// Per level: previous bytes, next bytes, the example of every answer token.
pub struct Batch {
    levels: Vec<(Tensor, Tensor, Tensor)>,
    size: usize,
}

impl PreferenceModel for Bigram {
    type Batch = Batch;
    type Error = BigramError;

    fn encode(&self, examples: &[PreferenceExample]) -> Result<Batch, BigramError> {
        let k = examples.first().map_or(0, |e| e.levels());
        let mut levels = Vec::with_capacity(k);
        for level in 0..k {
            let (mut prev, mut next, mut slot) = (vec![], vec![], vec![]);
            for (b, ex) in examples.iter().enumerate() {
                let answer: Vec<u8> =
                    ex.responses[level].iter().filter(|t| t.from == "gpt").flat_map(|t| t.value.bytes()).collect();
                if answer.is_empty() {
                    return Err(BigramError::EmptyAnswer { id: ex.id.clone(), level });
                }
                let mut last = 0u8;
                for x in answer {
                    prev.push(last as i64);
                    next.push(x as i64);
                    slot.push(b as i64);
                    last = x;
                }
            }
            levels.push((Tensor::from_slice(&prev), Tensor::from_slice(&next), Tensor::from_slice(&slot)));
        }
        Ok(Batch { levels, size: examples.len() })
    }

    fn batch_len(&self, batch: &Batch) -> usize {
        batch.size
    }

    fn response_logps(&self, batch: &Batch, levels: Range<usize>, _train: bool) -> Result<ResponseLogps, BigramError> {
        let b = batch.size as i64;
        let zeros = || Tensor::zeros([b], (Kind::Float, Device::Cpu));
        let (mut sums, mut weights) = (vec![], vec![]);
        for l in levels {
            let (prev, next, slot) = batch.levels.get(l).ok_or(BigramError::Level(l))?;
            let lp = self.table.index_select(0, prev).log_softmax(-1, Kind::Float).gather(1, &next.unsqueeze(1), false);
            sums.push(zeros().index_add(0, slot, &lp.squeeze_dim(1)));
            weights.push(zeros().index_add(0, slot, &next.ones_like().to_kind(Kind::Float)));
        }
        let weight = Tensor::stack(&weights, 0);
        Ok(ResponseLogps { sum: Tensor::stack(&sums, 0), tokens: weight.shallow_clone(), weight })
    }

    fn trainable_vars(&self) -> &nn::VarStore {
        &self.vs
    }

    fn encoding_fingerprint(&self) -> String {
        "mdpo-downstream bigram v1".into()
    }
}
