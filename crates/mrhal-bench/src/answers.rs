//! Resumable answer generation: every answer is appended (fsync'd) as it is produced; a rerun
//! skips what is on disk and, for multi-round dialogues, rebuilds the history from the model's
//! own stored answers (MRHal-Bench protocol, docs/paper-notes.md §5).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::data::{ImageRef, LlavaItem, MmhalItem, MrhalDialogue, PopeItem};
use crate::error::{BenchError, Result};
use crate::jsonl::{read_jsonl, JsonlLog};
use crate::responder::{Responder, Turn};

/// The four benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Benchmark {
    /// MRHal-Bench (multi-round, judged 0–6 per round).
    Mrhal,
    /// MMHal-Bench (judged 0–6).
    Mmhal,
    /// POPE (yes/no, no judge).
    Pope,
    /// LLaVA-Bench qa90 (pairwise 1–10 judge).
    Llava,
}

impl Benchmark {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Benchmark::Mrhal => "mrhal",
            Benchmark::Mmhal => "mmhal",
            Benchmark::Pope => "pope",
            Benchmark::Llava => "llava",
        }
    }
}

impl std::fmt::Display for Benchmark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One item to answer: an image and its user turns (one for single-turn benchmarks).
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerTask {
    /// Item id (unique within the benchmark).
    pub id: String,
    /// The image.
    pub image: ImageRef,
    /// User questions, one per round.
    pub questions: Vec<String>,
    /// Extra data copied into every record (POPE split and label, ...).
    pub meta: Value,
}

/// Tasks for MRHal-Bench dialogues.
pub fn mrhal_tasks(items: &[MrhalDialogue]) -> Vec<AnswerTask> {
    items
        .iter()
        .map(|d| AnswerTask { id: d.id.clone(), image: d.image.clone(), questions: d.questions.clone(), meta: Value::Null })
        .collect()
}

/// Tasks for MMHal-Bench.
pub fn mmhal_tasks(items: &[MmhalItem]) -> Vec<AnswerTask> {
    items
        .iter()
        .map(|m| AnswerTask {
            id: m.id(),
            image: m.image.clone(),
            questions: vec![m.question.clone()],
            meta: serde_json::json!({"question_type": m.type_name()}),
        })
        .collect()
}

/// Tasks for POPE (`id = split/question_id`; the label, when known, travels in `meta`).
pub fn pope_tasks(items: &[PopeItem]) -> Vec<AnswerTask> {
    items
        .iter()
        .map(|p| AnswerTask {
            id: p.id(),
            image: ImageRef::File(p.image.clone()),
            questions: vec![p.text.clone()],
            meta: serde_json::json!({"split": p.split, "question_id": p.question_id,
                "label": p.label.map(|l| if l { "yes" } else { "no" })}),
        })
        .collect()
}

/// Tasks for LLaVA-Bench.
pub fn llava_tasks(items: &[LlavaItem]) -> Vec<AnswerTask> {
    items
        .iter()
        .map(|q| AnswerTask {
            id: q.question_id.clone(),
            image: ImageRef::File(q.image.clone()),
            questions: vec![q.text.clone()],
            meta: serde_json::json!({"category": q.category}),
        })
        .collect()
}

/// One stored answer (one line of the answers file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerRecord {
    /// Benchmark.
    pub bench: Benchmark,
    /// Item id.
    pub id: String,
    /// 0-based round.
    pub round: usize,
    /// The question of this round.
    pub question: String,
    /// The model's answer.
    pub answer: String,
    /// Responder name.
    pub model: String,
    /// Decoding parameters and seed.
    pub decoding: Value,
    /// Task metadata.
    #[serde(default)]
    pub meta: Value,
}

/// What a generation run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AnswerSummary {
    /// Answers generated in this run.
    pub generated: usize,
    /// Answers already on disk (skipped).
    pub resumed: usize,
    /// Items that failed (id, reason); rerun to retry them.
    pub failed: Vec<(String, String)>,
}

/// Per-task outcome counts.
#[derive(Default)]
struct TaskOutcome {
    generated: usize,
    resumed: usize,
    failed: Option<(String, String)>,
}

/// The answering call as the runner sees it.
type RespondFn<'r> = dyn Fn(&[u8], &[Turn]) -> Result<String, String> + 'r;

struct Ctx<'a> {
    bench: Benchmark,
    name: String,
    decoding: Value,
    done: HashMap<(String, usize), String>,
    log: JsonlLog,
    image_dir: Option<&'a Path>,
}

impl<'a> Ctx<'a> {
    fn open<R: Responder + ?Sized>(responder: &R, bench: Benchmark, out: &Path, image_dir: Option<&'a Path>) -> Result<Self> {
        let (log, existing): (JsonlLog, Vec<AnswerRecord>) = JsonlLog::open(out)?;
        let name = responder.name();
        let mut done = HashMap::new();
        for r in existing {
            if r.bench != bench || r.model != name {
                return Err(BenchError::Invalid(format!(
                    "{}: holds {} answers by {:?}; this run is {bench} by {name:?} (use another file)",
                    out.display(),
                    r.bench,
                    r.model
                )));
            }
            done.insert((r.id, r.round), r.answer);
        }
        Ok(Ctx { bench, name, decoding: responder.decoding(), done, log, image_dir })
    }

