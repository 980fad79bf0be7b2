//! Preference data: LLaVA conversations and the AMP training format.
//!
//! The AMP training file (authors' code, `data_utils_dpo.py`) is a JSON list of
//! `{"image": "...", "output_1": [...], ..., "output_K": [...]}` where every `output_k` is a full
//! LLaVA conversation (`[{"from": "human", "value": "<image>\n..."}, {"from": "gpt", ...}, ...]`)
//! and `output_1` is the best response.
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One turn of a LLaVA conversation: `from` is `"human"` or `"gpt"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    pub from: String,
    pub value: String,
}

/// A LLaVA conversation: alternating human and gpt turns, human first.
pub type Conversation = Vec<Turn>;

/// One training example: a prompt (image plus human turns) and K responses, best first.
///
/// All K conversations share the same human turns; they differ in the gpt turns.
#[derive(Debug, Clone, PartialEq)]
pub struct PreferenceExample {
    /// A stable identifier (the record index in the source file when it has no id).
    pub id: String,
    /// The image, if the conversation has one.
    pub image: Option<PathBuf>,
    /// K conversations, best first (level 0 is the superior response).
    pub responses: Vec<Conversation>,
}

impl PreferenceExample {
    /// Number of levels K.
    pub fn levels(&self) -> usize {
        self.responses.len()
    }
}

use crate::{MdpoError, Result};
use serde_json::Value;
use sha2::{Digest, Sha256};
use amp_io::paths::DataRoot;
use std::path::Path;

/// Options of [`load_amp_file`] and [`load_sft_file`].
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Required number of levels K (`None`: take K from the first record and require it of all).
    pub levels: Option<usize>,
    /// The data root (`--image-root`): relative image paths resolve against it, and a path that
    /// leaves it (`..`, an absolute path elsewhere) is refused unless `allow_outside_root`
    /// ([`amp_io::paths::DataRoot`], docs/reliability.md). `None`: the data file's directory.
    pub image_root: Option<PathBuf>,
    /// Fail when an image file does not exist (default in the loaders' callers: `true`).
    pub check_images: bool,
    /// Accept image paths outside the data root (`--allow-outside-root`).
    pub allow_outside_root: bool,
}

fn data_err(path: &Path, location: impl Into<String>, message: impl Into<String>) -> MdpoError {
    MdpoError::Data { path: path.to_path_buf(), location: location.into(), message: message.into() }
}

fn read_json_list(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).map_err(|source| MdpoError::Io { path: path.into(), source })?;
    let v: Value = serde_json::from_str(&text).map_err(|e| {
        data_err(path, format!("line {} column {}", e.line(), e.column()), format!("malformed JSON: {e}"))
    })?;
    match v {
        Value::Array(a) => Ok(a),
        other => Err(data_err(path, "top level", format!("expected a JSON list of records, found {}", kind_of(&other)))),
    }
}

/// How a JSON value reads in an error message (shared with the other crates' readers).
pub use amp_io::json::kind_of;

fn parse_conversation(path: &Path, loc: &str, v: &Value) -> Result<Conversation> {
    let turns = v
        .as_array()
        .ok_or_else(|| data_err(path, loc, format!("expected a list of turns, found {}", kind_of(v))))?;
    if turns.is_empty() {
        return Err(data_err(path, loc, "empty conversation"));
    }
    let mut conv = Vec::with_capacity(turns.len());
    for (t, turn) in turns.iter().enumerate() {
        let tloc = format!("{loc}[{t}]");
        let turn: Turn = serde_json::from_value(turn.clone())
            .map_err(|e| data_err(path, &tloc, format!("expected {{\"from\", \"value\"}}: {e}")))?;
        let expected = if t % 2 == 0 { "human" } else { "gpt" };
        if turn.from != expected {
            return Err(data_err(
                path,
                format!("{tloc}.from"),
                format!("expected \"{expected}\" (turns alternate human/gpt, human first), found \"{}\"", turn.from),
            ));
        }
        conv.push(turn);
    }
    if conv.len() % 2 != 0 {
        return Err(data_err(path, loc, "the conversation ends with a human turn: no response to train on"));
    }
    Ok(conv)
}

fn parse_image(path: &Path, loc: &str, rec: &serde_json::Map<String, Value>, root: &DataRoot, opts: &LoadOptions) -> Result<Option<PathBuf>> {
    let Some(v) = rec.get("image") else { return Ok(None) };
    let field = format!("{loc}.image");
    let s = v
        .as_str()
        .ok_or_else(|| data_err(path, &field, format!("expected a path string, found {}", kind_of(v))))?;
    let p = root.resolve(s).map_err(|e| data_err(path, &field, e.to_string()))?;
    if opts.check_images && !p.is_file() {
        return Err(data_err(
            path,
            &field,
            format!(
                "image file {} does not exist (relative paths resolve against the data root {}; set it with --image-root)",
                p.display(),
                root.root().display()
            ),
        ));
    }
    Ok(Some(p))
}

/// The data root of `path` under `opts`.
fn data_root(path: &Path, opts: &LoadOptions) -> DataRoot {
    DataRoot::for_data_file(path, opts.image_root.as_deref(), opts.allow_outside_root)
}

fn record_id(path: &Path, loc: &str, rec: &serde_json::Map<String, Value>, index: usize) -> Result<String> {
    Ok(match rec.get("id") {
        None | Some(Value::Null) => index.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => {
            return Err(data_err(path, format!("{loc}.id"), format!("expected a string or number, found {}", kind_of(other))))
        }
    })
}

/// Loads the AMP training format (§4d): a JSON list of `{image, output_1..output_K[, id]}`, each
/// `output_k` a LLaVA conversation, best first.
///
/// Errors name the file, the record index and the field: malformed JSON, a record with a
/// different number of levels than `opts.levels` (or than the first record), an image path
/// outside the data root ([`LoadOptions::image_root`]) or a missing image file, a malformed
/// conversation, or levels whose human turns (the prompt) differ.
pub fn load_amp_file(path: &Path, opts: &LoadOptions) -> Result<Vec<PreferenceExample>> {
    let records = read_json_list(path)?;
    let root = data_root(path, opts);
    let mut out = Vec::with_capacity(records.len());
    let mut k_expected = opts.levels;
    for (i, rec) in records.iter().enumerate() {
        let loc = format!("record {i}");
        let obj = rec
            .as_object()
            .ok_or_else(|| data_err(path, &loc, format!("expected an object, found {}", kind_of(rec))))?;
        let mut levels: Vec<usize> = Vec::new();
        for key in obj.keys() {
            if let Some(n) = key.strip_prefix("output_") {
                let n: usize = n
                    .parse()
                    .map_err(|_| data_err(path, format!("{loc}.{key}"), "level keys are output_1, output_2, …"))?;
                levels.push(n);
            }
        }
        levels.sort_unstable();
        if levels.is_empty() {
            return Err(data_err(path, &loc, "no output_1..output_K fields"));
        }
        if let Some(gap) = (1..=levels.len()).find(|n| levels[n - 1] != *n) {
            return Err(data_err(path, &loc, format!("level keys must be output_1..output_{}: output_{gap} is missing", levels.len())));
        }
        let k = levels.len();
        match k_expected {
            Some(want) if want != k => {
                let what = if opts.levels.is_some() { "the configured K".to_string() } else { "record 0".to_string() };
                return Err(data_err(
                    path,
                    &loc,
                    format!("has {k} levels (output_1..output_{k}) but {what} has K = {want}"),
                ));
            }
            None => k_expected = Some(k),
            _ => {}
        }
        let mut responses = Vec::with_capacity(k);
        for n in 1..=k {
            let field = format!("output_{n}");
            responses.push(parse_conversation(path, &format!("{loc}.{field}"), &obj[&field])?);
        }
        let prompt0: Vec<&str> = responses[0].iter().step_by(2).map(|t| t.value.as_str()).collect();
        for (n, r) in responses.iter().enumerate().skip(1) {
            let p: Vec<&str> = r.iter().step_by(2).map(|t| t.value.as_str()).collect();
            if p.len() != prompt0.len() {
                return Err(data_err(
                    path,
                    format!("{loc}.output_{}", n + 1),
                    format!("has {} human turns but output_1 has {}: all levels must answer the same prompts", p.len(), prompt0.len()),
                ));
            }
            if let Some(t) = (0..p.len()).find(|&t| p[t] != prompt0[t]) {
                return Err(data_err(
                    path,
                    format!("{loc}.output_{}[{}].value", n + 1, 2 * t),
                    "human turn differs from output_1's: all levels must answer the same prompts",
                ));
            }
        }
        let image = parse_image(path, &loc, obj, &root, opts)?;
        out.push(PreferenceExample { id: record_id(path, &loc, obj, i)?, image, responses });
    }
    Ok(out)
}

/// Loads SFT data as K = 1 examples: the LLaVA format (`{id, image, conversations}`), or the AMP
/// format, of which only `output_1` (the best response) is used.
pub fn load_sft_file(path: &Path, opts: &LoadOptions) -> Result<Vec<PreferenceExample>> {
    let records = read_json_list(path)?;
    let root = data_root(path, opts);
    let mut out = Vec::with_capacity(records.len());
    for (i, rec) in records.iter().enumerate() {
        let loc = format!("record {i}");
        let obj = rec
            .as_object()
            .ok_or_else(|| data_err(path, &loc, format!("expected an object, found {}", kind_of(rec))))?;
        let (field, conv) = if let Some(c) = obj.get("conversations") {
            ("conversations", c)
        } else if let Some(c) = obj.get("output_1") {
            ("output_1", c)
        } else {
            return Err(data_err(path, &loc, "no \"conversations\" (LLaVA format) or \"output_1\" (AMP format) field"));
        };
        let conv = parse_conversation(path, &format!("{loc}.{field}"), conv)?;
        let image = parse_image(path, &loc, obj, &root, opts)?;
        out.push(PreferenceExample { id: record_id(path, &loc, obj, i)?, image, responses: vec![conv] });
    }
    Ok(out)
}

/// A SHA-256 fingerprint of a dataset: ids, conversations, image paths and, when the image file
/// exists, its bytes. Part of the reference-cache key: any change to the data invalidates it.
pub fn fingerprint_examples(examples: &[PreferenceExample]) -> Result<String> {
    let mut h = Sha256::new();
    h.update(b"mdpo-data-v1");
    h.update((examples.len() as u64).to_le_bytes());
    for ex in examples {
        let text = serde_json::to_string(&(&ex.id, &ex.image, &ex.responses)).expect("serialisable");
        h.update((text.len() as u64).to_le_bytes());
        h.update(text.as_bytes());
        if let Some(img) = &ex.image {
            match std::fs::read(img) {
                Ok(bytes) => {
                    h.update(b"img");
                    h.update(Sha256::digest(&bytes));
                }
                Err(_) => h.update(b"noimg"),
            }
        }
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(prompt: &str, answer: &str) -> Value {
        serde_json::json!([{"from": "human", "value": prompt}, {"from": "gpt", "value": answer}])
    }

    fn write(dir: &Path, v: &Value) -> PathBuf {
        let p = dir.join("train.json");
        std::fs::write(&p, serde_json::to_string(v).unwrap()).unwrap();
        p
    }

    fn opts(levels: Option<usize>) -> LoadOptions {
        LoadOptions { levels, image_root: None, check_images: true, allow_outside_root: false }
    }

    #[test]
    fn loads_and_validates() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("a.png");
        std::fs::write(&img, b"png").unwrap();
        let good = serde_json::json!([{
            "image": img, "id": "x1",
            "output_1": conv("<image>\nQ", "best"), "output_2": conv("<image>\nQ", "mid"),
            "output_3": conv("<image>\nQ", "worst")
        }]);
        let p = write(dir.path(), &good);
        let ex = load_amp_file(&p, &opts(Some(3))).unwrap();
        assert_eq!(ex.len(), 1);
        assert_eq!(ex[0].id, "x1");
        assert_eq!(ex[0].responses[2][1].value, "worst");

        let e = load_amp_file(&p, &opts(Some(4))).unwrap_err().to_string();
        assert!(e.contains("record 0") && e.contains("has 3 levels") && e.contains("K = 4"), "{e}");

        let mut bad = good.clone();
        bad[0]["image"] = Value::from(dir.path().join("missing.png").to_string_lossy().to_string());
        let p = write(dir.path(), &bad);
        let e = load_amp_file(&p, &opts(None)).unwrap_err().to_string();
        assert!(e.contains("record 0.image") && e.contains("does not exist"), "{e}");

        let mut bad = good.clone();
        bad[0]["output_2"] = conv("<image>\nOther question", "mid");
        let p = write(dir.path(), &bad);
        let e = load_amp_file(&p, &opts(None)).unwrap_err().to_string();
        assert!(e.contains("record 0.output_2[0].value") && e.contains("differs"), "{e}");

        let mut bad = good.clone();
        bad[0]["output_3"][1]["from"] = Value::from("human");
        let p = write(dir.path(), &bad);
        let e = load_amp_file(&p, &opts(None)).unwrap_err().to_string();
        assert!(e.contains("record 0.output_3[1].from"), "{e}");

        std::fs::write(&p, "[{\"image\": ").unwrap();
        let e = load_amp_file(&p, &opts(None)).unwrap_err().to_string();
        assert!(e.contains("train.json") && e.contains("malformed JSON"), "{e}");

        let two = serde_json::json!([
            {"output_1": conv("Q", "a"), "output_2": conv("Q", "b")},
            {"output_1": conv("Q", "a"), "output_2": conv("Q", "b"), "output_3": conv("Q", "c")}
        ]);
        let p = write(dir.path(), &two);
        let e = load_amp_file(&p, &opts(None)).unwrap_err().to_string();
        assert!(e.contains("record 1") && e.contains("record 0 has K = 2"), "{e}");

        let sft = serde_json::json!([{"id": 7, "conversations": conv("Q", "A")}]);
        let p = write(dir.path(), &sft);
        let ex = load_sft_file(&p, &opts(None)).unwrap();
        assert_eq!((ex[0].id.as_str(), ex[0].levels()), ("7", 1));
    }

    #[test]
    fn fingerprint_changes_with_data() {
        let ex = |a: &str| PreferenceExample {
            id: "0".into(),
            image: None,
            responses: vec![vec![Turn { from: "human".into(), value: "Q".into() }, Turn { from: "gpt".into(), value: a.into() }]],
        };
        let a = fingerprint_examples(&[ex("x")]).unwrap();
        assert_eq!(a, fingerprint_examples(&[ex("x")]).unwrap());
        assert_ne!(a, fingerprint_examples(&[ex("y")]).unwrap());
    }
}
