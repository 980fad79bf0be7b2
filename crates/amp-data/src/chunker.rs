//! Noun-chunk extraction for the auto-check (AMP §3.1.3, items 1–2).
//!
//! The paper finds every noun of a response, drops a fixed stop-list of "unnecessary" and
//! "abstract" nouns ([`UNNECESSARY_NOUNS`], [`ABSTRACT_NOUNS`]), and extends each remaining noun to
//! the *longest* noun chunk its dependency relations justify, e.g. "a white motorhome, which is
//! parked on a street"; only chunks not contained in longer ones are kept (as Kosmos-2's GRIT
//! pipeline does). We have no dependency parser, so the extension is a shallow parse over the
//! Penn Treebank tags of [`crate::tagger::BrillTagger::tag_lexical`] corrected by the caption
//! rules of [`crate::np_tags`]. The rules, in order:
//!
//! 1. **Head.** Every token whose tag starts with `NN` (NN, NNS, NNP, NNPS, NNP-PERS, ...) and whose
//!    lower-cased form is not on the stop-list is a head. Adjacent nouns form one compound
//!    ("stainless steel refrigerator", "clock tower"). The first noun of an idiom such as "side
//!    by side" or "hand in hand" heads no chunk (spaCy makes a chunk of the second only). A
//!    sentence's capitalised first word takes its lower-case form's tag when that is not a noun
//!    ("Red, yellow and green peppers": textblob's lexicon has "Red" as a proper noun).
//! 2. **Pre-modifiers** (leftwards from the compound): adjectives (JJ, JJR, JJS), numbers (CD),
//!    determiners (DT, and PDT before them), possessives (PRP$, WP$, and a genitive `N ' s`
//!    whose own NP is included), adverbs directly before an adjective/number/participle
//!    ("very large"), participles between a determiner/adjective and the noun ("a parked car"),
//!    and `and`/`,` between two adjectives ("black and white"). A determiner or possessive ends the
//!    left extension (only a PDT may precede it).
//! 3. **Prepositional phrases** (rightwards): a preposition (`IN` but not a subordinator of
//!    [`crate::np_tags::SUBORDINATORS`], or `TO`) followed by a base NP (rules 1–2, or a
//!    pronoun) is attached, repeatedly, by surface position ("a cup of coffee on the desk"); a
//!    subordinator starts a new clause instead ("a kite while her father watches").
//! 4. **No clausal modifiers**: relative clauses and participial modifiers end the chunk, as
//!    spaCy's noun chunks do ("a man wearing a blue helmet" gives "a man" and "a blue helmet").
//!    The paper's figure extends "a white motorhome" by its relative clause; we measured the
//!    prepositional reading instead against spaCy (`tests/spacy_chunks.rs`), where clause
//!    boundaries from a shallow parse were the largest source of disagreement.
//! 5. **Not extended**: coordination (as in Kosmos-2, conjuncts are separate chunks), appositions,
//!    main-clause verbs.
//! 6. **Maximality**: a chunk whose token span lies inside another chunk's span is dropped
//!    (the "street" in the motorhome example); identical spans are kept once.
//!
//! Each chunk keeps the sentence it came from: the auto-check's "global representation".
use crate::tagger::{detokenize, BrillTagger, TaggedSentence};
use amp_io::rng::{fnv1a, FNV_OFFSET};
use std::collections::HashSet;

/// The noun chunker's version: `chunker-` and 16 hex digits of a hash (FNV-1a, computed at compile
/// time) of the source of the tokenizer and tagger ([`crate::tagger`]), the caption tag rules
/// ([`crate::np_tags`]) and the chunk grammar (this module). It changes whenever any of them
/// changes (a comment edit included: it only invalidates caches), so a cache of chunks or of
/// auto-check results can key on it. The tagger's data files are not included: they are textblob's
/// `en-*.txt`, pinned by `scripts/setup.sh` (see [`crate::tagger::RESOURCE_FILES`]).
pub const CHUNKER_VERSION: &str = match std::str::from_utf8(&VERSION_BYTES) {
    Ok(s) => s,
    Err(_) => panic!("the version is ASCII"),
};

