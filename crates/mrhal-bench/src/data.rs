//! Loaders for the published benchmark files (docs/paper-notes.md §5–6).
//!
//! * MRHal-Bench: `eval_gt.json` (`id, image, image_content, label, revised`) and the MM-Hallu
//!   repack exported as JSON or JSONL rows (`image, id, image_name, label` (JSON string),
//!   `conversations` (JSON string)). The repack ships as parquet; this crate does not link a
//!   parquet reader (its dependency tree costs more build time than the whole harness), so
//!   export the rows first, e.g. `pandas.read_parquet(p).to_json("rows.jsonl", orient="records",
//!   lines=True)`; image bytes may stay inline (`{"bytes": <base64>}`) or be a file name.
//! * MMHal-Bench: `response_template.json`.
//! * POPE: `coco_pope_{adversarial,popular,random}.json` (JSONL with `label`) and LLaVA's
//!   `llava_pope_test.jsonl` (with `category`, no label).
//! * LLaVA-Bench (COCO qa90): questions, reference answers, captions/boxes and `rule.json`.
//!
//! Every malformed record is an error naming the file, the record and the field.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{BenchError, Result};

/// Where an item's image is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageRef {
    /// A file name, resolved against the image directory by [`ImageRef::resolve`].
    File(String),
    /// Inline image bytes (repack rows).
    Bytes(#[serde(with = "b64")] Vec<u8>),
    /// No image given (the item can still be judged; answering needs one).
    None,
}

mod b64 {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&amp_chat::base64::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        amp_chat::base64::decode(&s).map_err(serde::de::Error::custom)
    }
}

impl ImageRef {
    /// Reads the image bytes (a file is looked up under `image_dir`, or as given if absolute).
    pub fn load(&self, image_dir: Option<&Path>) -> Result<Vec<u8>> {
        match self {
            ImageRef::Bytes(b) => Ok(b.clone()),
            ImageRef::File(_) => {
                let p = self.resolve(image_dir).expect("file refs resolve");
                std::fs::read(&p).map_err(|e| BenchError::io(&p, e))
            }
            ImageRef::None => Err(BenchError::Invalid("item has no image".into())),
        }
    }
    /// The path of a file reference.
    pub fn resolve(&self, image_dir: Option<&Path>) -> Option<PathBuf> {
        match self {
            ImageRef::File(name) => {
                let p = Path::new(name);
                Some(match image_dir {
                    Some(d) if !p.is_absolute() => d.join(p),
                    _ => p.to_path_buf(),
                })
            }
            _ => None,
        }
    }
}

/// A field accessor that turns type errors into [`BenchError::Field`].
struct Rec<'a> {
    path: &'a Path,
    record: String,
    obj: &'a Map<String, Value>,
}

impl<'a> Rec<'a> {
    fn new(path: &'a Path, index: usize, v: &'a Value, id_field: &str) -> Result<Self> {
        let obj = v.as_object().ok_or_else(|| BenchError::Field {
            path: path.into(),
            record: format!("#{index}"),
            field: "(record)".into(),
            reason: format!("expected a JSON object, found {}", kind(v)),
        })?;
        let record = match obj.get(id_field) {
            Some(Value::String(s)) => format!("#{index} ({id_field}={s})"),
            Some(Value::Number(n)) => format!("#{index} ({id_field}={n})"),
            _ => format!("#{index}"),
        };
        Ok(Rec { path, record, obj })
    }
    fn err(&self, field: &str, reason: impl Into<String>) -> BenchError {
        BenchError::Field {
            path: self.path.into(),
            record: self.record.clone(),
            field: field.into(),
            reason: reason.into(),
        }
    }
    fn get(&self, field: &str) -> Result<&'a Value> {
        self.obj.get(field).ok_or_else(|| self.err(field, "missing"))
    }
    fn str(&self, field: &str) -> Result<String> {
        match self.get(field)? {
            Value::String(s) => Ok(s.clone()),
            v => Err(self.err(field, format!("expected a string, found {}", kind(v)))),
        }
    }
    fn opt_str(&self, field: &str) -> Result<Option<String>> {
        match self.obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(self.err(field, format!("expected a string, found {}", kind(v)))),
        }
    }
    /// An id that may be a string or an integer.
    fn id(&self, field: &str) -> Result<String> {
        match self.get(field)? {
            Value::String(s) if !s.is_empty() => Ok(s.clone()),
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
            v => Err(self.err(field, format!("expected a non-empty string or integer id, found {}", kind(v)))),
        }
    }
    fn str_list(&self, field: &str) -> Result<Vec<String>> {
        str_list(self.get(field)?).map_err(|r| self.err(field, r))
    }
}

