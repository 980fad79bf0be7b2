//! Resumable judging and scoring.
//!
//! Judging appends one fsync'd [`JudgmentRecord`] per item as soon as the judge answers; a rerun
//! skips every item that already has a successful verdict *for the same answers and the same
//! judge settings* (the record carries a hash of the answers it judged and [`Judge::params`])
//! and retries the failures. Scoring uses only
//! verdicts that match the current answers; everything else is reported as missing.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::answers::{AnswerSet, Benchmark};
use crate::data::{LlavaItem, MmhalItem, MrhalDialogue, PopeItem};
use crate::error::{BenchError, Result};
use crate::judge::{Judge, JudgeFailure};
use crate::jsonl::{read_jsonl, JsonlLog};
use crate::metrics::{llava_metrics, mmhal_metrics, mrhal_metrics, pope_metrics, pope_parse_yes};

/// One line of a judgments file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgmentRecord {
    /// Benchmark.
    pub bench: Benchmark,
    /// Item id.
    pub id: String,
    /// Model whose answers were judged.
    pub answer_model: String,
    /// sha256 of the judged answers (joined by NUL).
    pub answer_hash: String,
    /// Whether the judge produced a valid verdict.
    pub ok: bool,
    /// The rating(s): per round (MRHal), one (MMHal), `[reference, model]` (LLaVA).
    #[serde(default)]
    pub ratings: Vec<f64>,
    /// Judge model as returned.
    #[serde(default)]
    pub judge_model: Option<String>,
    /// Prompt template hash.
    #[serde(default)]
    pub prompt_hash: Option<String>,
    /// Raw judge output (also kept for parse failures).
    #[serde(default)]
    pub raw: Option<String>,
    /// Failure description when `!ok`.
    #[serde(default)]
    pub error: Option<String>,
    /// The judge's request settings ([`Judge::params`]).
    #[serde(default)]
    pub judge_params: Value,
}

/// Hash of an item's answers.
pub fn answer_hash(answers: &[String]) -> String {
    let mut h = Sha256::new();
    for a in answers {
        h.update(a.as_bytes());
        h.update([0u8]);
    }
    hex::encode(h.finalize())
}

/// What a judging run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JudgeSummary {
    /// Items judged successfully in this run.
    pub judged: usize,
    /// Items skipped because a valid verdict is on disk.
    pub resumed: usize,
    /// Items whose judging failed (id, reason): missing; rerun to retry.
    pub failed: Vec<(String, String)>,
    /// Items without (complete) answers: missing.
    pub no_answer: Vec<String>,
}

type Rated = std::result::Result<(Vec<f64>, String, String, String), JudgeFailure>;

struct Job<'a> {
    id: String,
    answers: Vec<String>,
    rate: Box<dyn Fn() -> Rated + Sync + 'a>,
}

fn load_judgments(path: &Path) -> Result<HashMap<String, JudgmentRecord>> {
    if !path.exists() {
        return Ok(HashMap::new());
    }
    Ok(index_judgments(read_jsonl(path)?))
}

/// The verdict that counts per item id.
fn index_judgments(recs: Vec<JudgmentRecord>) -> HashMap<String, JudgmentRecord> {
    let mut map: HashMap<String, JudgmentRecord> = HashMap::new();
    for r in recs {
        // A later record replaces an earlier one unless it would replace a success with a
        // failure for the same answers.
        match map.get(&r.id) {
            Some(prev) if prev.ok && !r.ok && prev.answer_hash == r.answer_hash => {}
            _ => {
                map.insert(r.id.clone(), r);
            }
        }
    }
    map
}