    /// Answers the missing rounds of one task; history = the model's own answers.
    fn run(&self, task: &AnswerTask, respond: &RespondFn<'_>) -> Result<TaskOutcome> {
        let mut o = TaskOutcome::default();
        let mut turns: Vec<Turn> = Vec::new();
        let mut image: Option<Vec<u8>> = None;
        for (round, q) in task.questions.iter().enumerate() {
            turns.push(Turn::user(q.clone()));
            if let Some(a) = self.done.get(&(task.id.clone(), round)) {
                o.resumed += 1;
                turns.push(Turn::assistant(a.clone()));
                continue;
            }
            if image.is_none() {
                match task.image.load(self.image_dir) {
                    Ok(b) => image = Some(b),
                    Err(e) => {
                        o.failed = Some((task.id.clone(), e.to_string()));
                        return Ok(o);
                    }
                }
            }
            match respond(image.as_deref().unwrap_or(&[]), &turns) {
                Ok(answer) => {
                    self.log.append(&AnswerRecord {
                        bench: self.bench,
                        id: task.id.clone(),
                        round,
                        question: q.clone(),
                        answer: answer.clone(),
                        model: self.name.clone(),
                        decoding: self.decoding.clone(),
                        meta: task.meta.clone(),
                    })?;
                    o.generated += 1;
                    turns.push(Turn::assistant(answer));
                }
                Err(reason) => {
                    o.failed = Some((task.id.clone(), reason));
                    return Ok(o);
                }
            }
        }
        Ok(o)
    }
}

fn summarise(outcomes: Vec<Result<TaskOutcome>>) -> Result<AnswerSummary> {
    let mut s = AnswerSummary::default();
    for o in outcomes {
        let o = o?;
        s.generated += o.generated;
        s.resumed += o.resumed;
        s.failed.extend(o.failed);
    }
    Ok(s)
}

/// Generates all missing answers with at most `concurrency` items in flight (the rounds of one
/// dialogue are always sequential). Refuses an answers file written by another model or for
/// another benchmark. A failed item is reported in the summary and retried on the next run.
pub fn generate_answers<R: Responder + Sync + ?Sized>(
    responder: &R,
    bench: Benchmark,
    tasks: &[AnswerTask],
    image_dir: Option<&Path>,
    out: &Path,
    concurrency: usize,
) -> Result<AnswerSummary> {
    let ctx = Ctx::open(responder, bench, out, image_dir)?;
    let pb = progress(tasks.len() as u64, bench.name());
    let respond = |img: &[u8], turns: &[Turn]| responder.respond(img, turns);
    let outcomes = amp_chat::map_bounded(tasks, concurrency, |_, t| ctx.run(t, &respond), |_, _| pb.inc(1));
    pb.finish_and_clear();
    summarise(outcomes)
}

/// Sequential variant for responders that are not `Sync` (e.g. a local model); same file
/// format and resume behaviour.
pub fn generate_answers_sequential<R: Responder + ?Sized>(
    responder: &R,
    bench: Benchmark,
    tasks: &[AnswerTask],
    image_dir: Option<&Path>,
    out: &Path,
) -> Result<AnswerSummary> {
    let ctx = Ctx::open(responder, bench, out, image_dir)?;
    let pb = progress(tasks.len() as u64, bench.name());
    let respond = |img: &[u8], turns: &[Turn]| responder.respond(img, turns);
    let outcomes = tasks
        .iter()
        .map(|t| {
            let o = ctx.run(t, &respond);
            pb.inc(1);
            o
        })
        .collect();
    pb.finish_and_clear();
    summarise(outcomes)
}

/// Answers of one item, in round order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemAnswers {
    /// Answers by round (`None` for a round not yet answered).
    pub rounds: Vec<Option<String>>,
    /// Task metadata of the first stored round.
    pub meta: Value,
}

impl ItemAnswers {
    /// All rounds, if every one of the first `n` is answered.
    pub fn complete(&self, n: usize) -> Option<Vec<String>> {
        if self.rounds.len() < n {
            return None;
        }
        self.rounds[..n].iter().cloned().collect()
    }
}

/// The contents of an answers file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AnswerSet {
    /// Benchmark (None when empty).
    pub bench: Option<Benchmark>,
    /// Model name.
    pub model: Option<String>,
    /// Decoding parameters (from the first record).
    pub decoding: Value,
    /// Per item.
    pub items: BTreeMap<String, ItemAnswers>,
}

/// Loads an answers file; mixed benchmarks or models are an error.
pub fn load_answers(path: &Path) -> Result<AnswerSet> {
    let recs: Vec<AnswerRecord> = read_jsonl(path)?;
    let mut set = AnswerSet::default();
    for r in recs {
        match (&set.bench, &set.model) {
            (Some(b), Some(m)) if *b != r.bench || *m != r.model => {
                return Err(BenchError::Invalid(format!(
                    "{}: mixes {b}/{m:?} with {}/{:?} answers",
                    path.display(),
                    r.bench,
                    r.model
                )))
            }
            (None, _) => {
                set.bench = Some(r.bench);
                set.model = Some(r.model.clone());
                set.decoding = r.decoding.clone();
            }
            _ => {}
        }
        let e = set.items.entry(r.id.clone()).or_insert_with(|| ItemAnswers { rounds: vec![], meta: r.meta.clone() });
        if e.rounds.len() <= r.round {
            e.rounds.resize(r.round + 1, None);
        }
        e.rounds[r.round] = Some(r.answer);
    }
    Ok(set)
}

pub(crate) fn progress(n: u64, what: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(n);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta}") {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}
