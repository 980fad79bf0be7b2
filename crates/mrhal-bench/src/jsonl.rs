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
    /// A torn final line (no newline: a kill mid-write) is cut off and reported on stderr; any
    /// other bad line is an error naming the file and line.
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
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| BenchError::io(path, e))?;
        let r = amp_io::jsonl::parse_resume::<T>(path, &bytes).map_err(parse_error)?;
        if let Some(t) = r.dropped {
            eprintln!("{}", t.note(path));
            file.set_len(r.good_len).map_err(|e| BenchError::io(path, e))?;
            file.seek(SeekFrom::End(0)).map_err(|e| BenchError::io(path, e))?;
        }
        let records = r.rows.into_iter().map(|l| l.value).collect();
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

/// A strict-reader error as this crate's error (file and line kept in the message).
pub(crate) fn parse_error(e: amp_io::jsonl::JsonlError) -> BenchError {
    use amp_io::jsonl::JsonlError as J;
    match e {
        J::Io { path, source } => BenchError::Io { path, source },
        other => {
            let msg = other.to_string();
            let path = match &other {
                J::Empty { path } | J::Array { path } | J::Malformed { path, .. } | J::Io { path, .. } => path.clone(),
            };
            let reason = msg.strip_prefix(&format!("{}: ", path.display())).unwrap_or(&msg).to_string();
            BenchError::Parse { path, reason }
        }
    }
}

/// Reads a JSONL file handed in as input (an answers or judgments file written by an earlier
/// command) strictly, with line numbers: a malformed or truncated line, or a JSON array, is an
/// error naming the file and line. An empty file has no records (nothing was done yet).
pub fn read_jsonl_lines<T: DeserializeOwned>(path: &Path) -> Result<Vec<amp_io::jsonl::Line<T>>> {
    match amp_io::jsonl::read_strict(path) {
        Ok(v) => Ok(v),
        Err(amp_io::jsonl::JsonlError::Empty { .. }) => Ok(Vec::new()),
        Err(e) => Err(parse_error(e)),
    }
}

/// [`read_jsonl_lines`] without the line numbers.
pub fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    Ok(read_jsonl_lines(path)?.into_iter().map(|l| l.value).collect())
}
