//! Resumable, shardable, parallel runs and the AMP output format.
//!
//! Two stages, each writing a JSONL of finished rows keyed by record id:
//!
//! 1. [`generate`]: every expert answers every record → [`GeneratedRow`]s.
//! 2. [`check`]: the auto-check re-ranks each row's responses → [`CheckedRow`]s.
//!
//! Every row is written as one line, flushed and fsync'd as soon as it is done; on rerun the ids
//! already in the file are skipped (a torn last line from a crash is cut off first), so an
//! interrupted run loses nothing written and repeats nothing done. `--shard i/n` keeps the records
//! whose id hashes (SHA-256, first 8 bytes) to `i` mod `n`. [`finalize`] turns checked rows from
//! one or many shards into the final files, ordered by the records' positions in the input file, so
//! a merged sharded run produces byte-identical files to an unsharded one:
//!
//! * `amp.json` — the AMP training format: a JSON list of `{id, image, output_1..output_K}`,
//!   best first, `output_1` the standard response (loads with `mdpo::data::load_amp_file`);
//! * `meta.jsonl` — one line per response: source model, initial and final level, Acc, score and
//!   their local/global parts;
//! * `diagnostics.jsonl` — per sample, the chunks and sentences of the standard and of each
//!   response, each standard entry's best match and similarity, and the ranking before and after
//!   the check ([`crate::explain`]; `amp check --explain ID` prints one);
//! * `stats.json` — dataset statistics (rankings changed by the check, ties, responses without
//!   chunks, mean Acc per source).
use crate::autocheck::{
    AutoChecker, ResponseCheck, ResponseMatches, SampleCheck, SentenceEmbedder,
};
use crate::data::{gpt_turns, InstructionRecord};
use crate::error::{AmpDataError, Result};
use crate::generate::Expert;
use indicatif::{ProgressBar, ProgressStyle};
use mdpo::Conversation;
use rayon::prelude::*;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;

/// A deterministic shard `index` of `count` (`--shard i/n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// The whole data set.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Whether this shard owns record `id` (SHA-256 of the id, first 8 bytes big-endian, mod n).
    pub fn owns(&self, id: &str) -> bool {
        let h = Sha256::digest(id.as_bytes());
        let v = u64::from_be_bytes(h[..8].try_into().unwrap());
        (v % self.count as u64) as usize == self.index
    }
}

impl FromStr for Shard {
    type Err = AmpDataError;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || AmpDataError::Config(format!("--shard {s:?}: expected i/n with 0 <= i < n"));
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (usize, usize) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// A row with an id (what the resumable writer keys on).
pub trait Keyed {
    fn key(&self) -> &str;
}

/// One generated response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// The expert that produced it.
    pub source: String,
    /// Its full conversation (the record's human turns, the expert's gpt turns).
    pub conversation: Conversation,
    /// How the expert decoded it ([`crate::Generator::decoding`]; absent when not reported).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub decoding: serde_json::Value,
}

/// Stage-1 row: a record and its K−1 generated responses in initial-rank order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratedRow {
    pub id: String,
    /// Position in the input file.
    pub index: usize,
    /// The image as the input names it ([`crate::InstructionRecord::image_ref`]: relative to the
    /// image folder unless the input gave an absolute path).
    pub image: String,
    /// The instruction conversation (its gpt turns are the standard response).
    pub standard: Conversation,
    /// Generated responses, initial rank 1..K−1 (best first).
    pub candidates: Vec<Candidate>,
}

impl Keyed for GeneratedRow {
    fn key(&self) -> &str {
        &self.id
    }
}

/// One response of a checked row, in final order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckedResponse {
    pub source: String,
    /// Level before the check (1 = best generated; 0 is the standard).
    pub initial_rank: usize,
    /// Level after the check.
    pub final_rank: usize,
    pub conversation: Conversation,
    /// Auto-check metrics (`None` when the check was skipped).
    pub check: Option<ResponseCheck>,
    /// The response's maximal noun chunks (diagnostics; empty when the check was skipped).
    #[serde(default)]
    pub chunks: Vec<String>,
    /// The sentence of each of its chunks (diagnostics).
    #[serde(default)]
    pub sentences: Vec<String>,
    /// Each standard chunk's (and sentence's) best match in this response (diagnostics; `None`
    /// when the check was skipped or could not judge the sample).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<ResponseMatches>,
    /// How the expert decoded it (copied from the generated row).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub decoding: serde_json::Value,
}

