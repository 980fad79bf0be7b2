//! Instruction data in LLaVA conversation JSON: the input of MEG and IG.
//!
//! A JSON list of `{"id": ..., "image": "path", "conversations": [{"from": "human", "value":
//! "<image>\n..."}, {"from": "gpt", "value": ...}, ...]}`; the gpt turns are the *standard
//! responses* (the top level of every AMP sample). Single- and multi-round dialogues are accepted.
use crate::error::{AmpDataError, Result};
use mdpo::data::kind_of as kind;
use mdpo::{Conversation, Turn};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One instruction-tuning record.
#[derive(Debug, Clone, PartialEq)]
pub struct InstructionRecord {
    /// The record's id (strings and numbers are accepted; numbers are written in decimal).
    pub id: String,
    /// Position in the input file (the output keeps this order).
    pub index: usize,
    /// The image, resolved against the image folder.
    pub image: PathBuf,
    /// The image as the input file names it (relative to the image folder, or absolute): what
    /// the outputs (generated and checked rows, `amp.json`) record, so that, as in LLaVA's data,
    /// they stay valid when the image folder moves or the data goes to another machine.
    pub image_ref: String,
    /// The dialogue: alternating human/gpt turns, human first, at least one gpt turn.
    pub conversations: Conversation,
}

impl InstructionRecord {
    /// The gpt turns (standard responses).
    pub fn gpt_turns(&self) -> Vec<String> {
        gpt_turns(&self.conversations)
    }
}

/// The gpt turns of a conversation.
pub fn gpt_turns(c: &[Turn]) -> Vec<String> {
    c.iter()
        .filter(|t| t.from == "gpt")
        .map(|t| t.value.clone())
        .collect()
}

/// Checks that an image file exists and is a PNG or JPEG of plausible size (its header: format
/// and dimensions; the upload and training paths decode it fully). Errors name the record and
/// the `image` field.
pub fn check_image(file: &Path, image: &Path, record: &str) -> Result<()> {
    amp_io::image_check::probe_file(image).map(|_| ()).map_err(|e| {
        AmpDataError::data(file, record.to_string(), format!("image: {}: {e}", image.display()))
    })
}

/// Options of [`load_llava_with`].
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The data root relative image paths resolve against (`--image-folder`/`--image-root`;
    /// default: the data file's directory).
    pub image_folder: Option<PathBuf>,
    /// Accept image paths outside the data root (`--allow-outside-root`).
    pub allow_outside_root: bool,
}

/// Parses and validates a LLaVA conversation.
pub fn parse_conversation(file: &Path, record: &str, v: &Value) -> Result<Conversation> {
    let err = |m: String| AmpDataError::data(file, record.to_string(), m);
    let turns = v
        .as_array()
        .ok_or_else(|| err(format!("conversations: expected a list, found {}", kind(v))))?;
    let mut conv = Vec::with_capacity(turns.len());
    for (k, t) in turns.iter().enumerate() {
        let from = t.get("from").and_then(Value::as_str);
        let value = t.get("value").and_then(Value::as_str);
        let (Some(from), Some(value)) = (from, value) else {
            return Err(err(format!(
                "conversations[{k}]: expected {{\"from\": str, \"value\": str}}"
            )));
        };
        let want = if k % 2 == 0 { "human" } else { "gpt" };
        if from != want {
            return Err(err(format!(
                "conversations[{k}].from: expected \"{want}\" (turns alternate human/gpt, human first), found \"{from}\""
            )));
        }
        conv.push(Turn {
            from: from.to_string(),
            value: value.to_string(),
        });
    }
    if !conv.iter().any(|t| t.from == "gpt") {
        return Err(err(
            "conversations: the dialogue has no gpt turn (no standard response)".into(),
        ));
    }
    if conv.len() % 2 != 0 {
        return Err(err(
            "conversations: the dialogue ends with a human turn that has no gpt answer".into(),
        ));
    }
    Ok(conv)
}

/// Loads instruction data. Relative image paths are resolved against `image_folder`, or against
/// the JSON file's directory when none is given; paths leaving that data root are refused
/// ([`load_llava_with`] can allow them). Errors name the file and the record: missing,
/// unreadable or non-image files, malformed or gpt-less dialogues, missing or duplicate ids.
pub fn load_llava(path: &Path, image_folder: Option<&Path>) -> Result<Vec<InstructionRecord>> {
    load_llava_with(
        path,
        &LoadOptions {
            image_folder: image_folder.map(Path::to_path_buf),
            allow_outside_root: false,
        },
    )
}

/// [`load_llava`] with explicit [`LoadOptions`].
pub fn load_llava_with(path: &Path, opts: &LoadOptions) -> Result<Vec<InstructionRecord>> {
    let text = std::fs::read_to_string(path).map_err(|e| AmpDataError::io(path, e))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| {
        AmpDataError::data(
            path,
            format!("line {} column {}", e.line(), e.column()),
            format!("malformed JSON: {e}"),
        )
    })?;
    let list = v.as_array().ok_or_else(|| {
        AmpDataError::data(
            path,
            "top level",
            format!("expected a list of records, found {}", kind(&v)),
        )
    })?;
    let root = amp_io::paths::DataRoot::for_data_file(
        path,
        opts.image_folder.as_deref(),
        opts.allow_outside_root,
    );
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(list.len());
    for (i, rec) in list.iter().enumerate() {
        let loc = format!("record {i}");
        let obj = rec.as_object().ok_or_else(|| {
            AmpDataError::data(
                path,
                &loc,
                format!("expected an object, found {}", kind(rec)),
            )
        })?;
        let id = match obj.get("id") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(other) => {
                return Err(AmpDataError::data(
                    path,
                    &loc,
                    format!("id: expected a string or number, found {}", kind(other)),
                ))
            }
            None => {
                return Err(AmpDataError::data(
                    path,
                    &loc,
                    "no \"id\" (ids key the resumable output)",
                ))
            }
        };
        let loc = format!("record {i} (id {id:?})");
        if let Some(j) = seen.insert(id.clone(), i) {
            return Err(AmpDataError::data(
                path,
                &loc,
                format!("duplicate id: record {j} has the same id"),
            ));
        }
        let (image, image_ref) = match obj.get("image") {
            Some(Value::String(s)) => (
                root.resolve(s)
                    .map_err(|e| AmpDataError::data(path, &loc, format!("image: {e}")))?,
                s.clone(),
            ),
            Some(other) => {
                return Err(AmpDataError::data(
                    path,
                    &loc,
                    format!("image: expected a path string, found {}", kind(other)),
                ))
            }
            None => {
                return Err(AmpDataError::data(
                    path,
                    &loc,
                    "no \"image\": AMP needs an image per record",
                ))
            }
        };
        check_image(path, &image, &loc)?;
        let conv = obj
            .get("conversations")
            .ok_or_else(|| AmpDataError::data(path, &loc, "no \"conversations\""))?;
        let conversations = parse_conversation(path, &loc, conv)?;
        out.push(InstructionRecord {
            id,
            index: i,
            image,
            image_ref,
            conversations,
        });
    }
    Ok(out)
}
