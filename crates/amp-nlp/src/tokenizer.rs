//! spaCy's rule-based tokenizer (`spacy/tokenizer.pyx`), driven by the model's own `tokenizer`
//! file: prefix, suffix and infix patterns, `url_match`/`token_match`, and the special cases
//! (tokenizer exceptions with their ORTH pieces and NORM values).
//!
//! The algorithm: split on whitespace (a single ' ' becomes the previous token's trailing space,
//! other whitespace runs become tokens); each span is a special case, or is peeled of prefixes
//! and suffixes until a special case or nothing more matches, then its middle is a special case,
//! a URL, or split at infixes. Finally the special-case matcher (`_apply_special_cases`) re-joins
//! special cases that the affix rules split (":)" in "it:)", "Dr." in "Dr.Smith").
use crate::error::{field_err, NlpError, Result};
use crate::lexeme::is_space_char;
use crate::msgpack;
use fancy_regex::Regex;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Each loaded tokenizer's id (the span cache's key: two models in one process never share).
static NEXT_ID: AtomicU64 = AtomicU64::new(0);
/// Spans cached per thread before the cache is cleared (bounds its memory: a few MB).
const CACHE_SPANS: usize = 50_000;

/// Per-thread cache of whitespace-delimited spans (spaCy's `Tokenizer._cache`): a span's tokens
/// depend only on its text (the patterns' look-arounds see the span alone), and most words of a
/// caption recur. Per thread, so the pipeline stays `Sync` without a lock; keyed by tokenizer id
/// and whether special cases apply; values are the tokens with `start` relative to the span.
type SpanCache = HashMap<(u64, bool, Box<str>), Box<[RawToken]>>;
thread_local! {
    static SPAN_CACHE: RefCell<SpanCache> = RefCell::new(HashMap::new());
}

/// spaCy attribute ids used in tokenizer exceptions (`spacy/attrs.pxd`).
const ORTH: u64 = 65;
const NORM: u64 = 67;

/// A piece of a special case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialPiece {
    pub orth: String,
    pub norm: Option<String>,
}

/// A token as the tokenizer emits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawToken {
    pub text: String,
    /// byte offset into the text
    pub start: usize,
    /// followed by one ' ' that is not a token
    pub whitespace: bool,
    /// NORM set by a special case
    pub norm: Option<String>,
}

/// The tokenizer.
#[derive(Debug)]
pub struct Tokenizer {
    prefix: Option<Regex>,
    suffix: Option<Regex>,
    infix: Option<Regex>,
    token_match: Option<Regex>,
    url_match: Option<Regex>,
    specials: HashMap<String, Vec<SpecialPiece>>,
    /// the special-case matcher's patterns (token texts), by first token
    special_patterns: HashMap<String, Vec<Vec<String>>>,
    /// this instance's key in the span cache
    id: u64,
}

/// Rewrites a Python `re` pattern for fancy-regex: `\uXXXX`/`\UXXXXXXXX` escapes become
/// `\x{..}`, the redundant `(?u)` flag is dropped, and characters that are operators inside a
/// Rust character class (`[`, `&&`, `--`, `~~`) are escaped there.
pub fn python_regex(p: &str) -> String {
    let p = p.strip_prefix("(?u)").unwrap_or(p);
    let cs: Vec<char> = p.chars().collect();
    let mut out = String::with_capacity(p.len());
    let mut i = 0;
    let mut in_class = false;
    let mut class_start = false; // just after '[' or '[^'
    while i < cs.len() {
        let c = cs[i];
        if c == '\\' && i + 1 < cs.len() {
            let n = cs[i + 1];
            let width = match n {
                'u' => 4,
                'U' => 8,
                _ => 0,
            };
            if width > 0
                && i + 2 + width <= cs.len()
                && cs[i + 2..i + 2 + width]
                    .iter()
                    .all(|h| h.is_ascii_hexdigit())
            {
                let hex: String = cs[i + 2..i + 2 + width].iter().collect();
                let cp = u32::from_str_radix(&hex, 16).unwrap_or(0);
                out.push_str(&format!("\\x{{{cp:X}}}"));
                i += 2 + width;
            } else {
                out.push(c);
                out.push(n);
                i += 2;
            }
            class_start = false;
            continue;
        }
        if in_class {
            if c == ']' && !class_start {
                in_class = false;
                out.push(c);
            } else if c == '[' || c == '&' || c == '~' || (c == '-' && cs.get(i + 1) == Some(&'-'))
            {
                out.push('\\');
                out.push(c);
            } else {
                out.push(c);
            }
            class_start = false;
        } else {
            out.push(c);
            if c == '[' {
                in_class = true;
                class_start = true;
                if cs.get(i + 1) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
            }
        }
        i += 1;
    }
    out
}