const SOURCE_HASH: u64 = fnv1a(
    fnv1a(
        fnv1a(FNV_OFFSET, include_bytes!("tagger.rs")),
        include_bytes!("np_tags.rs"),
    ),
    include_bytes!("chunker.rs"),
);

const VERSION_BYTES: [u8; 24] = {
    let mut out = *b"chunker-0000000000000000";
    let hex = b"0123456789abcdef";
    let mut i = 0;
    while i < 16 {
        out[8 + i] = hex[((SOURCE_HASH >> (60 - 4 * i)) & 0xf) as usize];
        i += 1;
    }
    out
};

/// "Unnecessary nouns" the paper drops (§3.1.3, A.1).
pub const UNNECESSARY_NOUNS: &[&str] = &[
    "photo",
    "image",
    "photograph",
    "picture",
    "figure",
    "painting",
];

/// "Abstract nouns" the paper drops (§3.1.3, A.1, after Kosmos-2).
pub const ABSTRACT_NOUNS: &[&str] = &[
    "harmony",
    "beauty",
    "feel",
    "concentration",
    "life",
    "matter",
    "feature",
    "effect",
    "skill",
    "detail",
    "emotion",
    "nature",
    "time",
    "background",
    "placement",
    "perspective",
    "universality",
    "attention",
    "features",
    "essence",
    "peace",
    "composition",
    "element",
    "foreground",
    "appreciation",
    "atmosphere",
    "emotions",
    "artwork",
    "subject",
];

/// One maximal noun chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NounChunk {
    /// The chunk as text ("a white motorhome, which is parked on a street").
    pub text: String,
    /// Index of its sentence in [`ChunkedText::sentences`].
    pub sentence: usize,
    /// Token span `[start, end)` inside the sentence.
    pub start: usize,
    pub end: usize,
}

/// A text split into sentences with its maximal noun chunks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkedText {
    /// Sentences as text (the global representation of their chunks).
    pub sentences: Vec<String>,
    /// Maximal noun chunks in text order.
    pub chunks: Vec<NounChunk>,
}

impl ChunkedText {
    /// The sentence of chunk `i`.
    pub fn sentence_of(&self, i: usize) -> &str {
        &self.sentences[self.chunks[i].sentence]
    }

    /// Appends `other` (the next turn of a response): its sentences after these, its chunks
    /// pointing at them.
    pub fn append(&mut self, other: &ChunkedText) {
        let off = self.sentences.len();
        self.sentences.extend(other.sentences.iter().cloned());
        self.chunks.extend(other.chunks.iter().map(|ch| NounChunk {
            sentence: ch.sentence + off,
            ..ch.clone()
        }));
    }
}

/// Noun-chunk extractor: the Brill tagger plus the shallow rules of the module docs.
#[derive(Debug, Clone)]
pub struct Chunker {
    tagger: BrillTagger,
    stop: HashSet<String>,
}

fn is_noun(t: &str) -> bool {
    t.starts_with("NN")
}
fn is_adj(t: &str) -> bool {
    matches!(t, "JJ" | "JJR" | "JJS")
}
fn is_adv(t: &str) -> bool {
    matches!(t, "RB" | "RBR" | "RBS")
}

struct Sent<'a> {
    tok: &'a [String],
    tag: &'a [String],
}