/// Stage-2 row: the final ranking of one sample with per-sample diagnostics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckedRow {
    pub id: String,
    pub index: usize,
    pub image: String,
    pub standard: Conversation,
    /// Chunks of the standard response (0: the check could not judge; initial order kept).
    pub standard_chunks: usize,
    /// The standard response's maximal noun chunks (diagnostics).
    #[serde(default)]
    pub standard_chunk_texts: Vec<String>,
    /// The sentence of each standard chunk (diagnostics).
    #[serde(default)]
    pub standard_sentence_texts: Vec<String>,
    /// Whether the auto-check ran on this sample.
    pub checked: bool,
    /// Whether the check changed the initial ranking.
    pub changed: bool,
    /// Adjacent exact ties (equal Acc and score) in the final order.
    pub ties: usize,
    /// Generated responses, best first (levels 1..K−1).
    pub responses: Vec<CheckedResponse>,
}

impl Keyed for CheckedRow {
    fn key(&self) -> &str {
        &self.id
    }
}

/// Append-only JSONL of finished rows; each row is flushed and fsync'd when written.
pub struct RowWriter {
    path: PathBuf,
    file: Mutex<File>,
}

/// Reads this pipeline's own rows file for resuming: a torn last line (a kill mid-write) is
/// reported on stderr and left out, and the byte length of the good prefix is returned; a bad line
/// elsewhere is an error naming it. A missing file has no rows.
fn read_own_rows<R: DeserializeOwned>(path: &Path) -> Result<(Vec<R>, u64)> {
    let r = amp_io::jsonl::read_resume::<R>(path)?;
    if let Some(t) = r.dropped {
        eprintln!("{}", t.note(path));
    }
    Ok((r.rows.into_iter().map(|l| l.value).collect(), r.good_len))
}

/// Reads the complete rows of this pipeline's own rows file (missing file: none). For files a
/// user hands in, use [`read_input_rows`].
pub fn load_rows<R: DeserializeOwned>(path: &Path) -> Result<Vec<R>> {
    Ok(read_own_rows(path)?.0)
}

/// Reads a rows file given as input (e.g. `amp check --generated`) strictly: a malformed or
/// truncated line, a JSON array or an empty file is an error naming the file and line; a final
/// line without a newline is accepted (docs/reliability.md).
pub fn read_input_rows<R: DeserializeOwned>(path: &Path) -> Result<Vec<R>> {
    Ok(amp_io::jsonl::read_strict_values(path)?)
}

impl RowWriter {
    /// Opens `path` for appending, cutting off a torn last line, and returns the writer with the
    /// rows already there.
    pub fn open<R: DeserializeOwned>(path: &Path) -> Result<(Self, Vec<R>)> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| AmpDataError::io(dir, e))?;
        }
        let (rows, good) = read_own_rows::<R>(path)?;
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(|e| AmpDataError::io(path, e))?;
        let len = file
            .metadata()
            .map_err(|e| AmpDataError::io(path, e))?
            .len();
        if len != good {
            file.set_len(good).map_err(|e| AmpDataError::io(path, e))?;
            file.seek(SeekFrom::End(0))
                .map_err(|e| AmpDataError::io(path, e))?;
        }
        Ok((
            Self {
                path: path.to_path_buf(),
                file: Mutex::new(file),
            },
            rows,
        ))
    }

    /// Appends one row durably (write, flush, fsync).
    pub fn write<R: Serialize>(&self, row: &R) -> Result<()> {
        let mut line = serde_json::to_vec(row)
            .map_err(|e| AmpDataError::Config(format!("serialising a row: {e}")))?;
        line.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(&line)
            .map_err(|e| AmpDataError::io(&self.path, e))?;
        f.flush().map_err(|e| AmpDataError::io(&self.path, e))?;
        f.sync_data().map_err(|e| AmpDataError::io(&self.path, e))?;
        Ok(())
    }
}