fn compile(path: &Path, field: &str, v: Option<&rmpv::Value>) -> Result<Option<Regex>> {
    let Some(v) = v else { return Ok(None) };
    if v.is_nil() {
        return Ok(None);
    }
    let src = msgpack::as_text(v).ok_or_else(|| field_err(path, field, "not a string"))?;
    let re = Regex::new(&python_regex(src)).map_err(|e| NlpError::Regex {
        path: path.to_path_buf(),
        field: field.into(),
        msg: e.to_string(),
    })?;
    Ok(Some(re))
}

impl Tokenizer {
    /// Reads the model's `tokenizer` file.
    pub fn load(path: &Path) -> Result<Self> {
        let v = msgpack::read(path)?;
        let prefix = compile(path, "prefix_search", msgpack::get(&v, "prefix_search"))?;
        let suffix = compile(path, "suffix_search", msgpack::get(&v, "suffix_search"))?;
        let infix = compile(path, "infix_finditer", msgpack::get(&v, "infix_finditer"))?;
        let token_match = compile(path, "token_match", msgpack::get(&v, "token_match"))?;
        let url_match = compile(path, "url_match", msgpack::get(&v, "url_match"))?;
        let mut specials = HashMap::new();
        if let Some(exc) = msgpack::get(&v, "exceptions") {
            let map = exc
                .as_map()
                .ok_or_else(|| field_err(path, "exceptions", "not a map"))?;
            for (k, pieces) in map {
                let key = msgpack::key_str(k)
                    .ok_or_else(|| field_err(path, "exceptions", "non-string key"))?
                    .to_string();
                let field = format!("exceptions[{key:?}]");
                let list = pieces
                    .as_array()
                    .ok_or_else(|| field_err(path, &field, "not a list"))?;
                let mut out = Vec::new();
                for piece in list {
                    let attrs = piece
                        .as_map()
                        .ok_or_else(|| field_err(path, &field, "piece is not a map"))?;
                    let (mut orth, mut norm) = (None, None);
                    for (a, val) in attrs {
                        let text = msgpack::as_text(val)
                            .ok_or_else(|| field_err(path, &field, "non-string value"))?
                            .to_string();
                        match a.as_u64() {
                            Some(ORTH) => orth = Some(text),
                            Some(NORM) => norm = Some(text),
                            other => {
                                return Err(NlpError::Unsupported {
                                    path: path.to_path_buf(),
                                    field,
                                    what: format!(
                                        "special-case attribute {other:?} (only ORTH, NORM)"
                                    ),
                                })
                            }
                        }
                    }
                    let orth = orth.ok_or_else(|| field_err(path, &field, "piece without ORTH"))?;
                    out.push(SpecialPiece { orth, norm });
                }
                if out.iter().map(|p| p.orth.as_str()).collect::<String>() != key {
                    return Err(field_err(path, &field, "ORTH pieces do not spell the key"));
                }
                specials.insert(key, out);
            }
        }
        let faster_heuristics = match msgpack::get(&v, "faster_heuristics") {
            None => true,
            Some(b) => b
                .as_bool()
                .ok_or_else(|| field_err(path, "faster_heuristics", "not a boolean"))?,
        };
        let mut tok = Tokenizer {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            prefix,
            suffix,
            infix,
            token_match,
            url_match,
            specials,
            special_patterns: HashMap::new(),
        };
        // `add_special_case`: the matcher gets the special cases that affix rules would split
        let mut keys: Vec<&String> = tok.specials.keys().collect();
        keys.sort();
        let mut patterns: HashMap<String, Vec<Vec<String>>> = HashMap::new();
        for key in keys {
            let splits = !faster_heuristics
                || Self::search_len(&tok.prefix, key) > 0
                || tok
                    .infix
                    .as_ref()
                    .is_some_and(|r| r.find_iter(key).any(|m| m.is_ok()))
                || Self::search_len(&tok.suffix, key) > 0
                || key.contains(' ');
            if splits {
                let pat: Vec<String> = tok
                    .tokenize_affixes(key, false)
                    .into_iter()
                    .map(|t| t.text)
                    .collect();
                if let Some(first) = pat.first() {
                    patterns.entry(first.clone()).or_default().push(pat);
                }
            }
        }
        tok.special_patterns = patterns;
        Ok(tok)
    }

    /// Number of special cases.
    pub fn n_specials(&self) -> usize {
        self.specials.len()
    }

    fn is_match(re: &Option<Regex>, s: &str) -> bool {
        // Python's `re.match`: anchored at the start
        re.as_ref()
            .is_some_and(|r| matches!(r.find(s), Ok(Some(m)) if m.start() == 0))
    }

    fn search_len(re: &Option<Regex>, s: &str) -> usize {
        match re.as_ref().and_then(|r| r.find(s).ok().flatten()) {
            Some(m) => m.end() - m.start(),
            None => 0,
        }
    }