fn str_list(v: &Value) -> std::result::Result<Vec<String>, String> {
    match v {
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, x)| match x {
                Value::String(s) => Ok(s.clone()),
                other => Err(format!("element {i}: expected a string, found {}", kind(other))),
            })
            .collect(),
        other => Err(format!("expected a list of strings, found {}", kind(other))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| BenchError::io(path, e))
}

/// Reads a JSON array file, or a JSONL file (one object per line), into values.
/// Line numbers (1-based) are named in JSONL parse errors.
pub fn read_records(path: &Path) -> Result<Vec<Value>> {
    let text = read(path)?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        return serde_json::from_str::<Vec<Value>>(&text)
            .map_err(|e| BenchError::Parse { path: path.into(), reason: format!("not a JSON array of records: {e}") });
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v = serde_json::from_str(line)
            .map_err(|e| BenchError::Parse { path: path.into(), reason: format!("line {}: invalid JSON: {e}", i + 1) })?;
        out.push(v);
    }
    Ok(out)
}

// ----------------------------------------------------------------------------------------------
// MRHal-Bench

/// One MRHal-Bench dialogue: `questions[r]` is round r's user turn, `references[r]` its
/// human-written standard answer (docs/paper-notes.md §5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MrhalDialogue {
    /// Dialogue id.
    pub id: String,
    /// The image.
    pub image: ImageRef,
    /// Object/category names in the image (what the text-only judge "sees"); empty in the repack.
    pub image_content: Vec<String>,
    /// Hallucination-type labels (e.g. existence, attribute, describe).
    pub labels: Vec<String>,
    /// User questions, one per round, with the `<image>` token removed.
    pub questions: Vec<String>,
    /// Standard answers, one per round.
    pub references: Vec<String>,
}

impl MrhalDialogue {
    /// Number of rounds.
    pub fn rounds(&self) -> usize {
        self.questions.len()
    }
}

/// Strips LLaVA's `<image>` placeholder (and the newline around it).
pub fn strip_image_token(s: &str) -> String {
    s.replace("<image>\n", "").replace("\n<image>", "").replace("<image>", "").trim().to_string()
}