/// What a resumable stage did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Items of this shard.
    pub in_shard: usize,
    /// Items found already done and skipped.
    pub skipped: usize,
    /// Items processed now.
    pub processed: usize,
}

fn progress(n: usize, msg: &str) -> ProgressBar {
    let pb = ProgressBar::new(n as u64);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.set_message(msg.to_string());
    pb
}

/// Runs `f` on every item of the shard not yet in `out`, in parallel on `jobs` threads (0 = rayon's
/// default), writing each result as soon as it is done. Stops at the first error (results finished
/// before it stay written) and returns it.
pub fn run_resumable<I, R, F>(
    items: &[I],
    id_of: impl Fn(&I) -> &str + Sync,
    out: &Path,
    shard: Shard,
    jobs: usize,
    label: &str,
    f: F,
) -> Result<RunSummary>
where
    I: Sync,
    R: Serialize + DeserializeOwned + Keyed + Send,
    F: Fn(&I) -> Result<R> + Sync,
{
    let (writer, done_rows) = RowWriter::open::<R>(out)?;
    let done: HashSet<String> = done_rows.iter().map(|r| r.key().to_string()).collect();
    let mine: Vec<&I> = items.iter().filter(|i| shard.owns(id_of(i))).collect();
    let todo: Vec<&I> = mine
        .iter()
        .copied()
        .filter(|i| !done.contains(id_of(i)))
        .collect();
    let summary = RunSummary {
        in_shard: mine.len(),
        skipped: mine.len() - todo.len(),
        processed: todo.len(),
    };
    let pb = progress(todo.len(), label);
    let work = || {
        todo.par_iter().try_for_each(|item| -> Result<()> {
            let row = f(item)?;
            writer.write(&row)?;
            pb.inc(1);
            Ok(())
        })
    };
    let res = if jobs == 0 {
        work()
    } else {
        rayon::ThreadPoolBuilder::new()
            .num_threads(jobs)
            .build()
            .map_err(|e| AmpDataError::Config(format!("thread pool: {e}")))?
            .install(work)
    };
    pb.finish_and_clear();
    res.map(|_| summary)
}

/// Stage 1: every expert regenerates every gpt turn of every record of the shard.
pub fn generate(
    records: &[InstructionRecord],
    experts: &[Expert],
    out: &Path,
    shard: Shard,
    jobs: usize,
) -> Result<RunSummary> {
    run_resumable(
        records,
        |r| r.id.as_str(),
        out,
        shard,
        jobs,
        "generate",
        |r| {
            let mut candidates = Vec::with_capacity(experts.len());
            for e in experts {
                let conversation =
                    e.generator
                        .generate(&r.image, &r.conversations)
                        .map_err(|err| match err {
                            AmpDataError::Generation { model, source, .. } => {
                                AmpDataError::generation(model, r.id.clone(), source)
                            }
                            other => AmpDataError::generation(&e.name, r.id.clone(), other),
                        })?;
                candidates.push(Candidate {
                    source: e.name.clone(),
                    conversation,
                    decoding: e.generator.decoding(),
                });
            }
            Ok(GeneratedRow {
                id: r.id.clone(),
                index: r.index,
                image: r.image_ref.clone(),
                standard: r.conversations.clone(),
                candidates,
            })
        },
    )
}