    /// Tokenizes `text` (spaCy's `Tokenizer.__call__`).
    pub fn tokenize(&self, text: &str) -> Vec<RawToken> {
        let tokens = self.tokenize_affixes(text, true);
        self.apply_special_cases(text, tokens)
    }

    /// spaCy's `_apply_special_cases`: special cases that the affix rules split into several
    /// tokens (":)" in "it:)", "Dr." in "Dr.Smith") are found as token sequences (their own
    /// tokenization without special cases) and, where the covered text is exactly the special
    /// case, re-tokenized as it says. Overlaps: longer matches first, then earlier ones; a match
    /// touching tokens of an earlier-considered one is dropped.
    fn apply_special_cases(&self, text: &str, tokens: Vec<RawToken>) -> Vec<RawToken> {
        if self.special_patterns.is_empty() || tokens.is_empty() {
            return tokens;
        }
        let mut matches: Vec<(usize, usize)> = Vec::new();
        for i in 0..tokens.len() {
            let Some(pats) = self.special_patterns.get(tokens[i].text.as_str()) else {
                continue;
            };
            for pat in pats {
                let e = i + pat.len();
                if e <= tokens.len() && pat.iter().zip(&tokens[i..e]).all(|(p, t)| *p == t.text) {
                    matches.push((i, e));
                }
            }
        }
        if matches.is_empty() {
            return tokens;
        }
        // len_start_cmp order (shorter first; equal length: later start first), walked backwards
        matches.sort_by(|a, b| (a.1 - a.0).cmp(&(b.1 - b.0)).then(b.0.cmp(&a.0)));
        let mut seen = std::collections::HashSet::new();
        let mut kept: Vec<(usize, usize)> = Vec::new();
        for &(s, e) in matches.iter().rev() {
            if !seen.contains(&s) && !seen.contains(&(e - 1)) {
                kept.push((s, e));
            }
            seen.extend(s..e);
        }
        kept.sort();
        let mut out = Vec::with_capacity(tokens.len());
        let mut i = 0;
        let mut k = 0;
        while i < tokens.len() {
            if k < kept.len() && kept[k].0 == i {
                let (s, e) = kept[k];
                k += 1;
                let (a, last) = (tokens[s].start, &tokens[e - 1]);
                let span = &text[a..last.start + last.text.len()];
                match self.specials.get(span) {
                    Some(pieces) => {
                        let n = out.len();
                        Self::push_special(&mut out, pieces, a);
                        if let Some(t) = out[n..].last_mut() {
                            t.whitespace = last.whitespace;
                        }
                    }
                    None => out.extend_from_slice(&tokens[s..e]),
                }
                i = e;
            } else {
                out.push(tokens[i].clone());
                i += 1;
            }
        }
        out
    }

    fn tokenize_affixes(&self, text: &str, with_specials: bool) -> Vec<RawToken> {
        let mut out: Vec<RawToken> = Vec::new();
        let Some(first) = text.chars().next() else {
            return out;
        };
        let mut in_ws = is_space_char(first);
        let mut start = 0;
        for (i, c) in text.char_indices() {
            if is_space_char(c) != in_ws {
                if start < i {
                    self.tokenize_span(text, start, i, &mut out, with_specials);
                }
                if c == ' ' {
                    if let Some(last) = out.last_mut() {
                        last.whitespace = true;
                    }
                    start = i + 1;
                } else {
                    start = i;
                }
                in_ws = !in_ws;
            }
        }
        if start < text.len() {
            self.tokenize_span(text, start, text.len(), &mut out, with_specials);
            if let Some(last) = out.last_mut() {
                last.whitespace = text.ends_with(' ') && !in_ws;
            }
        }
        out
    }

    fn push(out: &mut Vec<RawToken>, text: &str, lo: usize, hi: usize) {
        out.push(RawToken {
            text: text[lo..hi].to_string(),
            start: lo,
            whitespace: false,
            norm: None,
        });
    }

    fn push_special(out: &mut Vec<RawToken>, pieces: &[SpecialPiece], mut lo: usize) {
        for p in pieces {
            out.push(RawToken {
                text: p.orth.clone(),
                start: lo,
                whitespace: false,
                norm: p.norm.clone(),
            });
            lo += p.orth.len();
        }
    }

    fn special(&self, s: &str, with_specials: bool) -> Option<&Vec<SpecialPiece>> {
        if with_specials {
            self.specials.get(s)
        } else {
            None
        }
    }