fn run_jobs(
    judge_params: Value,
    bench: Benchmark,
    answer_model: &str,
    jobs: Vec<Job<'_>>,
    mut no_answer: Vec<String>,
    out: &Path,
    concurrency: usize,
) -> Result<JudgeSummary> {
    let (log, existing): (JsonlLog, Vec<JudgmentRecord>) = JsonlLog::open(out)?;
    if let Some(r) = existing.iter().find(|r| r.bench != bench) {
        return Err(BenchError::Invalid(format!("{}: holds {} judgments; this run is {bench}", out.display(), r.bench)));
    }
    let done = index_judgments(existing);
    let (todo, skipped): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|j| {
        !matches!(done.get(&j.id), Some(r) if r.ok
            && r.answer_hash == answer_hash(&j.answers)
            && r.answer_model == answer_model
            && r.judge_params == judge_params)
    });
    let pb = crate::answers::progress(todo.len() as u64, &format!("judge {bench}"));
    let results = amp_chat::map_bounded(
        &todo,
        concurrency,
        |_, job| -> Result<Option<(String, String)>> {
            let rated = (job.rate)();
            let mut rec = JudgmentRecord {
                bench,
                id: job.id.clone(),
                answer_model: answer_model.to_string(),
                answer_hash: answer_hash(&job.answers),
                ok: false,
                ratings: vec![],
                judge_model: None,
                prompt_hash: None,
                raw: None,
                error: None,
                judge_params: judge_params.clone(),
            };
            let failure = match rated {
                Ok((ratings, judge_model, raw, hash)) => {
                    rec.ok = true;
                    rec.ratings = ratings;
                    rec.judge_model = Some(judge_model);
                    rec.raw = Some(raw);
                    rec.prompt_hash = Some(hash);
                    None
                }
                Err(f) => {
                    if let JudgeFailure::Parse { raw, .. } = &f {
                        rec.raw = Some(raw.clone());
                    }
                    rec.error = Some(f.to_string());
                    Some((job.id.clone(), f.to_string()))
                }
            };
            log.append(&rec)?;
            Ok(failure)
        },
        |_, _| pb.inc(1),
    );
    pb.finish_and_clear();
    let mut summary = JudgeSummary { resumed: skipped.len(), ..Default::default() };
    for r in results {
        match r? {
            None => summary.judged += 1,
            Some(f) => summary.failed.push(f),
        }
    }
    no_answer.sort();
    summary.no_answer = no_answer;
    Ok(summary)
}

fn check_answers(answers: &AnswerSet, bench: Benchmark) -> Result<String> {
    match answers.bench {
        Some(b) if b != bench => Err(BenchError::Invalid(format!("answers are for {b}, not {bench}"))),
        _ => Ok(answers.model.clone().unwrap_or_default()),
    }
}

/// Judges MRHal-Bench dialogues (one rating per round).
pub fn judge_mrhal(judge: &dyn Judge, items: &[MrhalDialogue], answers: &AnswerSet, out: &Path, concurrency: usize) -> Result<JudgeSummary> {
    let model = check_answers(answers, Benchmark::Mrhal)?;
    let mut jobs = Vec::new();
    let mut missing = Vec::new();
    for d in items {
        match answers.items.get(&d.id).and_then(|a| a.complete(d.rounds())) {
            Some(ans) => {
                let a2 = ans.clone();
                jobs.push(Job {
                    id: d.id.clone(),
                    answers: ans,
                    rate: Box::new(move || {
                        judge.rate_mrhal(d, &a2).map(|v| {
                            (v.value.iter().map(|&r| f64::from(r)).collect(), v.judge_model, v.raw, v.prompt_hash)
                        })
                    }),
                });
            }
            None => missing.push(d.id.clone()),
        }
    }
    run_jobs(judge.params(), Benchmark::Mrhal, &model, jobs, missing, out, concurrency)
}

/// Judges MMHal-Bench answers.
pub fn judge_mmhal(judge: &dyn Judge, items: &[MmhalItem], answers: &AnswerSet, out: &Path, concurrency: usize) -> Result<JudgeSummary> {
    let model = check_answers(answers, Benchmark::Mmhal)?;
    let mut jobs = Vec::new();
    let mut missing = Vec::new();
    for m in items {
        match answers.items.get(&m.id()).and_then(|a| a.complete(1)) {
            Some(ans) => {
                let a = ans[0].clone();
                jobs.push(Job {
                    id: m.id(),
                    answers: ans,
                    rate: Box::new(move || {
                        judge.rate_mmhal(m, &a).map(|v| (vec![f64::from(v.value)], v.judge_model, v.raw, v.prompt_hash))
                    }),
                });
            }
            None => missing.push(m.id()),
        }
    }
    run_jobs(judge.params(), Benchmark::Mmhal, &model, jobs, missing, out, concurrency)
}

/// Judges LLaVA-Bench answers against the reference answers.
pub fn judge_llava(judge: &dyn Judge, items: &[LlavaItem], answers: &AnswerSet, out: &Path, concurrency: usize) -> Result<JudgeSummary> {
    let model = check_answers(answers, Benchmark::Llava)?;
    let mut jobs = Vec::new();
    let mut missing = Vec::new();
    for q in items {
        match answers.items.get(&q.question_id).and_then(|a| a.complete(1)) {
            Some(ans) => {
                let a = ans[0].clone();
                jobs.push(Job {
                    id: q.question_id.clone(),
                    answers: ans,
                    rate: Box::new(move || judge.rate_llava(q, &a).map(|v| (v.value.to_vec(), v.judge_model, v.raw, v.prompt_hash))),
                });
            }
            None => missing.push(q.question_id.clone()),
        }
    }
    run_jobs(judge.params(), Benchmark::Llava, &model, jobs, missing, out, concurrency)
}

// ----------------------------------------------------------------------------------------------
// Scoring