/// Reads (strictly: they are the command's input) and merges generated (or checked) rows from
/// several files; the same id twice with different content is an error.
pub fn merge_rows<R>(paths: &[PathBuf]) -> Result<Vec<R>>
where
    R: DeserializeOwned + Keyed + PartialEq,
{
    let mut by_id: HashMap<String, (usize, R)> = HashMap::new();
    let mut order = Vec::new();
    for (pi, p) in paths.iter().enumerate() {
        if !p.is_file() {
            return Err(AmpDataError::io(
                p,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            ));
        }
        for row in read_input_rows::<R>(p)? {
            let id = row.key().to_string();
            match by_id.get(&id) {
                Some((_, old)) if *old == row => {}
                Some((pj, _)) => {
                    return Err(AmpDataError::data(
                        p,
                        format!("id {id:?}"),
                        format!("also in {} with different content", paths[*pj].display()),
                    ))
                }
                None => {
                    order.push(id.clone());
                    by_id.insert(id, (pi, row));
                }
            }
        }
    }
    Ok(order
        .into_iter()
        .map(|id| by_id.remove(&id).unwrap().1)
        .collect())
}

/// Rows per auto-check block: [`check`] runs [`AutoChecker::check_batch`] on consecutive blocks of
/// this many rows of the shard (by input position; [`check_blocks`]), so each block's texts are
/// de-duplicated and embedded in length buckets together. A kill loses at most the block in flight.
pub const CHECK_BLOCK: usize = 64;

/// The auto-check's blocks of `rows`: consecutive blocks of [`CHECK_BLOCK`] rows, except that a
/// last block shorter than a quarter of it joins the one before (67 rows → one block of 67, not
/// 64 + 3): a block of a few rows has too few embedding calls to keep the data-parallel workers
/// busy and shares few texts to de-duplicate. The cut depends on the row count alone, so a
/// resumed run forms the same blocks.
pub fn check_blocks<T>(rows: &[T]) -> Vec<&[T]> {
    let mut out: Vec<&[T]> = rows.chunks(CHECK_BLOCK).collect();
    if out.len() >= 2 && out[out.len() - 1].len() < CHECK_BLOCK / 4 {
        out.pop();
        let start = (out.len() - 1) * CHECK_BLOCK;
        *out.last_mut().expect("two or more blocks") = &rows[start..];
    }
    out
}

/// Checks one generated row on its own (or keeps its initial ranking when `checker` is `None`).
/// [`check`] checks rows in blocks instead; the result is the same up to the experts' float
/// rounding.
pub fn check_row<L: SentenceEmbedder, G: SentenceEmbedder>(
    row: &GeneratedRow,
    checker: Option<&AutoChecker<L, G>>,
) -> Result<CheckedRow> {
    let sc = match checker {
        Some(c) => {
            let (std, gens) = sample_turns(row);
            Some(c.check(&std, &gens)?)
        }
        None => None,
    };
    Ok(checked_row(row, sc, checker.is_some()))
}

/// The standard's and every candidate's gpt turns.
fn sample_turns(row: &GeneratedRow) -> (Vec<String>, Vec<Vec<String>>) {
    let std = gpt_turns(&row.standard);
    let gens = row
        .candidates
        .iter()
        .map(|c| gpt_turns(&c.conversation))
        .collect();
    (std, gens)
}

/// A row's final ranking from its check (`None`: initial ranking kept).
fn checked_row(row: &GeneratedRow, sc: Option<SampleCheck>, ran: bool) -> CheckedRow {
    let n = row.candidates.len();
    let (order, standard_chunks, changed, ties) = match &sc {
        Some(sc) => (sc.order.clone(), sc.standard_chunks, sc.changed, sc.ties),
        None => ((0..n).collect(), 0, false, 0),
    };
    let responses = order
        .iter()
        .enumerate()
        .map(|(r, &i)| CheckedResponse {
            source: row.candidates[i].source.clone(),
            initial_rank: i + 1,
            final_rank: r + 1,
            conversation: row.candidates[i].conversation.clone(),
            check: sc.as_ref().map(|sc| sc.responses[i]),
            chunks: sc
                .as_ref()
                .map(|sc| sc.response_chunk_texts[i].clone())
                .unwrap_or_default(),
            sentences: sc
                .as_ref()
                .map(|sc| sc.response_sentence_texts[i].clone())
                .unwrap_or_default(),
            matches: sc.as_ref().and_then(|sc| sc.matches.get(i).cloned()),
            decoding: row.candidates[i].decoding.clone(),
        })
        .collect();
    let (std_texts, std_sentences) = match sc {
        Some(sc) => (sc.standard_chunk_texts, sc.standard_sentence_texts),
        None => (Vec::new(), Vec::new()),
    };
    CheckedRow {
        id: row.id.clone(),
        index: row.index,
        image: row.image.clone(),
        standard: row.standard.clone(),
        standard_chunks,
        standard_chunk_texts: std_texts,
        standard_sentence_texts: std_sentences,
        checked: ran && standard_chunks > 0,
        changed,
        ties,
        responses,
    }
}

