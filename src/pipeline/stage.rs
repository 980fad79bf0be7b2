//! Resumable stages: a stage is skipped when its outputs exist and its recorded key (a hash of
//! the configuration it ran with, chained to the keys of the stages it reads) matches.
use super::{io_err, read_json, write_json, Result, StageTiming};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Done {
    key: String,
    wall_s: f64,
}

/// The stage bookkeeping of one run directory (`<run>/stages/<stage>.json`).
pub struct Stages {
    dir: PathBuf,
    resume: bool,
    keys: BTreeMap<String, String>,
    timings: Vec<StageTiming>,
}

fn file_name(stage: &str) -> String {
    stage.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// SHA-256 of a value's JSON.
pub fn hash_key<K: Serialize + ?Sized>(key: &K) -> String {
    let s = serde_json::to_vec(key).expect("stage keys serialise");
    hex::encode(&Sha256::digest(&s)[..16])
}

impl Stages {
    pub fn new(root: &Path, resume: bool) -> Self {
        Self { dir: root.join("stages"), resume, keys: BTreeMap::new(), timings: Vec::new() }
    }

    /// The key a stage ran (or was skipped) with in this run; `""` if it has not run.
    pub fn key_of(&self, stage: &str) -> String {
        self.keys.get(stage).cloned().unwrap_or_default()
    }

    /// Timings so far, in run order.
    pub fn timings(&self) -> &[StageTiming] {
        &self.timings
    }

    /// Record a timing measured by the caller.
    pub fn record(&mut self, stage: &str, wall_s: f64, skipped: bool) {
        self.timings.push(StageTiming { stage: stage.into(), skipped, wall_s, previous_s: wall_s });
    }

    /// Run `f` unless `stage` already finished with the same `key` and every path in `outputs`
    /// exists. `f` gets the stage name. Prints one line per stage to stderr.
    pub fn run<K: Serialize + ?Sized>(
        &mut self,
        stage: &str,
        key: &K,
        outputs: &[PathBuf],
        f: impl FnOnce(&str) -> Result<()>,
    ) -> Result<()> {
        let key = hash_key(key);
        let marker = self.dir.join(format!("{}.json", file_name(stage)));
        if self.resume && marker.is_file() && outputs.iter().all(|p| p.exists()) {
            if let Ok(done) = read_json::<Done>(&marker) {
                if done.key == key {
                    eprintln!("[demo] {stage}: done before ({:.1} s), skipped", done.wall_s);
                    self.timings.push(StageTiming { stage: stage.into(), skipped: true, wall_s: 0.0, previous_s: done.wall_s });
                    self.keys.insert(stage.into(), key);
                    return Ok(());
                }
            }
        }
        if marker.exists() {
            std::fs::remove_file(&marker).map_err(io_err(&marker))?;
        }
        eprintln!("[demo] {stage} ...");
        let t = Instant::now();
        f(stage)?;
        let wall_s = t.elapsed().as_secs_f64();
        eprintln!("[demo] {stage}: {wall_s:.1} s");
        write_json(&marker, &Done { key: key.clone(), wall_s })?;
        self.timings.push(StageTiming { stage: stage.into(), skipped: false, wall_s, previous_s: wall_s });
        self.keys.insert(stage.into(), key);
        Ok(())
    }
}

/// Prepare the working directory of a stage that keeps its own resumable state (trainer
/// checkpoints): kept when it was started for the same `key` (an interrupted run resumes), emptied
/// when it holds the state of another configuration.
pub fn work_dir<K: Serialize + ?Sized>(dir: &Path, key: &K) -> Result<()> {
    let key = hash_key(key);
    let marker = dir.join("stage.key");
    let same = std::fs::read_to_string(&marker).map(|k| k.trim() == key).unwrap_or(false);
    if dir.exists() && !same {
        std::fs::remove_dir_all(dir).map_err(io_err(dir))?;
    }
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    std::fs::write(&marker, &key).map_err(io_err(&marker))
}

/// A cheap fingerprint of a saved model directory (file names, sizes and modification times).
pub(crate) fn fingerprint_dir(dir: &Path) -> String {
    let mut h = Sha256::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir).map(|rd| rd.flatten().collect()).unwrap_or_default();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        h.update(e.file_name().to_string_lossy().as_bytes());
        if let Ok(m) = e.metadata() {
            h.update(m.len().to_le_bytes());
            if let Ok(t) = m.modified().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).map_err(std::io::Error::other)) {
                h.update(t.as_nanos().to_le_bytes());
            }
        }
    }
    hex::encode(&h.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_dirs_keep_state_for_the_same_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let w = dir.path().join("w");
        work_dir(&w, &1u32).unwrap();
        std::fs::write(w.join("ckpt"), "x").unwrap();
        work_dir(&w, &1u32).unwrap();
        assert!(w.join("ckpt").exists());
        work_dir(&w, &2u32).unwrap();
        assert!(!w.join("ckpt").exists() && w.join("stage.key").exists());
    }

    #[test]
    fn stages_skip_only_with_the_same_key_and_existing_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("o.txt");
        let mut runs = 0;
        let go = |st: &mut Stages, key: u32, runs: &mut i32| {
            st.run("a b", &key, std::slice::from_ref(&out), |_| {
                *runs += 1;
                std::fs::write(&out, "x").unwrap();
                Ok(())
            })
            .unwrap()
        };
        let mut st = Stages::new(dir.path(), true);
        go(&mut st, 1, &mut runs);
        go(&mut st, 1, &mut runs);
        assert_eq!(runs, 1);
        go(&mut st, 2, &mut runs);
        assert_eq!(runs, 2);
        std::fs::remove_file(&out).unwrap();
        go(&mut st, 2, &mut runs);
        assert_eq!(runs, 3);
        let mut st2 = Stages::new(dir.path(), false);
        go(&mut st2, 2, &mut runs);
        assert_eq!(runs, 4);
        assert!(st.timings().iter().any(|t| t.skipped));
        assert_eq!(st.key_of("a b"), hash_key(&2u32));
        // A failed stage leaves no marker: it reruns.
        let mut st3 = Stages::new(dir.path(), true);
        assert!(st3.run("a b", &3u32, &[], |_| Err(super::super::DemoError::Config("boom".into()))).is_err());
        assert!(!dir.path().join("stages/a_b.json").exists());
    }
}
