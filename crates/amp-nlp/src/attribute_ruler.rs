//! spaCy's `AttributeRuler` as en_core_web_sm uses it: token patterns (1-2 tokens, matched on
//! ORTH/TEXT, LOWER, TAG, POS, DEP, IS_SPACE with exact values, `IN`/`NOT_IN` lists or `REGEX`) that set
//! POS, TAG or DEP on one token of the match. This is where the coarse POS comes from (the
//! tagger predicts fine-grained TAGs only). MORPH and LEMMA assignments are read and ignored:
//! nothing downstream here uses them. Every match is found first, on the tokens as they were, then
//! applied in pattern order, so later patterns win. A pattern key, operator or attribute this port
//! does not implement is an error naming it.
use crate::error::{field_err, NlpError, Result};
use crate::msgpack;
use crate::tokenizer::python_regex;
use fancy_regex::Regex;
use rmpv::Value;
use std::path::Path;

/// A token attribute a pattern tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Orth,
    Lower,
    Tag,
    Pos,
    Dep,
    IsSpace,
}

#[derive(Debug, Clone)]
enum Test {
    Eq(String),
    Bool(bool),
    In(Vec<String>),
    NotIn(Vec<String>),
    Regex(Regex),
}

#[derive(Debug, Clone)]
struct Rule {
    tokens: Vec<Vec<(Key, Test)>>,
    index: i64,
    pos: Option<String>,
    tag: Option<String>,
    dep: Option<String>,
}

/// The token view the ruler reads and writes.
#[derive(Debug, Clone)]
pub struct RulerToken<'a> {
    pub text: &'a str,
    pub lower: String,
    pub is_space: bool,
    pub tag: String,
    pub pos: String,
    pub dep: String,
}

/// The attribute ruler.
#[derive(Debug, Clone)]
pub struct AttributeRuler {
    rules: Vec<Rule>,
}

fn unsupported(path: &Path, field: &str, what: String) -> NlpError {
    NlpError::Unsupported {
        path: path.to_path_buf(),
        field: field.into(),
        what,
    }
}