/// Loads MRHal-Bench from `eval_gt.json` or exported repack rows (JSON array or JSONL).
pub fn load_mrhal(path: &Path) -> Result<Vec<MrhalDialogue>> {
    let recs = read_records(path)?;
    let mut out = Vec::with_capacity(recs.len());
    let mut seen = HashMap::new();
    for (i, v) in recs.iter().enumerate() {
        let r = Rec::new(path, i, v, "id")?;
        let id = r.id("id")?;
        let (conv_field, conv): (&str, Value) = if let Some(c) = r.obj.get("revised") {
            ("revised", c.clone())
        } else if let Some(c) = r.obj.get("conversations") {
            let c = match c {
                Value::String(s) => serde_json::from_str(s)
                    .map_err(|e| r.err("conversations", format!("not a JSON-encoded conversation: {e}")))?,
                other => other.clone(),
            };
            ("conversations", c)
        } else {
            return Err(r.err("revised", "missing (neither `revised` nor `conversations` present)"));
        };
        let turns = conv.as_array().ok_or_else(|| r.err(conv_field, format!("expected a list, found {}", kind(&conv))))?;
        if turns.is_empty() || turns.len() % 2 != 0 {
            return Err(r.err(conv_field, format!("expected human/gpt pairs, found {} turns", turns.len())));
        }
        let mut questions = Vec::new();
        let mut references = Vec::new();
        for (t, turn) in turns.iter().enumerate() {
            let from = turn.get("from").and_then(Value::as_str);
            let value = turn.get("value").and_then(Value::as_str);
            let (Some(from), Some(value)) = (from, value) else {
                return Err(r.err(&format!("{conv_field}[{t}]"), "expected {\"from\": string, \"value\": string}"));
            };
            let want = if t % 2 == 0 { "human" } else { "gpt" };
            if from != want {
                return Err(r.err(&format!("{conv_field}[{t}].from"), format!("expected {want:?}, found {from:?}")));
            }
            if t % 2 == 0 {
                questions.push(strip_image_token(value));
            } else {
                references.push(value.trim().to_string());
            }
        }
        let labels = match r.obj.get("label") {
            None | Some(Value::Null) => vec![],
            Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                Ok(v @ Value::Array(_)) => str_list(&v).map_err(|e| r.err("label", e))?,
                _ => vec![s.clone()],
            },
            Some(v) => str_list(v).map_err(|e| r.err("label", e))?,
        };
        let image_content = match r.obj.get("image_content") {
            None | Some(Value::Null) => vec![],
            Some(_) => r.str_list("image_content")?,
        };
        let image = image_field(&r, &["image", "image_name"])?;
        if let Some(prev) = seen.insert(id.clone(), i) {
            return Err(r.err("id", format!("duplicate id (also record #{prev})")));
        }
        out.push(MrhalDialogue { id, image, image_content, labels, questions, references });
    }
    Ok(out)
}

/// `image` as a file name, `{"bytes": base64, "path": ...}` or `{"path": ...}`; falls back to
/// the later fields in `fields`.
fn image_field(r: &Rec, fields: &[&str]) -> Result<ImageRef> {
    for f in fields {
        match r.obj.get(*f) {
            None | Some(Value::Null) => continue,
            Some(Value::String(s)) if !s.is_empty() => return Ok(ImageRef::File(s.clone())),
            Some(Value::Object(o)) => {
                if let Some(Value::String(b)) = o.get("bytes") {
                    let bytes = amp_chat::base64::decode(b).map_err(|e| r.err(&format!("{f}.bytes"), e))?;
                    return Ok(ImageRef::Bytes(bytes));
                }
                if let Some(Value::String(p)) = o.get("path") {
                    return Ok(ImageRef::File(p.clone()));
                }
                return Err(r.err(f, "expected an object with `bytes` (base64) or `path`"));
            }
            Some(v) => return Err(r.err(f, format!("expected a file name or {{bytes|path}}, found {}", kind(v)))),
        }
    }
    Ok(ImageRef::None)
}

// ----------------------------------------------------------------------------------------------
// MMHal-Bench

/// The eight MMHal-Bench question types in file order (`i % 8`, docs/paper-notes.md §6).
pub const MMHAL_TYPES: [&str; 8] =
    ["attribute", "adversarial", "comparison", "counting", "relation", "environment", "holistic", "other"];

/// One MMHal-Bench question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MmhalItem {
    /// Position in the file (0-based), used as id.
    pub index: usize,
    /// `question_type`; `None` when the file has none (then `MMHAL_TYPES[index % 8]` is used).
    pub question_type: Option<String>,
    /// `question_topic`.
    pub question_topic: Option<String>,
    /// `image_id`.
    pub image_id: Option<String>,
    /// `image_src` (a URL; the local file is its last path segment).
    pub image_src: Option<String>,
    /// The image to answer on.
    pub image: ImageRef,
    /// Object names in the image.
    pub image_content: Vec<String>,
    /// The question.
    pub question: String,
    /// The standard answer.
    pub gt_answer: String,
    /// A pre-filled answer (`model_answer`), if the file has one.
    pub model_answer: Option<String>,
}

