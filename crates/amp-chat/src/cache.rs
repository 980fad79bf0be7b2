//! An fsync'd, append-only JSONL response cache keyed by a sha256 of the request.
//!
//! Design after lmms-eval's `response_cache.py` (docs/paper-notes.md §7): only deterministic requests
//! (temperature 0, n ≤ 1) are stored; errors and empty answers never are; every record is
//! appended and `fsync`ed before the answer is handed back, so a killed run loses nothing it was
//! told and a restarted run asks the server nothing it already answered. The file is the index:
//! it is replayed into a map on open. A torn last line (a kill mid-write) is cut off on open.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{ChatError, Result};
use crate::types::{ChatRequest, ChatResponse};

/// Version of the key derivation; bump it to invalidate every old entry.
pub const CACHE_KEY_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Record {
    key: String,
    response: ChatResponse,
}

/// The on-disk cache. Thread-safe; share it by reference.
#[derive(Debug)]
pub struct ResponseCache {
    path: PathBuf,
    map: Mutex<HashMap<String, ChatResponse>>,
    file: Mutex<File>,
}

/// The cache key of a request: hex sha256 of the canonical (sorted-key) JSON of
/// `{v, model, messages, temperature, top_p, max_tokens, seed, n}`. The base URL and API key are
/// deliberately not part of it (the same model served elsewhere answers the same question).
/// `model` must already be resolved (non-empty).
pub fn cache_key(req: &ChatRequest) -> String {
    let mut v = serde_json::to_value(req).expect("ChatRequest is always serialisable");
    if let serde_json::Value::Object(m) = &mut v {
        m.insert("v".into(), CACHE_KEY_VERSION.into());
    }
    // serde_json's Map is a BTreeMap (no preserve_order feature): keys are sorted, so the
    // serialisation is canonical.
    let canonical = serde_json::to_string(&v).expect("Value is always serialisable");
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

impl ResponseCache {
    /// Opens (creating if needed) the cache at `path` and replays it.
    /// Errors name the file and the 1-based line of a corrupt record.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let err = |reason: String| ChatError::Cache { path: path.clone(), reason };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create directory: {e}")))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| err(format!("cannot open: {e}")))?;
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(|e| err(format!("cannot read: {e}")))?;
        // Cut a torn final record (no trailing newline) so the next append starts a fresh line.
        if !text.is_empty() && !text.ends_with('\n') {
            let keep = text.rfind('\n').map_or(0, |i| i + 1);
            file.set_len(keep as u64).map_err(|e| err(format!("cannot truncate torn tail: {e}")))?;
            file.seek(SeekFrom::End(0)).map_err(|e| err(format!("cannot seek: {e}")))?;
            text.truncate(keep);
        }
        let mut map = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let rec: Record = serde_json::from_str(line)
                .map_err(|e| err(format!("line {}: not a cache record: {e}", i + 1)))?;
            map.insert(rec.key, rec.response);
        }
        Ok(ResponseCache { path, map: Mutex::new(map), file: Mutex::new(file) })
    }

    /// The cache file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of cached answers.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cached answer for `key`, marked `cached = true`.
    pub fn get(&self, key: &str) -> Option<ChatResponse> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).map(|r| ChatResponse { cached: true, ..r.clone() })
    }

    /// Appends (and fsyncs) an answer. Empty answers are refused silently (returns `Ok(false)`).
    pub fn put(&self, key: &str, response: &ChatResponse) -> Result<bool> {
        if response.content.trim().is_empty() {
            return Ok(false);
        }
        let rec = Record { key: key.to_string(), response: ChatResponse { cached: false, ..response.clone() } };
        let mut line = serde_json::to_string(&rec).map_err(|e| ChatError::Encode(e.to_string()))?;
        line.push('\n');
        {
            let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
            f.write_all(line.as_bytes())
                .and_then(|_| f.sync_data())
                .map_err(|e| ChatError::Cache { path: self.path.clone(), reason: format!("cannot append: {e}") })?;
        }
        self.map.lock().unwrap_or_else(|p| p.into_inner()).insert(rec.key, rec.response);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Message;

    fn resp(c: &str) -> ChatResponse {
        ChatResponse {
            content: c.into(),
            choices: vec![c.into()],
            model: "m-0613".into(),
            finish_reason: Some("stop".into()),
            usage: None,
            system_fingerprint: None,
            cached: false,
        }
    }

    #[test]
    fn key_depends_on_content_and_params_only() {
        let a = ChatRequest::new("m", vec![Message::user("q")]).temperature(0.0);
        assert_eq!(cache_key(&a), cache_key(&a.clone()));
        assert_ne!(cache_key(&a), cache_key(&a.clone().max_tokens(3)));
        assert_ne!(cache_key(&a), cache_key(&ChatRequest::new("m2", a.messages.clone()).temperature(0.0)));
        assert_ne!(cache_key(&a), cache_key(&ChatRequest::new("m", vec![Message::user("q2")]).temperature(0.0)));
        assert_eq!(cache_key(&a).len(), 64);
    }

    #[test]
    fn persists_skips_empty_and_cuts_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/cache.jsonl");
        {
            let c = ResponseCache::open(&p).unwrap();
            assert!(c.put("k1", &resp("hello")).unwrap());
            assert!(!c.put("k2", &resp("  ")).unwrap());
            assert_eq!(c.len(), 1);
        }
        // Simulate a kill mid-write.
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"key\":\"k3\",\"resp").unwrap();
        drop(f);
        let c = ResponseCache::open(&p).unwrap();
        assert_eq!(c.len(), 1);
        let got = c.get("k1").unwrap();
        assert!(got.cached);
        assert_eq!(got.content, "hello");
        assert!(c.get("k2").is_none());
        c.put("k4", &resp("x")).unwrap();
        drop(c);
        let c = ResponseCache::open(&p).unwrap();
        assert_eq!(c.len(), 2);
        // A corrupt record in the middle is an error naming the line.
        std::fs::write(&p, "not json\n").unwrap();
        let e = ResponseCache::open(&p).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
        assert!(e.contains("cache.jsonl"), "{e}");
    }
}