/// Stage 2: auto-check every generated row of the shard (`checker = None`: keep the initial
/// ranking, the paper's "Initial" ablation).
///
/// The shard's rows, in input order (`index`), are cut into fixed blocks ([`check_blocks`]: of
/// [`CHECK_BLOCK`] rows, a short last block joined to the one before);
/// each block is checked by one [`AutoChecker::check_batch`] (texts de-duplicated across the
/// block, embedded in length buckets; chunking spread over `jobs` threads) and its rows written in
/// input order. A block whose rows are all in `out` already is skipped; a partly written block
/// (a kill mid-write) is checked again whole, so its remaining rows get exactly the values an
/// uninterrupted run gives them (the embeddings of a text depend on its block through the
/// encoder's float rounding), and `out` ends up byte-identical to an uninterrupted run's.
/// Different shard counts form different blocks: their merged output equals the unsharded one up
/// to that rounding (exactly, for an embedder that is independent of its batch).
pub fn check<L: SentenceEmbedder, G: SentenceEmbedder>(
    rows: &[GeneratedRow],
    checker: Option<&AutoChecker<L, G>>,
    out: &Path,
    shard: Shard,
    jobs: usize,
) -> Result<RunSummary> {
    let Some(checker) = checker else {
        return run_resumable(
            rows,
            |r| r.id.as_str(),
            out,
            shard,
            jobs,
            "auto-check",
            |r| check_row::<L, G>(r, None),
        );
    };
    let (writer, done_rows) = RowWriter::open::<CheckedRow>(out)?;
    let done: HashSet<String> = done_rows.iter().map(|r| r.id.clone()).collect();
    let mut mine: Vec<&GeneratedRow> = rows.iter().filter(|r| shard.owns(&r.id)).collect();
    mine.sort_by(|a, b| (a.index, &a.id).cmp(&(b.index, &b.id)));
    let todo = mine.iter().filter(|r| !done.contains(&r.id)).count();
    let summary = RunSummary {
        in_shard: mine.len(),
        skipped: mine.len() - todo,
        processed: todo,
    };
    let pb = progress(todo, "auto-check");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs)
        .build()
        .map_err(|e| AmpDataError::Config(format!("thread pool: {e}")))?;
    let res = check_blocks(&mine)
        .into_iter()
        .try_for_each(|block| -> Result<()> {
            if block.iter().all(|r| done.contains(&r.id)) {
                return Ok(());
            }
            let samples: Vec<(Vec<String>, Vec<Vec<String>>)> =
                block.iter().map(|r| sample_turns(r)).collect();
            let checks = pool.install(|| checker.check_batch(&samples))?;
            for (row, sc) in block.iter().zip(checks) {
                if done.contains(&row.id) {
                    continue;
                }
                writer.write(&checked_row(row, Some(sc), true))?;
                pb.inc(1);
            }
            Ok(())
        });
    pb.finish_and_clear();
    res.map(|_| summary)
}

/// Dataset statistics of a finalized run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DatasetStats {
    pub samples: usize,
    /// Levels K per sample (1 + generated responses).
    pub levels: usize,
    /// Samples the check judged (the standard response had chunks).
    pub checked: usize,
    /// Samples whose ranking the check changed.
    pub changed: usize,
    /// Samples with at least one exact tie in the final order.
    pub samples_with_ties: usize,
    /// Standard responses without any noun chunk (not judged).
    pub standard_without_chunks: usize,
    /// Generated responses without any noun chunk (Acc = score = 0).
    pub responses_without_chunks: usize,
    /// Mean final Acc per source (checked samples only).
    pub mean_acc_by_source: BTreeMap<String, f64>,
    /// Mean final level per source (1 = best generated).
    pub mean_final_rank_by_source: BTreeMap<String, f64>,
}

