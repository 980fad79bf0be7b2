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

/// How much of each file [`fingerprint_dir`] reads.
#[derive(Debug, Clone, Copy)]
struct Sampling {
    /// Files up to this size are hashed whole.
    whole: u64,
    /// Larger files: their first `head` bytes (a safetensors header and the tensors after it) ...
    head: usize,
    /// ... and 16 windows of `window` bytes spread evenly over the rest, the last at the end.
    window: usize,
}

const SAMPLING: Sampling = Sampling { whole: 64 << 20, head: 1 << 20, window: 64 << 10 };
const WINDOWS: u64 = 16;

/// A fingerprint of a saved model directory by content (the stage keys of the demo's generation
/// and evaluation, and of an IG fine-tune's base): every file's path relative to `dir`, its size,
/// and its bytes: whole up to 64 MiB (every file of the demo's models), larger files (a 7B
/// checkpoint's shards) by their first MiB and 16 windows of 64 KiB spread over the rest, about
/// 2 MiB read per file. A directory copied with new modification times (`cp -r`, `rsync` without
/// `-t`, another machine) keys the same stages as the original; retrained weights do not. A
/// change confined to the unread bytes of a file over 64 MiB goes unseen, the trade the checkpoint
/// fingerprint makes for the same reason (docs/scale.md). Unreadable entries hash as such: the
/// stage that loads them reports the error.
pub(crate) fn fingerprint_dir(dir: &Path) -> String {
    fingerprint_with(dir, SAMPLING)
}

fn fingerprint_with(dir: &Path, sampling: Sampling) -> String {
    let mut h = Sha256::new();
    h.update(b"amp-dir-v2");
    hash_tree(&mut h, dir, "", sampling);
    hex::encode(&h.finalize()[..16])
}

fn hash_tree(h: &mut Sha256, dir: &Path, rel: &str, sampling: Sampling) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        h.update(b"\0unreadable dir");
        return;
    };
    let mut entries: Vec<_> = rd.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = format!("{rel}{}", e.file_name().to_string_lossy());
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        // Symbolic links to files (a Hugging Face cache snapshot) are followed; links to
        // directories are not, so a cycle cannot recurse.
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            h.update(b"/");
            hash_tree(h, &e.path(), &format!("{name}/"), sampling);
            continue;
        }
        match hash_file(&e.path(), sampling) {
            Ok((len, digest)) => {
                h.update(len.to_le_bytes());
                h.update(digest);
            }
            Err(_) => h.update(b"\0unreadable file"),
        }
    }
}

fn hash_file(path: &Path, sampling: Sampling) -> std::io::Result<(u64, [u8; 32])> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let mut fh = Sha256::new();
    if len <= sampling.whole {
        std::io::copy(&mut f, &mut fh)?;
    } else {
        let mut buf = vec![0u8; sampling.head.min(len as usize)];
        f.read_exact(&mut buf)?;
        fh.update(&buf);
        buf.resize(sampling.window.min(len as usize), 0);
        let span = len - buf.len() as u64;
        for i in 1..=WINDOWS {
            f.seek(SeekFrom::Start(span * i / WINDOWS))?;
            f.read_exact(&mut buf)?;
            fh.update(&buf);
        }
    }
    Ok((len, fh.finalize().into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model directory (a nested file, a small one, a large one), written now.
    fn model_dir(d: &Path) {
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("config.json"), b"{\"d\": 48}").unwrap();
        std::fs::write(d.join("model.safetensors"), (0..5000u32).map(|i| (i * 7 % 251) as u8).collect::<Vec<u8>>()).unwrap();
        std::fs::write(d.join("sub/tokenizer.json"), b"{}").unwrap();
    }

    fn set_byte(path: &Path, at: u64, value: u8) {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&[value]).unwrap();
    }

    #[test]
    fn directory_fingerprints_follow_content_not_modification_times() {
        let small = Sampling { whole: 1000, head: 100, window: 10 };
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        model_dir(&a);
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        for f in ["config.json", "model.safetensors", "sub/tokenizer.json"] {
            std::fs::File::options().write(true).open(a.join(f)).unwrap().set_modified(old).unwrap();
        }
        let fp = |d: &Path| fingerprint_with(d, small);
        let base = fp(&a);
        assert_eq!(base, fingerprint_with(&a, small), "deterministic");

        // The same files with other modification times (as a copy has): the same fingerprint
        // (sizes and times, the key before, differ).
        let b = dir.path().join("b");
        model_dir(&b);
        assert_ne!(std::fs::metadata(b.join("config.json")).unwrap().modified().unwrap(), old);
        assert_eq!(fp(&b), base);
        assert_eq!(fingerprint_dir(&b), fingerprint_dir(&a));

        // Any change of content, name or size changes it: a small file, a nested one, a large
        // file's head and one of its windows (the 10th of 16: offset (5000 - 10) * 10 / 16).
        let changed = |edit: &dyn Fn(&Path)| {
            let c = dir.path().join("c");
            let _ = std::fs::remove_dir_all(&c);
            model_dir(&c);
            edit(&c);
            fp(&c)
        };
        assert_ne!(changed(&|c| set_byte(&c.join("config.json"), 6, b'9')), base);
        assert_ne!(changed(&|c| set_byte(&c.join("sub/tokenizer.json"), 1, b' ')), base);
        assert_ne!(changed(&|c| set_byte(&c.join("model.safetensors"), 50, 0xff)), base);
        assert_ne!(changed(&|c| set_byte(&c.join("model.safetensors"), 3118 + 5, 0xff)), base);
        assert_ne!(changed(&|c| std::fs::rename(c.join("config.json"), c.join("config2.json")).unwrap()), base);
        assert_ne!(changed(&|c| std::fs::write(c.join("extra"), b"").unwrap()), base);
        // Unsampled bytes of a large file are the documented blind spot.
        assert_eq!(changed(&|c| set_byte(&c.join("model.safetensors"), 200, 0xff)), base);
    }

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
