//! The JSONL readers of the workspace (docs/reliability.md, "Strict readers").
//!
//! Two modes, never mixed:
//!
//! * [`read_strict`] / [`parse_strict`] for **user input** (a generated-rows file given to
//!   `amp check`, an answers file given to `amp eval judge`, a benchmark file): every non-blank
//!   line must be one JSON value of the expected type. A malformed or truncated line is an error
//!   naming `file: line N`; a final line without a newline is accepted when it is complete; a file
//!   that is a JSON array, or that holds no record at all, is an error saying what was expected.
//!   Nothing is ever dropped silently.
//! * [`read_resume`] / [`parse_resume`] only for resuming a command's **own** append-only output,
//!   where a kill during a write can leave a torn last line (no trailing newline). That tail is
//!   reported in [`Resumed::dropped`] (callers print [`TornTail::note`]) so the caller can cut it
//!   off and redo that record; a bad line anywhere else is still an error.
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// Why a JSONL file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum JsonlError {
    /// The file could not be read.
    #[error("{path}: {source}", path = path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file has no record (empty, or only blank lines).
    #[error("{path}: the file is empty: expected JSON Lines (one JSON object per line)", path = path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The file is one JSON array, not JSON Lines.
    #[error(
        "{path}: the file is a JSON array, but JSON Lines are expected (one JSON object per line, \
         no enclosing [ ]); convert it, e.g. `jq -c '.[]' in.json > out.jsonl`",
        path = path.display()
    )]
    Array {
        /// The file.
        path: PathBuf,
    },
    /// A line is not a valid record.
    #[error("{path}: line {line}: {reason}", path = path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong (serde's message names the field for a missing or mistyped one).
        reason: String,
    },
}

/// Result alias of this module.
pub type Result<T, E = JsonlError> = std::result::Result<T, E>;

/// A record with its 1-based line number (for errors that name a field of a record later).
#[derive(Debug, Clone, PartialEq)]
pub struct Line<T> {
    /// 1-based line number in the file.
    pub line: usize,
    /// The record.
    pub value: T,
}

/// Iterates over `(1-based line number, line bytes, ends with newline)`.
fn lines(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8], bool)> {
    let mut start = 0usize;
    let mut no = 0usize;
    std::iter::from_fn(move || {
        if start >= bytes.len() {
            return None;
        }
        no += 1;
        let (end, next, nl) = match bytes[start..].iter().position(|&b| b == b'\n') {
            Some(p) => (start + p, start + p + 1, true),
            None => (bytes.len(), bytes.len(), false),
        };
        let line = &bytes[start..end];
        start = next;
        Some((no, line, nl))
    })
}

fn blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

fn parse_line<T: DeserializeOwned>(path: &Path, no: usize, line: &[u8], nl: bool) -> Result<T> {
    serde_json::from_slice::<T>(line).map_err(|e| {
        let reason = if !nl && e.is_eof() {
            format!("truncated record (the file ends inside it): {e}")
        } else {
            format!("not a valid record: {e}")
        };
        JsonlError::Malformed { path: path.to_path_buf(), line: no, reason }
    })
}

/// Strict JSONL of `bytes` read from `path` (named in errors). See the module docs.
pub fn parse_strict<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<Vec<Line<T>>> {
    let bytes = strip_bom(bytes);
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(JsonlError::Array { path: path.to_path_buf() });
    }
    let mut out = Vec::new();
    for (no, line, nl) in lines(bytes) {
        if blank(line) {
            continue;
        }
        out.push(Line { line: no, value: parse_line(path, no, line, nl)? });
    }
    if out.is_empty() {
        return Err(JsonlError::Empty { path: path.to_path_buf() });
    }
    Ok(out)
}

/// Reads user-input JSONL strictly (see the module docs).
pub fn read_strict<T: DeserializeOwned>(path: &Path) -> Result<Vec<Line<T>>> {
    let bytes = std::fs::read(path).map_err(|source| JsonlError::Io { path: path.to_path_buf(), source })?;
    parse_strict(path, &bytes)
}

/// [`read_strict`] without the line numbers.
pub fn read_strict_values<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    Ok(read_strict(path)?.into_iter().map(|l| l.value).collect())
}

/// A torn last line found while resuming: a kill happened while it was being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TornTail {
    /// Its 1-based line number.
    pub line: usize,
    /// Its length in bytes (what is cut off).
    pub bytes: usize,
}

impl TornTail {
    /// The message to print when the tail is dropped.
    pub fn note(&self, path: &Path) -> String {
        format!(
            "{}: dropping the torn last line {} ({} bytes, no newline: the previous run was killed while \
             writing it); that record is redone",
            path.display(),
            self.line,
            self.bytes
        )
    }
}

