//! Lexical attributes of a token string, as spaCy's `Vocab` computes them for a new lexeme
//! (`spacy/lang/lex_attrs.py`, `spacy/vocab.pyx`): the features `tok2vec` embeds.
use crate::error::{field_err, Result};
use crate::hash::string_id;
use crate::msgpack;
use std::collections::HashMap;
use std::path::Path;

/// spaCy's `BASE_NORMS` (`spacy/lang/norm_exceptions.py`): language-independent norms of quotes,
/// dashes and currency symbols, consulted after the model's `lexeme_norm` table.
const BASE_NORMS: &[(&str, &str)] = &[
    ("'s", "'s"),
    ("'S", "'s"),
    ("’s", "'s"),
    ("’S", "'s"),
    ("’", "'"),
    ("‘", "'"),
    ("´", "'"),
    ("`", "'"),
    ("”", "\""),
    ("“", "\""),
    ("''", "\""),
    ("``", "\""),
    ("´´", "\""),
    ("„", "\""),
    ("»", "\""),
    ("«", "\""),
    ("‘‘", "\""),
    ("’’", "\""),
    ("？", "?"),
    ("！", "!"),
    ("，", ","),
    ("；", ";"),
    ("：", ":"),
    ("。", "."),
    ("।", "."),
    ("…", "..."),
    ("—", "-"),
    ("–", "-"),
    ("--", "-"),
    ("---", "-"),
    ("——", "-"),
    ("€", "$"),
    ("£", "$"),
    ("¥", "$"),
    ("฿", "$"),
    ("US$", "$"),
    ("C$", "$"),
    ("A$", "$"),
    ("₺", "$"),
    ("₹", "$"),
    ("৳", "$"),
    ("₩", "$"),
    ("Mex$", "$"),
    ("₣", "$"),
    ("E£", "$"),
];

/// The vocab's norm lookups: the model's `vocab/lookups.bin` table `lexeme_norm` (keyed by string
/// id), then `BASE_NORMS`, then lower case.
#[derive(Debug, Clone, Default)]
pub struct Norms {
    lexeme_norm: HashMap<u64, String>,
    base: HashMap<u64, &'static str>,
}

impl Norms {
    /// Reads `vocab/lookups.bin` (absent or without `lexeme_norm`: no table).
    pub fn load(path: &Path) -> Result<Self> {
        let mut lexeme_norm = HashMap::new();
        if path.exists() {
            let v = msgpack::read(path)?;
            if let Some(t) = msgpack::get(&v, "lexeme_norm") {
                // a serialized Table: either the map itself or {"dict": map, ...}
                let t = msgpack::get(t, "dict").unwrap_or(t);
                let map = t
                    .as_map()
                    .ok_or_else(|| field_err(path, "lexeme_norm", "not a map"))?;
                for (k, v) in map {
                    let k = k
                        .as_u64()
                        .ok_or_else(|| field_err(path, "lexeme_norm", "non-integer key"))?;
                    let v = msgpack::as_text(v)
                        .ok_or_else(|| field_err(path, "lexeme_norm", "non-string value"))?;
                    lexeme_norm.insert(k, v.to_string());
                }
            }
        }
        let base = BASE_NORMS.iter().map(|&(k, v)| (string_id(k), v)).collect();
        Ok(Norms { lexeme_norm, base })
    }

    /// The lexeme's NORM string.
    pub fn norm(&self, text: &str) -> String {
        let id = string_id(text);
        if let Some(n) = self.lexeme_norm.get(&id) {
            return n.clone();
        }
        if let Some(n) = self.base.get(&id) {
            return (*n).to_string();
        }
        lower(text)
    }

    /// Entries in the model's `lexeme_norm` table.
    pub fn table_len(&self) -> usize {
        self.lexeme_norm.len()
    }
}

/// Python's `str.lower()` (full Unicode lower-casing, as Rust's).
pub fn lower(text: &str) -> String {
    text.to_lowercase()
}

/// PREFIX: the first character (`string[:1]`).
pub fn prefix(text: &str) -> &str {
    match text.char_indices().nth(1) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// SUFFIX: the last three characters (`string[-3:]`).
pub fn suffix(text: &str) -> &str {
    let n = text.chars().count();
    if n <= 3 {
        return text;
    }
    let (i, _) = text.char_indices().nth(n - 3).unwrap();
    &text[i..]
}

/// Python's `str.isspace()` for one character (Rust's whitespace plus the ASCII separators
/// U+001C..U+001F that Python also counts).
pub fn is_space_char(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// IS_SPACE: non-empty and all whitespace (`str.isspace()`).
pub fn is_space(text: &str) -> bool {
    !text.is_empty() && text.chars().all(is_space_char)
}

fn is_digit(c: char) -> bool {
    c.is_ascii_digit() || unicode_decimal(c) || matches!(c, '²' | '³' | '¹')
}

/// Characters of Unicode category Nd outside ASCII (Python's `isdigit` is true for them). Only
/// the common decimal blocks; shapes of rarer digits fall back to the character itself.
fn unicode_decimal(c: char) -> bool {
    let u = c as u32;
    const BLOCKS: &[u32] = &[
        0x0660, 0x06F0, 0x07C0, 0x0966, 0x09E6, 0x0A66, 0x0AE6, 0x0B66, 0x0BE6, 0x0C66, 0x0CE6,
        0x0D66, 0x0E50, 0x0ED0, 0x0F20, 0x1040, 0xFF10,
    ];
    BLOCKS.iter().any(|&b| (b..b + 10).contains(&u))
}

/// SHAPE: spaCy's `word_shape` ("Xxxx", "dd", ...; runs longer than 4 truncated; "LONG" from
/// 100 characters).
pub fn shape(text: &str) -> String {
    if text.chars().count() >= 100 {
        return "LONG".to_string();
    }
    let mut out = String::new();
    let mut last: Option<char> = None;
    let mut seq = 0;
    for c in text.chars() {
        let s = if c.is_alphabetic() {
            if c.is_uppercase() {
                'X'
            } else {
                'x'
            }
        } else if is_digit(c) {
            'd'
        } else {
            c
        };
        if Some(s) == last {
            seq += 1;
        } else {
            seq = 0;
            last = Some(s);
        }
        if seq < 4 {
            out.push(s);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_as_spacy() {
        // spaCy's documented examples: "Apple" -> "Xxxxx", "U.K." -> "X.X.", "$1 billion" parts
        assert_eq!(shape("Apple"), "Xxxxx");
        assert_eq!(shape("U.K."), "X.X.");
        assert_eq!(shape("$"), "$");
        assert_eq!(shape("1"), "d");
        assert_eq!(shape("billion"), "xxxx");
        assert_eq!(shape("2024-11-30"), "dddd-dd-dd");
        assert_eq!(shape("iPhone"), "xXxxxx");
        assert_eq!(shape(&"a".repeat(100)), "LONG");
    }

    #[test]
    fn affixes() {
        assert_eq!(prefix("Apple"), "A");
        assert_eq!(suffix("Apple"), "ple");
        assert_eq!(suffix("at"), "at");
        assert_eq!(prefix("élan"), "é");
        assert_eq!(suffix("café"), "afé");
        assert!(is_space("\n "));
        assert!(!is_space(""));
    }
}