/// Missing-item accounting.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Missing {
    /// Items with no (complete) answer.
    pub no_answer: usize,
    /// Items whose judging failed (API or parse).
    pub judge_failed: usize,
    /// Items answered but never judged (or judged for different answers).
    pub not_judged: usize,
    /// POPE: answered items with no ground-truth label.
    pub no_label: usize,
    /// Ids of the missing items (all of them).
    pub ids: Vec<String>,
}

impl Missing {
    /// Total missing.
    pub fn total(&self) -> usize {
        self.no_answer + self.judge_failed + self.not_judged + self.no_label
    }
}

/// A scored run: everything needed to reproduce and to trust the numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResults {
    /// Benchmark.
    pub benchmark: Benchmark,
    /// Answering model.
    pub model: String,
    /// Decoding parameters and seed of the answers.
    pub decoding: Value,
    /// Judge models as returned by the server → number of verdicts.
    pub judge_models: BTreeMap<String, usize>,
    /// Prompt template hashes used → number of verdicts.
    pub prompt_hashes: BTreeMap<String, usize>,
    /// Distinct judge request settings (requested model, temperature, max_tokens, seed).
    #[serde(default)]
    pub judge_params: Vec<Value>,
    /// Items in the benchmark file.
    pub items_total: usize,
    /// Items that contributed to the metrics.
    pub items_scored: usize,
    /// What is missing and why.
    pub missing: Missing,
    /// Flat metric map (`cumulative_score`, `random/f1`, `type/counting`, `conv/relative`, ...).
    pub metrics: BTreeMap<String, f64>,
    /// The full metric structs.
    pub details: Value,
    /// Producer, e.g. `mrhal-bench 0.1.0`.
    pub tool: String,
}

fn base(bench: Benchmark, answers: &AnswerSet, total: usize) -> RunResults {
    RunResults {
        benchmark: bench,
        model: answers.model.clone().unwrap_or_default(),
        decoding: answers.decoding.clone(),
        judge_models: BTreeMap::new(),
        prompt_hashes: BTreeMap::new(),
        judge_params: Vec::new(),
        items_total: total,
        items_scored: 0,
        missing: Missing::default(),
        metrics: BTreeMap::new(),
        details: Value::Null,
        tool: format!("mrhal-bench {}", env!("CARGO_PKG_VERSION")),
    }
}

/// For each item, its verdict ratings if a valid verdict for the current answers exists;
/// records the missing reasons in `res`.
fn verdicts(
    res: &mut RunResults,
    ids_and_answers: Vec<(String, Option<Vec<String>>)>,
    judgments: &HashMap<String, JudgmentRecord>,
) -> Vec<(String, Vec<f64>)> {
    let mut out = Vec::new();
    for (id, ans) in ids_and_answers {
        let Some(ans) = ans else {
            res.missing.no_answer += 1;
            res.missing.ids.push(id);
            continue;
        };
        let h = answer_hash(&ans);
        match judgments.get(&id) {
            Some(j) if j.answer_hash == h && j.answer_model == res.model => {
                if j.ok {
                    *res.judge_models.entry(j.judge_model.clone().unwrap_or_default()).or_default() += 1;
                    *res.prompt_hashes.entry(j.prompt_hash.clone().unwrap_or_default()).or_default() += 1;
                    if !res.judge_params.contains(&j.judge_params) {
                        res.judge_params.push(j.judge_params.clone());
                    }
                    out.push((id, j.ratings.clone()));
                } else {
                    res.missing.judge_failed += 1;
                    res.missing.ids.push(id);
                }
            }
            _ => {
                res.missing.not_judged += 1;
                res.missing.ids.push(id);
            }
        }
    }
    res.items_scored = out.len();
    out
}

fn to_u8(r: &[f64]) -> Vec<u8> {
    r.iter().map(|&x| x.round().clamp(0.0, 6.0) as u8).collect()
}

/// Scores MRHal-Bench.
pub fn score_mrhal(items: &[MrhalDialogue], answers: &AnswerSet, judgments: &Path) -> Result<RunResults> {
    check_answers(answers, Benchmark::Mrhal)?;
    let j = load_judgments(judgments)?;
    let mut res = base(Benchmark::Mrhal, answers, items.len());
    let ia = items.iter().map(|d| (d.id.clone(), answers.items.get(&d.id).and_then(|a| a.complete(d.rounds())))).collect();
    let v = verdicts(&mut res, ia, &j);
    let dialogues: Vec<Vec<u8>> = v.iter().map(|(_, r)| to_u8(r)).collect();
    if let Some(m) = mrhal_metrics(&dialogues) {
        for (k, x) in [
            ("cumulative_score", m.cumulative_score),
            ("cumulative_hallucination_rate", m.cumulative_hallucination_rate),
            ("mean_score", m.mean_score),
            ("mean_hallucination_rate_paper", m.mean_hallucination_rate_paper),
            ("mean_hallucination_rate_refcode", m.mean_hallucination_rate_refcode),
        ] {
            res.metrics.insert(k.into(), x);
        }
        res.details = serde_json::to_value(m).unwrap_or(Value::Null);
    }
    Ok(res)
}