/// The records of a command's own output file, for resuming.
#[derive(Debug, Clone, PartialEq)]
pub struct Resumed<T> {
    /// Every complete record.
    pub rows: Vec<Line<T>>,
    /// Length in bytes of the prefix holding them (cut the file to this before appending).
    pub good_len: u64,
    /// The torn last line, if there was one.
    pub dropped: Option<TornTail>,
}

/// Lenient JSONL for resuming a command's own output: a last line without a newline is dropped
/// and reported (it was never acknowledged as written: writers append the newline and fsync
/// before reporting a record done); every other bad line is an error. An empty file is fine.
pub fn parse_resume<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<Resumed<T>> {
    let mut rows = Vec::new();
    let mut good_len = 0u64;
    let mut offset = 0usize;
    for (no, line, nl) in lines(bytes) {
        let consumed = line.len() + usize::from(nl);
        if !nl {
            let dropped = (!line.is_empty()).then_some(TornTail { line: no, bytes: line.len() });
            return Ok(Resumed { rows, good_len, dropped });
        }
        if !blank(line) {
            rows.push(Line { line: no, value: parse_line(path, no, line, nl)? });
        }
        offset += consumed;
        good_len = offset as u64;
    }
    Ok(Resumed { rows, good_len, dropped: None })
}

/// [`parse_resume`] of the file at `path`; a missing file has no records.
pub fn read_resume<T: DeserializeOwned>(path: &Path) -> Result<Resumed<T>> {
    match std::fs::read(path) {
        Ok(bytes) => parse_resume(path, &bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Resumed { rows: vec![], good_len: 0, dropped: None }),
        Err(source) => Err(JsonlError::Io { path: path.to_path_buf(), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct R {
        id: u32,
    }

    fn p() -> &'static Path {
        Path::new("in.jsonl")
    }

    #[test]
    fn strict_accepts_a_last_line_without_newline_and_skips_blank_lines() {
        let v: Vec<Line<R>> = parse_strict(p(), b"{\"id\":1}\n\n{\"id\":2}").unwrap();
        assert_eq!(v, vec![Line { line: 1, value: R { id: 1 } }, Line { line: 3, value: R { id: 2 } }]);
        let v: Vec<Line<R>> = parse_strict(p(), b"\xEF\xBB\xBF{\"id\":1}\r\n").unwrap();
        assert_eq!(v.len(), 1);
    }

    #[test]
    fn strict_refuses_truncated_malformed_array_and_empty() {
        let e = parse_strict::<R>(p(), b"{\"id\":1}\n{\"id\":").unwrap_err().to_string();
        assert!(e.starts_with("in.jsonl: line 2: truncated record"), "{e}");
        let e = parse_strict::<R>(p(), b"{\"id\":1}\nnope\n{\"id\":3}\n").unwrap_err().to_string();
        assert!(e.starts_with("in.jsonl: line 2: not a valid record"), "{e}");
        let e = parse_strict::<R>(p(), b"{\"name\":1}\n").unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("missing field `id`"), "{e}");
        let e = parse_strict::<R>(p(), b"  [{\"id\":1}]").unwrap_err().to_string();
        assert!(e.contains("JSON array") && e.contains("one JSON object per line"), "{e}");
        for empty in [&b""[..], b"\n \n"] {
            let e = parse_strict::<R>(p(), empty).unwrap_err().to_string();
            assert!(e.contains("empty") && e.contains("one JSON object per line"), "{e}");
        }
    }

    #[test]
    fn resume_drops_and_reports_only_a_torn_tail() {
        let r: Resumed<R> = parse_resume(p(), b"{\"id\":1}\n{\"id\":2}\n{\"id\"").unwrap();
        assert_eq!(r.rows.len(), 2);
        assert_eq!(r.good_len, 18);
        assert_eq!(r.dropped, Some(TornTail { line: 3, bytes: 5 }));
        assert!(r.dropped.unwrap().note(p()).contains("in.jsonl: dropping the torn last line 3"));
        // A complete but unterminated last line was never acknowledged: it is dropped too.
        let r: Resumed<R> = parse_resume(p(), b"{\"id\":1}\n{\"id\":2}").unwrap();
        assert_eq!((r.rows.len(), r.good_len, r.dropped.map(|d| d.line)), (1, 9, Some(2)));
        let r: Resumed<R> = parse_resume(p(), b"").unwrap();
        assert_eq!((r.rows.len(), r.dropped), (0, None));
        assert!(parse_resume::<R>(p(), b"{\"id\":1}\nbad\n{\"id\":2}\n").unwrap_err().to_string().contains("line 2"));
    }
}