impl MmhalItem {
    /// The item id used in answer/judgment files.
    pub fn id(&self) -> String {
        self.index.to_string()
    }
    /// The question type: the field, or `i % 8` only when it is absent.
    pub fn type_name(&self) -> String {
        self.question_type.clone().unwrap_or_else(|| MMHAL_TYPES[self.index % 8].to_string())
    }
}

/// Loads `response_template.json` (or a filled copy of it).
pub fn load_mmhal(path: &Path) -> Result<Vec<MmhalItem>> {
    let recs = read_records(path)?;
    let mut out = Vec::with_capacity(recs.len());
    for (i, v) in recs.iter().enumerate() {
        let r = Rec::new(path, i, v, "image_id")?;
        let image_src = r.opt_str("image_src")?;
        let image_path = r.opt_str("image_path")?;
        let image = match (&image_path, &image_src) {
            (Some(p), _) => ImageRef::File(p.clone()),
            (None, Some(src)) => ImageRef::File(src.rsplit('/').next().unwrap_or(src).to_string()),
            (None, None) => ImageRef::None,
        };
        let image_content = match r.obj.get("image_content") {
            None | Some(Value::Null) => vec![],
            Some(_) => r.str_list("image_content")?,
        };
        out.push(MmhalItem {
            index: i,
            question_type: r.opt_str("question_type")?,
            question_topic: r.opt_str("question_topic")?,
            image_id: match r.obj.get("image_id") {
                None | Some(Value::Null) => None,
                Some(_) => Some(r.id("image_id")?),
            },
            image_src,
            image,
            image_content,
            question: r.str("question")?,
            gt_answer: r.str("gt_answer")?,
            model_answer: r.opt_str("model_answer")?,
        });
    }
    Ok(out)
}

// ----------------------------------------------------------------------------------------------
// POPE

/// The POPE splits.
pub const POPE_SPLITS: [&str; 3] = ["adversarial", "popular", "random"];

/// One POPE question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PopeItem {
    /// Split (adversarial/popular/random).
    pub split: String,
    /// `question_id` (unique within a split only).
    pub question_id: String,
    /// COCO image file name.
    pub image: String,
    /// The question text.
    pub text: String,
    /// Ground truth (`true` = "yes"), when the file carries labels.
    pub label: Option<bool>,
}

impl PopeItem {
    /// The id used in answer files: `split/question_id`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.split, self.question_id)
    }
}

/// The split named in a POPE file name (`coco_pope_random.json` → `random`).
pub fn pope_split_from_path(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    POPE_SPLITS.iter().find(|s| name.contains(*s)).map(|s| s.to_string())
}

/// Loads a POPE file. The split comes from each record's `category` if present, else from
/// `split` (or the file name). `label` must be "yes"/"no" when present.
pub fn load_pope(path: &Path, split: Option<&str>) -> Result<Vec<PopeItem>> {
    let recs = read_records(path)?;
    let default_split = split.map(str::to_string).or_else(|| pope_split_from_path(path));
    let mut out = Vec::with_capacity(recs.len());
    let mut seen = HashMap::new();
    for (i, v) in recs.iter().enumerate() {
        let r = Rec::new(path, i, v, "question_id")?;
        let split = match r.opt_str("category")? {
            Some(c) => c,
            None => default_split.clone().ok_or_else(|| {
                r.err("category", "missing, and the split is not given and not in the file name")
            })?,
        };
        let label = match r.opt_str("label")? {
            None => None,
            Some(l) => match l.trim().to_ascii_lowercase().as_str() {
                "yes" => Some(true),
                "no" => Some(false),
                _ => return Err(r.err("label", format!("expected \"yes\" or \"no\", found {l:?}"))),
            },
        };
        let item = PopeItem { split, question_id: r.id("question_id")?, image: r.str("image")?, text: r.str("text")?, label };
        if let Some(prev) = seen.insert(item.id(), i) {
            return Err(r.err("question_id", format!("duplicate {} (also record #{prev})", item.id())));
        }
        out.push(item);
    }
    Ok(out)
}

// ----------------------------------------------------------------------------------------------
// LLaVA-Bench (COCO qa90)