/// Files written by [`finalize`].
#[derive(Debug, Clone)]
pub struct FinalOutputs {
    pub amp_json: PathBuf,
    pub meta_jsonl: PathBuf,
    /// Per-sample auto-check diagnostics ([`crate::explain::SampleDiagnostics`], input order).
    pub diagnostics_jsonl: PathBuf,
    pub stats_json: PathBuf,
    pub stats: DatasetStats,
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp).map_err(|e| AmpDataError::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| AmpDataError::io(&tmp, e))?;
        f.sync_all().map_err(|e| AmpDataError::io(&tmp, e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| AmpDataError::io(path, e))
}

/// Writes `amp.json`, `meta.jsonl` and `stats.json` into `dir` from checked rows (any order, any
/// number of shards), ordered by input position.
pub fn finalize(mut rows: Vec<CheckedRow>, dir: &Path) -> Result<FinalOutputs> {
    std::fs::create_dir_all(dir).map_err(|e| AmpDataError::io(dir, e))?;
    rows.sort_by(|a, b| a.index.cmp(&b.index).then_with(|| a.id.cmp(&b.id)));
    let mut seen = HashSet::new();
    for r in &rows {
        if !seen.insert(r.id.as_str()) {
            return Err(AmpDataError::data(
                dir,
                format!("id {:?}", r.id),
                "appears twice in the checked rows",
            ));
        }
    }
    let levels = rows.first().map(|r| r.responses.len() + 1).unwrap_or(0);
    let mut amp = Vec::with_capacity(rows.len());
    let mut meta = Vec::new();
    let mut stats = DatasetStats {
        samples: rows.len(),
        levels,
        ..Default::default()
    };
    let mut acc_sum: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    let mut rank_sum: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for r in &rows {
        if r.responses.len() + 1 != levels {
            return Err(AmpDataError::data(
                dir,
                format!("id {:?}", r.id),
                format!(
                    "has {} levels, the first sample has {levels}",
                    r.responses.len() + 1
                ),
            ));
        }
        let mut obj = serde_json::Map::new();
        obj.insert("id".into(), r.id.clone().into());
        obj.insert("image".into(), r.image.clone().into());
        obj.insert(
            "output_1".into(),
            serde_json::to_value(&r.standard).unwrap(),
        );
        for (k, resp) in r.responses.iter().enumerate() {
            obj.insert(
                format!("output_{}", k + 2),
                serde_json::to_value(&resp.conversation).unwrap(),
            );
        }
        amp.push(serde_json::Value::Object(obj));
        meta.push(serde_json::json!({
            "id": r.id, "index": r.index, "source": "standard", "initial_rank": 0, "final_rank": 0,
            "checked": r.checked, "n_chunks": r.standard_chunks,
        }));
        stats.checked += usize::from(r.checked);
        stats.changed += usize::from(r.changed);
        stats.samples_with_ties += usize::from(r.ties > 0);
        let check_ran = r.responses.iter().any(|x| x.check.is_some());
        stats.standard_without_chunks += usize::from(check_ran && r.standard_chunks == 0);
        for resp in &r.responses {
            let mut m = serde_json::json!({
                "id": r.id, "index": r.index, "source": resp.source,
                "initial_rank": resp.initial_rank, "final_rank": resp.final_rank, "checked": r.checked,
            });
            if !resp.decoding.is_null() {
                m["decoding"] = resp.decoding.clone();
            }
            if let Some(c) = &resp.check {
                let o = m.as_object_mut().unwrap();
                o.insert("acc".into(), c.acc.into());
                o.insert("score".into(), c.score.into());
                o.insert("local_acc".into(), c.local.acc.into());
                o.insert("local_score".into(), c.local.score.into());
                o.insert("global_acc".into(), c.global.acc.into());
                o.insert("global_score".into(), c.global.score.into());
                o.insert("n_chunks".into(), c.n_chunks.into());
                stats.responses_without_chunks += usize::from(c.n_chunks == 0);
                if r.checked {
                    let e = acc_sum.entry(resp.source.clone()).or_default();
                    e.0 += c.acc as f64;
                    e.1 += 1;
                }
            }
            let e = rank_sum.entry(resp.source.clone()).or_default();
            e.0 += resp.final_rank as f64;
            e.1 += 1;
            meta.push(m);
        }
    }
    stats.mean_acc_by_source = acc_sum
        .into_iter()
        .map(|(k, (s, n))| (k, s / n as f64))
        .collect();
    stats.mean_final_rank_by_source = rank_sum
        .into_iter()
        .map(|(k, (s, n))| (k, s / n as f64))
        .collect();
    let amp_json = dir.join("amp.json");
    let meta_jsonl = dir.join("meta.jsonl");
    let stats_json = dir.join("stats.json");
    write_atomic(&amp_json, &serde_json::to_vec_pretty(&amp).unwrap())?;
    let mut m = Vec::new();
    for row in &meta {
        serde_json::to_writer(&mut m, row).unwrap();
        m.push(b'\n');
    }
    write_atomic(&meta_jsonl, &m)?;
    let diagnostics_jsonl = dir.join("diagnostics.jsonl");
    let mut d = Vec::new();
    for r in &rows {
        serde_json::to_writer(&mut d, &crate::explain::SampleDiagnostics::from_row(r)).unwrap();
        d.push(b'\n');
    }
    write_atomic(&diagnostics_jsonl, &d)?;
    write_atomic(&stats_json, &serde_json::to_vec_pretty(&stats).unwrap())?;
    Ok(FinalOutputs {
        amp_json,
        meta_jsonl,
        diagnostics_jsonl,
        stats_json,
        stats,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn check_blocks_join_a_short_tail_to_the_block_before() {
        use super::{check_blocks, CHECK_BLOCK};
        let q = CHECK_BLOCK / 4;
        let sizes = |n: usize| -> Vec<usize> {
            let rows: Vec<usize> = (0..n).collect();
            let blocks = check_blocks(&rows);
            // consecutive, in order, every row once
            assert_eq!(blocks.concat(), rows);
            blocks.iter().map(|b| b.len()).collect()
        };
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert_eq!(sizes(3), vec![3]);
        assert_eq!(sizes(CHECK_BLOCK), vec![CHECK_BLOCK]);
        assert_eq!(sizes(CHECK_BLOCK + 3), vec![CHECK_BLOCK + 3]);
        assert_eq!(sizes(CHECK_BLOCK + q), vec![CHECK_BLOCK, q]);
        assert_eq!(sizes(3 * CHECK_BLOCK + q - 1), vec![CHECK_BLOCK, CHECK_BLOCK, CHECK_BLOCK + q - 1]);
        for n in 0..600 {
            let b = sizes(n);
            assert_eq!(b.iter().sum::<usize>(), n);
            assert!(b.iter().all(|&l| l > 0 && l < CHECK_BLOCK + q));
            assert!(b[..b.len().saturating_sub(1)].iter().all(|&l| l == CHECK_BLOCK));
        }
    }

    use super::*;

    #[test]
    fn shards_partition_ids() {
        let ids: Vec<String> = (0..200).map(|i| format!("id-{i}")).collect();
        let n = 3;
        let mut counts = [0usize; 3];
        for id in &ids {
            let owners: Vec<usize> = (0..n)
                .filter(|&i| Shard { index: i, count: n }.owns(id))
                .collect();
            assert_eq!(owners.len(), 1);
            counts[owners[0]] += 1;
        }
        assert!(counts.iter().all(|&c| c > 40), "{counts:?}");
        assert!("1/3".parse::<Shard>().is_ok());
        assert!("3/3".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().is_err());
    }
}