/// Scores MMHal-Bench.
pub fn score_mmhal(items: &[MmhalItem], answers: &AnswerSet, judgments: &Path) -> Result<RunResults> {
    check_answers(answers, Benchmark::Mmhal)?;
    let j = load_judgments(judgments)?;
    let mut res = base(Benchmark::Mmhal, answers, items.len());
    let ia = items.iter().map(|m| (m.id(), answers.items.get(&m.id()).and_then(|a| a.complete(1)))).collect();
    let v = verdicts(&mut res, ia, &j);
    let types: HashMap<String, String> = items.iter().map(|m| (m.id(), m.type_name())).collect();
    let scores: Vec<(String, u8)> = v.iter().map(|(id, r)| (types[id].clone(), to_u8(r)[0])).collect();
    if let Some(m) = mmhal_metrics(&scores) {
        res.metrics.insert("average_score".into(), m.average_score);
        res.metrics.insert("hallucination_rate".into(), m.hallucination_rate);
        for (t, s) in &m.per_type {
            res.metrics.insert(format!("type/{t}"), *s);
        }
        res.details = serde_json::to_value(m).unwrap_or(Value::Null);
    }
    Ok(res)
}

/// Scores LLaVA-Bench.
pub fn score_llava(items: &[LlavaItem], answers: &AnswerSet, judgments: &Path) -> Result<RunResults> {
    check_answers(answers, Benchmark::Llava)?;
    let j = load_judgments(judgments)?;
    let mut res = base(Benchmark::Llava, answers, items.len());
    let ia = items.iter().map(|q| (q.question_id.clone(), answers.items.get(&q.question_id).and_then(|a| a.complete(1)))).collect();
    let v = verdicts(&mut res, ia, &j);
    let cats: HashMap<&str, &str> = items.iter().map(|q| (q.question_id.as_str(), q.category.as_str())).collect();
    let pairs: Vec<(String, [f64; 2])> = v
        .iter()
        .filter(|(_, r)| r.len() == 2)
        .map(|(id, r)| (cats[id.as_str()].to_string(), [r[0], r[1]]))
        .collect();
    let m = llava_metrics(&pairs);
    for (c, s) in &m {
        res.metrics.insert(format!("{c}/relative"), s.relative);
        res.metrics.insert(format!("{c}/model_mean"), s.model_mean);
        res.metrics.insert(format!("{c}/reference_mean"), s.reference_mean);
    }
    res.details = serde_json::to_value(m).unwrap_or(Value::Null);
    Ok(res)
}

/// Scores POPE from the answers alone (no judge). Labels come from `labels` (the
/// `coco_pope_*` files) when given, else from the answers' metadata.
pub fn score_pope(items: &[PopeItem], labels: &[PopeItem], answers: &AnswerSet) -> Result<RunResults> {
    check_answers(answers, Benchmark::Pope)?;
    let mut res = base(Benchmark::Pope, answers, items.len());
    let label_map: HashMap<String, bool> =
        labels.iter().chain(items.iter()).filter_map(|p| p.label.map(|l| (p.id(), l))).collect();
    let mut per_split: BTreeMap<String, Vec<(bool, bool)>> = BTreeMap::new();
    for p in items {
        let id = p.id();
        let Some(ans) = answers.items.get(&id).and_then(|a| a.complete(1)) else {
            res.missing.no_answer += 1;
            res.missing.ids.push(id);
            continue;
        };
        let label = label_map.get(&id).copied().or_else(|| {
            let meta = &answers.items[&id].meta;
            meta.get("label").and_then(Value::as_str).map(|l| l == "yes")
        });
        let Some(label) = label else {
            res.missing.no_label += 1;
            res.missing.ids.push(id);
            continue;
        };
        per_split.entry(p.split.clone()).or_default().push((pope_parse_yes(&ans[0]), label));
        res.items_scored += 1;
    }
    let mut details = BTreeMap::new();
    for (split, pairs) in &per_split {
        if let Some(m) = pope_metrics(pairs) {
            res.metrics.insert(format!("{split}/accuracy"), m.accuracy);
            for (k, v) in [("precision", m.precision), ("recall", m.recall), ("f1", m.f1)] {
                if let Some(v) = v {
                    res.metrics.insert(format!("{split}/{k}"), v);
                }
            }
            res.metrics.insert(format!("{split}/yes_ratio"), m.yes_ratio);
            details.insert(split.clone(), m);
        }
    }
    res.details = serde_json::to_value(details).unwrap_or(Value::Null);
    Ok(res)
}