impl Sent<'_> {
    fn n(&self) -> usize {
        self.tag.len()
    }
    fn t(&self, i: usize) -> &str {
        self.tag.get(i).map(String::as_str).unwrap_or("")
    }
    fn genitive_at(&self, j: usize) -> bool {
        // tokens [.., N, ', s] with j at "s"
        j >= 2 && self.tok[j] == "s" && self.tok[j - 1] == "'" && is_noun(self.t(j - 2))
    }
    /// A plural possessive `[.., NNS, ']` with j at "'" ("the farmers' market").
    fn plural_genitive_at(&self, j: usize) -> bool {
        j >= 1 && self.tok[j] == "'" && self.t(j - 1) == "NNS" && self.tok[j - 1].ends_with('s')
    }

    /// Leftmost token of the NP whose noun compound starts at `rs`.
    fn extend_left(&self, rs: usize) -> usize {
        let mut s = rs;
        let mut det_seen = false;
        while s > 0 {
            let j = s - 1;
            let t = self.t(j);
            let next = self.t(s);
            let prev = if j > 0 { self.t(j - 1) } else { "" };
            let take = if det_seen {
                t == "PDT"
            } else if matches!(t, "DT" | "PRP$" | "WP$" | "PDT") {
                det_seen = true;
                true
            } else if is_adj(t) || t == "CD" {
                true
            } else if is_adv(t) {
                is_adj(next) || next == "CD" || next == "VBN"
            } else if t == "VBN" || t == "VBG" {
                matches!(prev, "DT" | "PRP$" | "CD")
                    || is_adj(prev)
                    || (t == "VBN" && s == rs && (j == 0 || matches!(prev, "CC" | "IN" | ",")))
            } else if t == "CC" || t == "," {
                is_adj(next) && is_adj(prev)
            } else if self.genitive_at(j) || self.plural_genitive_at(j) {
                // include "' s" (or "'") and the possessor's own NP
                let mut k = if self.tok[j] == "s" { j - 2 } else { j - 1 };
                while k > 0 && is_noun(self.t(k - 1)) {
                    k -= 1;
                }
                s = self.extend_left(k);
                break;
            } else {
                false
            };
            if !take {
                break;
            }
            s = j;
        }
        s
    }

    /// A base NP starting exactly at `i` (pre-modifiers, then nouns); returns its end. A lone
    /// pronoun counts (for PP objects).
    fn base_np_forward(&self, i: usize) -> Option<usize> {
        if i >= self.n() {
            return None;
        }
        if matches!(self.t(i), "PRP" | "EX") && self.tok[i] != "'" {
            return Some(i + 1);
        }
        let mut k = i;
        while k < self.n() {
            let t = self.t(k);
            if matches!(
                t,
                "DT" | "PDT" | "PRP$" | "WP$" | "CD" | "VBN" | "VBG" | "CC" | ","
            ) || is_adj(t)
                || is_adv(t)
            {
                if (t == "CC" || t == ",") && k == i {
                    return None;
                }
                k += 1;
            } else {
                break;
            }
        }
        if k >= self.n() || !is_noun(self.t(k)) {
            return None;
        }
        while k < self.n() && is_noun(self.t(k)) {
            k += 1;
        }
        // genitive continuation: "the man ' s hat"
        if k + 1 < self.n() && self.tok[k] == "'" && self.tok[k + 1] == "s" {
            if let Some(e) = self.base_np_forward(k + 2) {
                return Some(e);
            }
        }
        // plural possessive: "the farmers ' market"
        if k < self.n() && self.plural_genitive_at(k) {
            if let Some(e) = self.base_np_forward(k + 1) {
                return Some(e);
            }
        }
        Some(k)
    }

    /// The first noun of "side by side", "hand in hand" (a bare noun repeated after a
    /// preposition): an adverbial idiom whose first noun heads no chunk (as in spaCy, where only
    /// the preposition's object is a noun chunk).
    fn idiom_head(&self, i: usize) -> bool {
        i + 2 < self.n()
            && (i == 0 || !is_noun(self.t(i - 1)))
            && self.tok[i + 2].eq_ignore_ascii_case(&self.tok[i])
            && is_noun(self.t(i + 2))
            && crate::np_tags::is_preposition(self.tok, self.tag, i + 1)
            && !is_noun(self.t(i + 3))
    }

    /// Attaches prepositional phrases after `e` (rule 3).
    fn extend_pps(&self, mut e: usize) -> usize {
        while e < self.n()
            && (self.t(e) == "TO" || crate::np_tags::is_preposition(self.tok, self.tag, e))
        {
            let Some(np_end) = self.base_np_forward(e + 1) else {
                break;
            };
            e = np_end;
        }
        e
    }
}

impl Chunker {
    /// A chunker with the paper's stop-lists.
    pub fn new(tagger: BrillTagger) -> Self {
        let stop = UNNECESSARY_NOUNS
            .iter()
            .chain(ABSTRACT_NOUNS)
            .map(|s| s.to_string())
            .collect();
        Self { tagger, stop }
    }