    /// [`tokenize_span_uncached`](Self::tokenize_span_uncached) through the span cache.
    fn tokenize_span(
        &self,
        text: &str,
        lo: usize,
        hi: usize,
        out: &mut Vec<RawToken>,
        with_specials: bool,
    ) {
        let span = &text[lo..hi];
        let key = (self.id, with_specials, Box::<str>::from(span));
        let hit = SPAN_CACHE.with(|c| {
            c.borrow().get(&key).map(|toks| {
                out.extend(toks.iter().map(|t| RawToken {
                    start: t.start + lo,
                    ..t.clone()
                }))
            })
        });
        if hit.is_some() {
            return;
        }
        let first = out.len();
        self.tokenize_span_uncached(text, lo, hi, out, with_specials);
        let toks: Box<[RawToken]> = out[first..]
            .iter()
            .map(|t| RawToken {
                start: t.start - lo,
                ..t.clone()
            })
            .collect();
        SPAN_CACHE.with(|c| {
            let mut c = c.borrow_mut();
            if c.len() >= CACHE_SPANS {
                c.clear();
            }
            c.insert(key, toks);
        });
    }

    /// spaCy's `_split_affixes` + `_attach_tokens` for one whitespace-delimited span.
    fn tokenize_span_uncached(
        &self,
        text: &str,
        lo: usize,
        hi: usize,
        out: &mut Vec<RawToken>,
        with_specials: bool,
    ) {
        if let Some(p) = self.special(&text[lo..hi], with_specials) {
            Self::push_special(out, p, lo);
            return;
        }
        // _split_affixes
        let (mut lo, mut hi) = (lo, hi);
        let mut prefixes: Vec<(usize, usize)> = Vec::new();
        let mut suffixes: Vec<(usize, usize)> = Vec::new();
        let mut last_size = usize::MAX;
        while hi > lo && hi - lo != last_size {
            let s = &text[lo..hi];
            if Self::is_match(&self.token_match, s) || self.special(s, with_specials).is_some() {
                break;
            }
            last_size = hi - lo;
            let pre_len = Self::search_len(&self.prefix, s);
            if pre_len != 0 {
                let minus_pre = &text[lo + pre_len..hi];
                if !minus_pre.is_empty() && self.special(minus_pre, with_specials).is_some() {
                    prefixes.push((lo, lo + pre_len));
                    lo += pre_len;
                    break;
                }
            }
            let suf_len = Self::search_len(&self.suffix, &text[lo + pre_len..hi]);
            if suf_len != 0 {
                let minus_suf = &text[lo..hi - suf_len];
                if !minus_suf.is_empty() && self.special(minus_suf, with_specials).is_some() {
                    suffixes.push((hi - suf_len, hi));
                    hi -= suf_len;
                    break;
                }
            }
            if pre_len != 0 && suf_len != 0 && pre_len + suf_len <= hi - lo {
                prefixes.push((lo, lo + pre_len));
                suffixes.push((hi - suf_len, hi));
                lo += pre_len;
                hi -= suf_len;
            } else if pre_len != 0 {
                prefixes.push((lo, lo + pre_len));
                lo += pre_len;
            } else if suf_len != 0 {
                suffixes.push((hi - suf_len, hi));
                hi -= suf_len;
            }
        }
        // _attach_tokens
        for &(a, b) in &prefixes {
            Self::push(out, text, a, b);
        }
        if lo < hi {
            let s = &text[lo..hi];
            if let Some(p) = self.special(s, with_specials) {
                Self::push_special(out, p, lo);
            } else if Self::is_match(&self.token_match, s) || Self::is_match(&self.url_match, s) {
                Self::push(out, text, lo, hi);
            } else {
                let matches: Vec<(usize, usize)> = match &self.infix {
                    Some(re) => re
                        .find_iter(s)
                        .filter_map(|m| m.ok())
                        .map(|m| (m.start(), m.end()))
                        .collect(),
                    None => Vec::new(),
                };
                if matches.is_empty() {
                    Self::push(out, text, lo, hi);
                } else {
                    let mut start = 0;
                    for (ms, me) in matches {
                        if ms == 0 {
                            continue;
                        }
                        if ms != start {
                            Self::push(out, text, lo + start, lo + ms);
                        }
                        if ms != me {
                            Self::push(out, text, lo + ms, lo + me);
                        }
                        start = me;
                    }
                    if start < s.len() {
                        Self::push(out, text, lo + start, hi);
                    }
                }
            }
        }
        for &(a, b) in suffixes.iter().rev() {
            Self::push(out, text, a, b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_regex_rewrites() {
        assert_eq!(python_regex(r"(?u)^\u00A6x"), r"^\x{A6}x");
        assert_eq!(
            python_regex(r"[\U0001F9A2-\U0001F9A3]"),
            r"[\x{1F9A2}-\x{1F9A3}]"
        );
        assert_eq!(python_regex(r"[[&]"), r"[\[\&]");
        assert_eq!(python_regex(r"[]a]"), r"[]a]");
        assert_eq!(python_regex(r"\\u"), r"\\u");
    }
}
