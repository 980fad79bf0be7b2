//! The run log: `metrics.jsonl` (one [`StepLog`] row per optimizer step, plus event rows such as a
//! config override) and the PNG curves drawn from it ([`plot`]).
//!
//! Rows are appended and flushed after every step. On resume the file is cut back to the
//! checkpoint's step, so a crash between a checkpoint and the next one repeats no row and loses
//! none.
pub mod plot;

use crate::checkpoint::{io_err, write_atomic};
use crate::loss::LossMetrics;
use crate::{MdpoError, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

/// One JSONL row of `metrics.jsonl`, written after every optimizer step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    /// The step number (1-based: the number of optimizer steps done after this one).
    pub step: usize,
    pub epoch: usize,
    /// The loss (MDPO) or the token-mean NLL (SFT); `null` in JSON when not finite.
    #[serde(with = "nan_as_null")]
    pub loss: f64,
    pub lr: f64,
    /// Global gradient norm before clipping; `null` in JSON when not finite.
    #[serde(with = "nan_as_null")]
    pub grad_norm: f64,
    /// Whether the non-finite guard skipped this step, and the total so far.
    pub skipped: bool,
    pub skipped_total: usize,
    pub examples: usize,
    /// Response tokens processed by the policy (all levels).
    pub tokens: f64,
    pub tokens_per_s: f64,
    pub samples_per_s: f64,
    /// Mean reward accuracy and margin over all pairs `i < j` (MDPO only).
    pub reward_accuracy: Option<f64>,
    pub reward_margin: Option<f64>,
    /// Mean per-token (weighted) policy log-prob of every level.
    pub level_token_logps: Vec<f64>,
    /// Per-pair and per-level metrics (MDPO only).
    pub metrics: Option<LossMetrics>,
}

mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_none()
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

/// The open `metrics.jsonl` of a run.
pub(crate) struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Opens `output_dir/metrics.jsonl` for appending: empty for a fresh run, cut back to the
    /// rows of steps `<= resume_step` when resuming.
    pub fn open(output_dir: &Path, resume_step: Option<usize>) -> Result<Self> {
        let path = output_dir.join("metrics.jsonl");
        match resume_step {
            Some(step) if path.exists() => {
                let mut text = String::new();
                for line in read_lines(&path)? {
                    let keep = serde_json::from_str::<serde_json::Value>(&line)
                        .ok()
                        .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                        .is_some_and(|s| s as usize <= step);
                    if keep {
                        text.push_str(&line);
                        text.push('\n');
                    }
                }
                write_atomic(&path, text.as_bytes())?;
            }
            _ => write_atomic(&path, b"")?,
        }
        let file = std::fs::OpenOptions::new().append(true).open(&path).map_err(io_err(&path))?;
        Ok(Self { path, file })
    }

    fn append<T: Serialize>(&mut self, row: &T) -> Result<()> {
        let mut line = serde_json::to_string(row).map_err(|source| MdpoError::Json { path: self.path.clone(), source })?;
        line.push('\n');
        self.file.write_all(line.as_bytes()).map_err(io_err(&self.path))?;
        self.file.flush().map_err(io_err(&self.path))
    }

    /// Appends a step row.
    pub fn step(&mut self, log: &StepLog) -> Result<()> {
        self.append(log)
    }

    /// Appends an event row `{"event": name, "step": step, ...detail}` (skipped by
    /// [`read_metrics`]).
    pub fn event(&mut self, name: &str, step: usize, detail: serde_json::Value) -> Result<()> {
        let mut row = serde_json::json!({ "event": name, "step": step });
        if let (Some(row), serde_json::Value::Object(d)) = (row.as_object_mut(), detail) {
            row.extend(d);
        }
        self.append(&row)
    }
}

fn read_lines(path: &Path) -> Result<Vec<String>> {
    let f = File::open(path).map_err(io_err(path))?;
    std::io::BufReader::new(f).lines().collect::<std::io::Result<_>>().map_err(io_err(path))
}

/// Reads the step rows of a `metrics.jsonl` file (blank lines and event rows skipped; a torn last
/// line from a crash is ignored).
pub fn read_metrics(path: &Path) -> Result<Vec<StepLog>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let lines = read_lines(path)?;
    let mut out = Vec::new();
    let last = lines.len().saturating_sub(1);
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() || is_event(line) {
            continue;
        }
        match serde_json::from_str::<StepLog>(line) {
            Ok(r) => out.push(r),
            Err(_) if i == last => {}
            Err(e) => {
                return Err(MdpoError::Data { path: path.into(), location: format!("line {}", i + 1), message: e.to_string() })
            }
        }
    }
    Ok(out)
}

/// Reads the event rows (e.g. `override_config`) of a `metrics.jsonl` file.
pub fn read_events(path: &Path) -> Result<Vec<serde_json::Value>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    Ok(read_lines(path)?
        .iter()
        .filter(|l| is_event(l))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

fn is_event(line: &str) -> bool {
    line.contains("\"event\"")
        && serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| v.get("event").is_some())
}

/// A progress bar in the trainer's style.
pub(crate) fn progress(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} ({eta}) {msg}")
            .expect("valid template"),
    );
    pb.set_prefix(what.to_string());
    pb
}