impl AttributeRuler {
    /// Reads `attribute_ruler/patterns`.
    pub fn load(path: &Path) -> Result<Self> {
        let v = msgpack::read(path)?;
        let list = v
            .as_array()
            .ok_or_else(|| field_err(path, "patterns", "not a list"))?;
        let mut rules = Vec::new();
        for (i, entry) in list.iter().enumerate() {
            let field = format!("[{i}]");
            let patterns = msgpack::req(entry, "patterns", path, &format!("{field}."))?
                .as_array()
                .ok_or_else(|| field_err(path, format!("{field}.patterns"), "not a list"))?;
            let index = msgpack::get(entry, "index")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let attrs = msgpack::req(entry, "attrs", path, &format!("{field}."))?
                .as_map()
                .ok_or_else(|| field_err(path, format!("{field}.attrs"), "not a map"))?;
            let (mut pos, mut tag, mut dep) = (None, None, None);
            for (k, val) in attrs {
                let k = msgpack::key_str(k).unwrap_or("?");
                let text = || msgpack::as_text(val).map(str::to_string);
                match k {
                    "POS" => pos = text(),
                    "TAG" => tag = text(),
                    "DEP" => dep = text(),
                    "MORPH" | "LEMMA" => {}
                    other => {
                        return Err(unsupported(
                            path,
                            &format!("{field}.attrs"),
                            format!("assigned attribute {other}"),
                        ))
                    }
                }
            }
            for pat in patterns {
                let toks = pat.as_array().ok_or_else(|| {
                    field_err(path, format!("{field}.patterns"), "pattern is not a list")
                })?;
                let mut tokens = Vec::new();
                for t in toks {
                    let map = t.as_map().ok_or_else(|| {
                        field_err(path, format!("{field}.patterns"), "token spec is not a map")
                    })?;
                    let mut tests = Vec::new();
                    for (k, val) in map {
                        let kname = msgpack::key_str(k).unwrap_or("?");
                        let key = match kname {
                            "ORTH" | "TEXT" => Key::Orth,
                            "LOWER" => Key::Lower,
                            "TAG" => Key::Tag,
                            "POS" => Key::Pos,
                            "DEP" => Key::Dep,
                            "IS_SPACE" => Key::IsSpace,
                            other => {
                                return Err(unsupported(
                                    path,
                                    &format!("{field}.patterns"),
                                    format!("token attribute {other}"),
                                ))
                            }
                        };
                        let test = match val {
                            Value::Boolean(b) => Test::Bool(*b),
                            Value::String(_) | Value::Binary(_) => {
                                Test::Eq(msgpack::as_text(val).unwrap_or("").to_string())
                            }
                            Value::Map(ops) => {
                                if ops.len() != 1 {
                                    return Err(unsupported(
                                        path,
                                        &format!("{field}.patterns"),
                                        "several operators on one attribute".into(),
                                    ));
                                }
                                let (op, arg) = &ops[0];
                                let list = || -> Result<Vec<String>> {
                                    Ok(arg
                                        .as_array()
                                        .ok_or_else(|| {
                                            field_err(
                                                path,
                                                format!("{field}.patterns"),
                                                "IN/NOT_IN without a list",
                                            )
                                        })?
                                        .iter()
                                        .map(|s| msgpack::as_text(s).unwrap_or("").to_string())
                                        .collect())
                                };
                                match msgpack::key_str(op).unwrap_or("?") {
                                    "IN" => Test::In(list()?),
                                    "NOT_IN" => Test::NotIn(list()?),
                                    "REGEX" => {
                                        let src = msgpack::as_text(arg).ok_or_else(|| {
                                            field_err(
                                                path,
                                                format!("{field}.patterns"),
                                                "REGEX without a string",
                                            )
                                        })?;
                                        Test::Regex(Regex::new(&python_regex(src)).map_err(
                                            |e| NlpError::Regex {
                                                path: path.to_path_buf(),
                                                field: format!("{field}.patterns"),
                                                msg: e.to_string(),
                                            },
                                        )?)
                                    }
                                    other => {
                                        return Err(unsupported(
                                            path,
                                            &format!("{field}.patterns"),
                                            format!("operator {other}"),
                                        ))
                                    }
                                }
                            }
                            _ => {
                                return Err(unsupported(
                                    path,
                                    &format!("{field}.patterns"),
                                    format!("value {val}"),
                                ))
                            }
                        };
                        tests.push((key, test));
                    }
                    tokens.push(tests);
                }
                if tokens.is_empty() {
                    continue;
                }
                rules.push(Rule {
                    tokens,
                    index,
                    pos: pos.clone(),
                    tag: tag.clone(),
                    dep: dep.clone(),
                });
            }
        }
        Ok(AttributeRuler { rules })
    }

    fn token_matches(t: &RulerToken, tests: &[(Key, Test)]) -> bool {
        tests.iter().all(|(k, test)| {
            if let Test::Bool(b) = test {
                return match k {
                    Key::IsSpace => t.is_space == *b,
                    _ => false,
                };
            }
            let s: &str = match k {
                Key::Orth => t.text,
                Key::Lower => &t.lower,
                Key::Tag => &t.tag,
                Key::Pos => &t.pos,
                Key::Dep => &t.dep,
                Key::IsSpace => return false,
            };
            match test {
                Test::Eq(v) => s == v,
                Test::In(vs) => vs.iter().any(|v| v == s),
                Test::NotIn(vs) => !vs.iter().any(|v| v == s),
                Test::Regex(re) => re.is_match(s).unwrap_or(false),
                Test::Bool(_) => unreachable!(),
            }
        })
    }

    /// Applies every rule to the tokens.
    pub fn apply(&self, tokens: &mut [RulerToken]) {
        let n = tokens.len();
        let mut sets: Vec<(usize, &Rule)> = Vec::new();
        for rule in &self.rules {
            let len = rule.tokens.len();
            for start in 0..n.saturating_sub(len - 1) {
                if rule
                    .tokens
                    .iter()
                    .enumerate()
                    .all(|(k, tests)| Self::token_matches(&tokens[start + k], tests))
                {
                    let idx = if rule.index < 0 {
                        len as i64 + rule.index
                    } else {
                        rule.index
                    };
                    if idx >= 0 && (idx as usize) < len {
                        sets.push((start + idx as usize, rule));
                    }
                }
            }
        }
        for (i, rule) in sets {
            let t = &mut tokens[i];
            if let Some(p) = &rule.pos {
                t.pos = p.clone();
            }
            if let Some(p) = &rule.tag {
                t.tag = p.clone();
            }
            if let Some(p) = &rule.dep {
                t.dep = p.clone();
            }
        }
    }
}