    /// A chunker with a custom stop-list (lower-case nouns).
    pub fn with_stop_list(tagger: BrillTagger, stop: impl IntoIterator<Item = String>) -> Self {
        Self {
            tagger,
            stop: stop.into_iter().collect(),
        }
    }

    /// The tagger in use.
    pub fn tagger(&self) -> &BrillTagger {
        &self.tagger
    }

    /// A sentence's first word is capitalised whatever it is; the lexicon's entry for the
    /// capitalised form (textblob's tagger looks it up first) is often a proper noun ("Red",
    /// "Green"). Where the lower-case form has a tag of its own that is not a noun, it is used:
    /// "Red, yellow and green peppers" starts with an adjective.
    fn untitle_first(&self, tokens: &[String], tags: &mut [String]) {
        let (Some(first), Some(tag)) = (tokens.first(), tags.first_mut()) else {
            return;
        };
        if !tag.starts_with("NNP") {
            return;
        }
        if let Some(t) = self.tagger.lexicon().get(&first.to_lowercase()) {
            if !t.is_empty() && !t.starts_with("NN") {
                *tag = t.clone();
            }
        }
    }

    /// Maximal noun chunks of one tagged sentence, as token spans.
    pub fn chunk_spans(&self, s: &TaggedSentence) -> Vec<(usize, usize)> {
        let sent = Sent {
            tok: &s.tokens,
            tag: &s.tags,
        };
        let n = sent.n();
        let mut spans: Vec<(usize, usize)> = Vec::new();
        let mut i = 0;
        while i < n {
            if !is_noun(sent.t(i)) || s.tokens[i] == "'" || sent.idiom_head(i) {
                i += 1;
                continue;
            }
            let rs = i;
            let mut re = i;
            while re < n && is_noun(sent.t(re)) {
                re += 1;
            }
            i = re;
            let has_head = (rs..re).any(|h| !self.stop.contains(&s.tokens[h].to_lowercase()));
            if !has_head {
                continue;
            }
            let start = sent.extend_left(rs);
            let end = sent.extend_pps(re);
            if !spans.contains(&(start, end)) {
                spans.push((start, end));
            }
        }
        let maximal: Vec<(usize, usize)> = spans
            .iter()
            .copied()
            .filter(|&(a, b)| {
                !spans
                    .iter()
                    .any(|&(c, d)| (c, d) != (a, b) && c <= a && b <= d)
            })
            .collect();
        let mut maximal = maximal;
        maximal.sort_unstable();
        maximal
    }

    /// Splits `text` into sentences and extracts its maximal noun chunks.
    pub fn chunk(&self, text: &str) -> ChunkedText {
        let mut out = ChunkedText::default();
        for tokens in crate::tagger::tokenize(text) {
            let mut tags = self.tagger.tag_lexical(&tokens);
            self.untitle_first(&tokens, &mut tags);
            crate::np_tags::retag(&tokens, &mut tags);
            let s = TaggedSentence { tokens, tags };
            let spans = self.chunk_spans(&s);
            let si = out.sentences.len();
            out.sentences.push(s.text());
            for (a, b) in spans {
                out.chunks.push(NounChunk {
                    text: detokenize(&s.tokens[a..b]),
                    sentence: si,
                    start: a,
                    end: b,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_a_hash_of_the_chunker_source() {
        assert_eq!(CHUNKER_VERSION.len(), 24);
        assert!(CHUNKER_VERSION.starts_with("chunker-"));
        let h = SOURCE_HASH;
        assert_eq!(CHUNKER_VERSION, format!("chunker-{h:016x}"));
        // the hash reads the files: one byte more gives another version
        let mut src = include_bytes!("chunker.rs").to_vec();
        src.push(b'\n');
        let other = fnv1a(
            fnv1a(
                fnv1a(FNV_OFFSET, include_bytes!("tagger.rs")),
                include_bytes!("np_tags.rs"),
            ),
            &src,
        );
        assert_ne!(other, h);
    }
}
