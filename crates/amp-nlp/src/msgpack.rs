//! thinc / srsly MessagePack decoding.
//!
//! spaCy writes every component with `srsly.msgpack_dumps`: plain MessagePack whose numpy arrays
//! are msgpack-numpy maps `{b"nd": true, b"type": "<f4", b"kind": b"", b"shape": [..], b"data":
//! bytes}`. A thinc model file is `{"nodes": [{"index", "name", "dims", "refs"}], "attrs": [{name:
//! msgpack bytes}], "params": [{name: array}], "shims": [..]}`, one entry per node of the model
//! tree in walk order.
use crate::error::{field_err, read_file, NlpError, Result};
use rmpv::Value;
use std::path::{Path, PathBuf};

/// Decodes one MessagePack value.
pub fn decode(bytes: &[u8], path: &Path) -> Result<Value> {
    let mut cur = bytes;
    rmpv::decode::read_value(&mut cur).map_err(|e| NlpError::Decode {
        path: path.to_path_buf(),
        format: "MessagePack",
        msg: e.to_string(),
    })
}

/// Reads and decodes a MessagePack file.
pub fn read(path: &Path) -> Result<Value> {
    decode(&read_file(path)?, path)
}

/// A map key as text (MessagePack keys may be str or bin).
pub fn key_str(k: &Value) -> Option<&str> {
    match k {
        Value::String(s) => s.as_str(),
        Value::Binary(b) => std::str::from_utf8(b).ok(),
        _ => None,
    }
}

/// A map entry by text key.
pub fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_map()?
        .iter()
        .find(|(k, _)| key_str(k) == Some(key))
        .map(|(_, v)| v)
}

/// A map entry that must exist.
pub fn req<'a>(v: &'a Value, key: &str, path: &Path, ctx: &str) -> Result<&'a Value> {
    get(v, key).ok_or_else(|| field_err(path, format!("{ctx}{key}"), "missing"))
}

/// A value as text (str or bin).
pub fn as_text(v: &Value) -> Option<&str> {
    key_str(v)
}

/// A dense f32 array.
#[derive(Debug, Clone)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Array {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }
    /// Whether it has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Decodes a msgpack-numpy float32 array.
pub fn array(v: &Value, path: &Path, field: &str) -> Result<Array> {
    let bad = |m: &str| field_err(path, field, m);
    if get(v, "nd").and_then(Value::as_bool) != Some(true) {
        return Err(bad("not a msgpack-numpy array"));
    }
    let ty = get(v, "type")
        .and_then(as_text)
        .ok_or_else(|| bad("array without `type`"))?;
    if ty != "<f4" {
        return Err(NlpError::Unsupported {
            path: path.to_path_buf(),
            field: field.into(),
            what: format!("array dtype {ty} (only <f4)"),
        });
    }
    let shape: Vec<usize> = get(v, "shape")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("array without `shape`"))?
        .iter()
        .map(|d| d.as_u64().map(|d| d as usize))
        .collect::<Option<_>>()
        .ok_or_else(|| bad("non-integer shape"))?;
    let data = match get(v, "data") {
        Some(Value::Binary(b)) => b,
        _ => return Err(bad("array without binary `data`")),
    };
    let n: usize = shape.iter().product();
    if data.len() != 4 * n {
        return Err(bad(&format!(
            "shape {shape:?} needs {} bytes, has {}",
            4 * n,
            data.len()
        )));
    }
    let data = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    Ok(Array { shape, data })
}

/// One node of a thinc model file.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    /// attrs, each decoded from its own MessagePack bytes
    pub attrs: Vec<(String, Value)>,
    pub params: Vec<(String, Array)>,
}

impl Node {
    /// An attr by name.
    pub fn attr(&self, name: &str) -> Option<&Value> {
        self.attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
    /// A param by name.
    pub fn param(&self, name: &str) -> Option<&Array> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}

/// A thinc model file: its nodes in walk order.
#[derive(Debug, Clone)]
pub struct ThincModel {
    pub path: PathBuf,
    pub nodes: Vec<Node>,
}

impl ThincModel {
    /// Reads `path` (e.g. `tok2vec/model`).
    pub fn read(path: &Path) -> Result<Self> {
        let root = read(path)?;
        let list = |k: &str| -> Result<&Vec<Value>> {
            req(&root, k, path, "")?
                .as_array()
                .ok_or_else(|| field_err(path, k, "not a list"))
        };
        let (nodes, attrs, params) = (list("nodes")?, list("attrs")?, list("params")?);
        if nodes.len() != attrs.len() || nodes.len() != params.len() {
            return Err(field_err(
                path,
                "nodes",
                "nodes, attrs and params differ in length",
            ));
        }
        let mut out = Vec::with_capacity(nodes.len());
        for (i, ((n, a), p)) in nodes.iter().zip(attrs).zip(params).enumerate() {
            let name = get(n, "name")
                .and_then(as_text)
                .ok_or_else(|| field_err(path, format!("nodes[{i}].name"), "missing"))?
                .to_string();
            let mut node_attrs = Vec::new();
            for (k, v) in a.as_map().map(Vec::as_slice).unwrap_or(&[]) {
                let k = key_str(k).unwrap_or("").to_string();
                let v = match v {
                    Value::Binary(b) => decode(b, path)?,
                    other => other.clone(),
                };
                node_attrs.push((k, v));
            }
            let mut node_params = Vec::new();
            for (k, v) in p.as_map().map(Vec::as_slice).unwrap_or(&[]) {
                let k = key_str(k).unwrap_or("").to_string();
                let field = format!("params[{i}].{k}");
                node_params.push((k, array(v, path, &field)?));
            }
            out.push(Node {
                name,
                attrs: node_attrs,
                params: node_params,
            });
        }
        Ok(ThincModel {
            path: path.to_path_buf(),
            nodes: out,
        })
    }

    /// The nodes named `name`, in walk order.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.nodes.iter().filter(move |n| n.name == name)
    }

    /// A param of a node, checked against the expected shape.
    pub fn param<'a>(&self, node: &'a Node, name: &str, shape: &[usize]) -> Result<&'a Array> {
        let a = node.param(name).ok_or_else(|| {
            field_err(&self.path, format!("{}.{name}", node.name), "missing param")
        })?;
        if a.shape != shape {
            return Err(field_err(
                &self.path,
                format!("{}.{name}", node.name),
                format!("shape {:?}, expected {shape:?}", a.shape),
            ));
        }
        Ok(a)
    }
}
