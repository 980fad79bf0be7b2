//! Append-only, fsync'd JSONL files: the persistence behind resumable answering and judging.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{BenchError, Result};

/// An append-only JSONL file. Each [`append`](Self::append) writes one full line and fsyncs
/// before returning, so a killed run keeps every record it reported as written.
#[derive(Debug)]
pub struct JsonlLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl JsonlLog {
    /// Opens (creating) `path` and returns the log plus the records already in it.
    /// A torn final line (no newline: a kill mid-write) is cut off; any other bad line is an
    /// error naming the file and line.
    pub fn open<T: DeserializeOwned>(path: &Path) -> Result<(Self, Vec<T>)> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| BenchError::io(dir, e))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| BenchError::io(path, e))?;
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(|e| BenchError::io(path, e))?;
        if !text.is_empty() && !text.ends_with('\n') {
            let keep = text.rfind('\n').map_or(0, |i| i + 1);
            file.set_len(keep as u64).map_err(|e| BenchError::io(path, e))?;
            file.seek(SeekFrom::End(0)).map_err(|e| BenchError::io(path, e))?;
            text.truncate(keep);
        }
        let records = parse_lines(path, &text)?;
        Ok((JsonlLog { path: path.to_path_buf(), file: Mutex::new(file) }, records))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record and fsyncs.
    pub fn append<T: Serialize>(&self, rec: &T) -> Result<()> {
        let mut line = serde_json::to_string(rec).map_err(|e| BenchError::Invalid(format!("cannot encode record: {e}")))?;
        line.push('\n');
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(line.as_bytes()).and_then(|_| f.sync_data()).map_err(|e| BenchError::io(&self.path, e))
    }
}

fn parse_lines<T: DeserializeOwned>(path: &Path, text: &str) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        out.push(serde_json::from_str(line).map_err(|e| BenchError::Parse {
            path: path.into(),
            reason: format!("line {}: not a valid record: {e}", i + 1),
        })?);
    }
    Ok(out)
}

/// Reads every record of a JSONL file written by [`JsonlLog`] (read-only; a torn final line is
/// ignored).
pub fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let text = std::fs::read_to_string(path).map_err(|e| BenchError::io(path, e))?;
    let body = if text.ends_with('\n') || text.is_empty() { &text[..] } else { &text[..text.rfind('\n').map_or(0, |i| i + 1)] };
    parse_lines(path, body)
}