/// One LLaVA-Bench question with its reference answer and the judge's context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlavaItem {
    /// `question_id`.
    pub question_id: String,
    /// COCO image file name.
    pub image: String,
    /// The question.
    pub text: String,
    /// conv / detail / complex.
    pub category: String,
    /// Reference (GPT-4) answer, "Assistant 1".
    pub reference: String,
    /// Captions then boxes, as the judge sees them.
    pub context: String,
}

/// `rule.json`: category key → (role, prompt).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlavaRule {
    /// Usually "Assistant".
    pub role: String,
    /// The judging instruction.
    pub prompt: String,
}

/// Formats a normalised coordinate like Python's `repr(float)` (so `1.0`, not `1`).
fn py_float(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e16 {
        format!("{x:.1}")
    } else {
        format!("{x}")
    }
}

/// Loads the qa90 set: questions, reference answers and captions/boxes (all JSONL).
pub fn load_llava_bench(questions: &Path, references: &Path, captions: &Path) -> Result<Vec<LlavaItem>> {
    let mut refs = HashMap::new();
    for (i, v) in read_records(references)?.iter().enumerate() {
        let r = Rec::new(references, i, v, "question_id")?;
        refs.insert(r.id("question_id")?, r.str("text")?);
    }
    let mut ctx = HashMap::new();
    for (i, v) in read_records(captions)?.iter().enumerate() {
        let r = Rec::new(captions, i, v, "image")?;
        let image = r.str("image")?;
        let caps = r.str_list("captions")?;
        let inst = r.get("instances")?.as_array().ok_or_else(|| r.err("instances", "expected a list"))?;
        let mut boxes = Vec::new();
        for (k, b) in inst.iter().enumerate() {
            let cat = b.get("category").and_then(Value::as_str);
            let bbox = b.get("bbox").and_then(Value::as_array);
            let (Some(cat), Some(bbox)) = (cat, bbox) else {
                return Err(r.err(&format!("instances[{k}]"), "expected {category: string, bbox: [x1,y1,x2,y2]}"));
            };
            let nums: Option<Vec<String>> = bbox.iter().map(|x| x.as_f64().map(py_float)).collect();
            let nums = nums.ok_or_else(|| r.err(&format!("instances[{k}].bbox"), "expected numbers"))?;
            boxes.push(format!("{cat}: [{}]", nums.join(", ")));
        }
        ctx.insert(image, format!("{}\n\n{}", caps.join("\n"), boxes.join("\n")));
    }
    let mut out = Vec::new();
    for (i, v) in read_records(questions)?.iter().enumerate() {
        let r = Rec::new(questions, i, v, "question_id")?;
        let question_id = r.id("question_id")?;
        let image = r.str("image")?;
        let reference = refs.get(&question_id).cloned().ok_or_else(|| {
            r.err("question_id", format!("no reference answer in {}", references.display()))
        })?;
        let context = ctx
            .get(&image)
            .cloned()
            .ok_or_else(|| r.err("image", format!("no captions/boxes for {image:?} in {}", captions.display())))?;
        out.push(LlavaItem { question_id, image, text: r.str("text")?, category: r.str("category")?, reference, context });
    }
    Ok(out)
}

/// Loads `rule.json` (`{key: {role, prompt}}`).
pub fn load_llava_rules(path: &Path) -> Result<BTreeMap<String, LlavaRule>> {
    let text = read(path)?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| BenchError::Parse { path: path.into(), reason: format!("invalid JSON: {e}") })?;
    let obj = v.as_object().ok_or_else(|| BenchError::Parse { path: path.into(), reason: "expected an object".into() })?;
    let mut out = BTreeMap::new();
    for (k, rule) in obj {
        let r = Rec { path, record: k.clone(), obj: rule.as_object().ok_or_else(|| BenchError::Field {
            path: path.into(),
            record: k.clone(),
            field: "(record)".into(),
            reason: "expected an object".into(),
        })? };
        out.insert(k.clone(), LlavaRule { role: r.str("role")?, prompt: r.str("prompt")? });
    }
    Ok(out)
}
