//! English tokenizer and Brill part-of-speech tagger, a faithful port of pattern/textblob.
//!
//! The auto-check (AMP §3.1.3) needs the nouns of every response. Rather than a hand-made word list,
//! this module re-implements the Brill tagger that PyPI's `textblob` ships (adapted from Tom de
//! Smedt's *pattern*, `textblob/_text.py`), reading its resource files at run time:
//!
//! * `en-lexicon.txt` — ~94k known words with their most frequent Penn Treebank tag ([`Lexicon`]);
//! * `en-morphology.txt` — Brill lexical rules for unknown words (`Morphology.apply`);
//! * `en-context.txt` — Brill contextual rules (`Context.apply`);
//! * `en-entities.txt` — named entities (`Entities.apply`, tags such as `NNP-PERS`).
//!
//! [`tokenize`] ports `find_tokens` (sentence splitting and punctuation handling) and
//! [`BrillTagger::tag`] ports `find_tags`, rule for rule, including its quirks (for example a
//! contextual rule is matched against the tag the word had *before* any rule of the pass changed
//! it, because `Context.apply` keeps the loop variable). [`TaggerMode::Brill`] is `find_tags` with
//! all four resources (what `pattern.en` does); [`TaggerMode::TextBlobDefault`] is what
//! `TextBlob(text).tags` does (textblob's `Parser.find_tags` passes neither morphology, context nor
//! entities, so unknown words fall back to the built-in suffix rules `_suffix_rules`).
//!
//! Emoticons (`: )` becomes `:)`) are merged as `find_tokens` does; where two emoticons of
//! pattern's list match at the same place (`:c` / `:c)`), pattern's choice depends on Python's
//! randomised set order, and we take the longest.
use crate::error::{AmpDataError, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// End-of-sentence marker `find_tokens` puts at paragraph breaks.
const EOS: &str = "END-OF-SENTENCE";
/// `PUNCTUATION` of `_text.py` without the period.
const PUNCT: &str = ",;:!?()[]{}`''\"@#$^&*+-|=~_";
/// `ABBREVIATIONS` of `_text.py`.
const ABBREVIATIONS: &[&str] = &[
    "a.", "adj.", "adv.", "al.", "a.m.", "c.", "cf.", "comp.", "conf.", "def.", "ed.", "e.g.",
    "esp.", "etc.", "ex.", "f.", "fig.", "gen.", "id.", "i.e.", "int.", "l.", "m.", "Med.", "Mil.",
    "Mr.", "n.", "n.q.", "orig.", "pl.", "pred.", "pres.", "p.m.", "ref.", "v.", "vs.", "w/",
];
/// The contraction `replacements` of `_text.py`, in dict order.
const REPLACEMENTS: &[(&str, &str)] = &[
    ("'d", " 'd"),
    ("'m", " 'm"),
    ("'s", " 's"),
    ("'ll", " 'll"),
    ("'re", " 're"),
    ("'ve", " 've"),
    ("n't", " n't"),
];

/// pattern's `EMOTICONS`, longest first.
const EMOTICONS: &[&str] = &[
    ":'''(",
    "*-)",
    "8-)",
    "8-D",
    ":'(",
    ":-(",
    ":-)",
    ":-.",
    ":-/",
    ":-<",
    ":-D",
    ":-O",
    ":-P",
    ":-S",
    ":-[",
    ":-b",
    ":-c",
    ":-o",
    ":-p",
    ":-s",
    ":^)",
    ":c)",
    ":o)",
    ";'(",
    ";-)",
    ";-]",
    ";^)",
    "=-D",
    ">.>",
    ">:)",
    ">:/",
    ">:D",
    ">:P",
    ">:[",
    ">:\\",
    ">:o",
    ">;]",
    "X-D",
    "o.O",
    "o_O",
    "x-D",
    "\u{b0}O\u{b0}",
    "\u{b0}o\u{b0}",
    "*)",
    "8)",
    ":(",
    ":)",
    ":/",
    ":3",
    ":>",
    ":D",
    ":O",
    ":P",
    ":S",
    ":[",
    ":\\",
    ":]",
    ":b",
    ":c",
    ":o",
    ":p",
    ":s",
    ":{",
    ":}",
    ";)",
    ";D",
    ";]",
    "<3",
    "=(",
    "=)",
    "=/",
    "=D",
    "=]",
    "XD",
    "xD",
    "\u{2665}",
];

/// `RE_EMOTICONS.sub(lambda m: m.group(1).replace(" ", "") + m.group(2), s)`: an emoticon whose
/// characters may be separated by single spaces, followed by whitespace or the end.
fn merge_emoticons(s: &str) -> String {
    let c: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    'scan: while i < c.len() {
        for e in EMOTICONS {
            let mut k = i;
            let mut ok = true;
            for (j, ec) in e.chars().enumerate() {
                if j > 0 && k < c.len() && c[k] == ' ' {
                    k += 1;
                }
                if k < c.len() && c[k] == ec {
                    k += 1;
                } else {
                    ok = false;
                    break;
                }
            }
            if ok && (k == c.len() || c[k].is_whitespace()) {
                out.push_str(e);
                if k < c.len() {
                    out.push(c[k]);
                    k += 1;
                }
                i = k;
                continue 'scan;
            }
        }
        out.push(c[i]);
        i += 1;
    }
    out
}

fn is_replace_key(t: &str) -> bool {
    REPLACEMENTS.iter().any(|(k, _)| *k == t)
}

fn starts_with_punct(t: &str) -> bool {
    t.chars().next().is_some_and(|c| PUNCT.contains(c))
}

fn ends_with_punct(t: &str) -> bool {
    t.chars().last().is_some_and(|c| PUNCT.contains(c))
}

/// `RE_ABBR1`, `RE_ABBR2`, `RE_ABBR3` of `_text.py`.
fn is_abbreviation(t: &str) -> bool {
    if ABBREVIATIONS.contains(&t) {
        return true;
    }
    let c: Vec<char> = t.chars().collect();
    // ^([A-Za-z]\.)+$ (covers ^[A-Za-z]\.$)
    if !c.is_empty()
        && c.len() % 2 == 0
        && c.chunks(2)
            .all(|p| p[0].is_ascii_alphabetic() && p[1] == '.')
    {
        return true;
    }
    // ^[A-Z][b|c|d|...|z]+.$  (the class contains '|' and the consonants; the last char is any)
    if c.len() >= 3 && c[0].is_ascii_uppercase() {
        let cons = "bcdfghjklmnpqrstvwxz|";
        if c[1..c.len() - 1].iter().all(|ch| cons.contains(*ch)) && c[c.len() - 1] != '\n' {
            return true;
        }
    }
    false
}

/// Splits text into sentences of tokens, as pattern's `find_tokens` does (then `split(" ")`).
///
/// Contractions are split (`n't`), every apostrophe and quote becomes its own token, punctuation is
/// split from words except in abbreviations (`e.g.`, `Mr.`, `U.S.`), and `.`, `!`, `?`, `...` or
/// a blank line end a sentence.
pub fn tokenize(text: &str) -> Vec<Vec<String>> {
    let mut s = text.to_string();
    for (a, b) in REPLACEMENTS {
        s = s.replace(a, b);
    }
    s = s
        .replace('\u{201c}', " \u{201c} ")
        .replace('\u{201d}', " \u{201d} ")
        .replace('\u{2018}', " \u{2018} ")
        .replace('\u{2019}', " \u{2019} ")
        .replace('\'', " ' ")
        .replace('"', " \" ");
    s = s.replace("\r\n", "\n");
    // re.sub(r"\n{2,}", " END-OF-SENTENCE ", s)
    let mut t = String::with_capacity(s.len());
    let mut nl = 0usize;
    for ch in s.chars() {
        if ch == '\n' {
            nl += 1;
            continue;
        }
        if nl >= 2 {
            t.push_str(" END-OF-SENTENCE ");
        } else if nl == 1 {
            t.push('\n');
        }
        nl = 0;
        t.push(ch);
    }
    if nl >= 2 {
        t.push_str(" END-OF-SENTENCE ");
    } else if nl == 1 {
        t.push('\n');
    }
    let mut tokens: Vec<String> = Vec::new();
    for word in t.split_whitespace() {
        let mut w: &str = word;
        let mut tail: Vec<String> = Vec::new();
        while starts_with_punct(w) && !is_replace_key(w) {
            let c = w.chars().next().unwrap();
            tokens.push(c.to_string());
            w = &w[c.len_utf8()..];
        }
        while (ends_with_punct(w) || w.ends_with('.')) && !is_replace_key(w) {
            if ends_with_punct(w) {
                let c = w.chars().last().unwrap();
                tail.push(c.to_string());
                w = &w[..w.len() - c.len_utf8()];
            }
            if w.ends_with("...") {
                tail.push("...".into());
                w = w[..w.len() - 3].trim_end_matches('.');
            }
            if w.ends_with('.') {
                if is_abbreviation(w) {
                    break;
                }
                tail.push(".".into());
                w = &w[..w.len() - 1];
            }
        }
        if !w.is_empty() {
            tokens.push(w.to_string());
        }
        tokens.extend(tail.into_iter().rev());
    }
    // Sentence boundaries.
    let mut sentences: Vec<Vec<String>> = vec![Vec::new()];
    let (mut i, mut j) = (0usize, 0usize);
    let closers = [
        "'", "\"", "\u{201d}", "\u{2019}", "...", ".", "!", "?", ")", EOS,
    ];
    while j < tokens.len() {
        if ["...", ".", "!", "?", EOS].contains(&tokens[j].as_str()) {
            while j < tokens.len() && closers.contains(&tokens[j].as_str()) {
                // pattern counts the quote in the (still empty) current sentence: always even.
                if tokens[j] == "'" || tokens[j] == "\"" {
                    break;
                }
                j += 1;
            }
            let last = sentences.last_mut().unwrap();
            last.extend(tokens[i..j].iter().filter(|t| *t != EOS).cloned());
            sentences.push(Vec::new());
            i = j;
        }
        j += 1;
    }
    let end = j.min(tokens.len());
    if i < end {
        sentences
            .last_mut()
            .unwrap()
            .extend(tokens[i..end].iter().cloned());
    }
    sentences
        .into_iter()
        .filter(|s| !s.is_empty())
        .map(|s| {
            // RE_SARCASM: "( ! )" -> "(!)"; then the tagger splits on single spaces again.
            let joined = merge_emoticons(&s.join(" ").replace("( ! )", "(!)"));
            joined.split(' ').map(str::to_string).collect()
        })
        .collect()
}

/// Python's `str.istitle()`.
fn py_istitle(s: &str) -> bool {
    let (mut cased, mut prev_cased) = (false, false);
    for c in s.chars() {
        if c.is_uppercase() {
            if prev_cased {
                return false;
            }
            prev_cased = true;
            cased = true;
        } else if c.is_lowercase() {
            if !prev_cased {
                return false;
            }
            prev_cased = true;
            cased = true;
        } else {
            prev_cased = false;
        }
    }
    cased
}

/// `CD = re.compile(r"^[0-9\-\,\.\:\/\%\$]+$")`.
fn is_cd(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_digit() || "-,.:/%$".contains(c))
}

/// textblob's `_suffix_rules` (default tagging of unknown words when no morphology is given).
fn suffix_rules(token: &str) -> &'static str {
    let mut tag = "NN";
    if token.ends_with("ing") {
        tag = "VBG";
    }
    if token.ends_with("ly") {
        tag = "RB";
    }
    if token.ends_with('s')
        && !(token.ends_with("is") || token.ends_with("ous") || token.ends_with("ss"))
    {
        tag = "NNS";
    }
    if [
        "able", "al", "ful", "ible", "ient", "ish", "ive", "less", "tic", "ous",
    ]
    .iter()
    .any(|s| token.ends_with(s))
        || token.contains('-')
    {
        tag = "JJ";
    }
    if token.ends_with("ed") {
        tag = "VBN";
    }
    if ["ate", "ify", "ise", "ize"]
        .iter()
        .any(|s| token.ends_with(s))
    {
        tag = "VBP";
    }
    tag
}

/// Python `_read`: stripped, non-empty lines that are not `;;;` comments.
fn read_lines(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| AmpDataError::io(path, e))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(";;;"))
        .map(str::to_string)
        .collect())
}

/// The known-word dictionary (`en-lexicon.txt`): word → tag.
pub type Lexicon = HashMap<String, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MorphCmd {
    Char,
    HasPref,
    HasSuf,
    AddPref,
    AddSuf,
    DeletePref,
    DeleteSuf,
    GoodLeft,
    GoodRight,
}

impl MorphCmd {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "char" => Self::Char,
            "haspref" => Self::HasPref,
            "hassuf" => Self::HasSuf,
            "addpref" => Self::AddPref,
            "addsuf" => Self::AddSuf,
            "deletepref" => Self::DeletePref,
            "deletesuf" => Self::DeleteSuf,
            "goodleft" => Self::GoodLeft,
            "goodright" => Self::GoodRight,
            _ => return None,
        })
    }
}

/// One Brill lexical rule, resolved as `Morphology.apply` resolves it.
#[derive(Debug, Clone)]
struct MorphRule {
    /// `Some(tag)` for `f`-rules (only applied to words currently tagged `tag`).
    from: Option<String>,
    affix: String,
    /// `None` for a command `Morphology.apply` never matches.
    cmd: Option<MorphCmd>,
    to: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CtxCmd {
    PrevTag,
    NextTag,
    Prev2Tag,
    Next2Tag,
    Prev1or2Tag,
    Next1or2Tag,
    Prev1or2or3Tag,
    Next1or2or3Tag,
    SurroundTag,
    CurWd,
    PrevWd,
    NextWd,
    Prev1or2Wd,
    Next1or2Wd,
    PrevWdTag,
    NextWdTag,
    WdPrevTag,
    WdNextTag,
    WdAnd2Aft,
    WdAnd2TagBfr,
    WdAnd2TagAft,
    LBigram,
    RBigram,
    PrevBigram,
    NextBigram,
    /// Commands pattern lists but never implements (`next1or2or3wd`, ...): never fire.
    Never,
}

impl CtxCmd {
    fn parse(s: &str) -> Self {
        match s.to_lowercase().as_str() {
            "prevtag" => Self::PrevTag,
            "nexttag" => Self::NextTag,
            "prev2tag" => Self::Prev2Tag,
            "next2tag" => Self::Next2Tag,
            "prev1or2tag" => Self::Prev1or2Tag,
            "next1or2tag" => Self::Next1or2Tag,
            "prev1or2or3tag" => Self::Prev1or2or3Tag,
            "next1or2or3tag" => Self::Next1or2or3Tag,
            "surroundtag" => Self::SurroundTag,
            "curwd" => Self::CurWd,
            "prevwd" => Self::PrevWd,
            "nextwd" => Self::NextWd,
            "prev1or2wd" => Self::Prev1or2Wd,
            "next1or2wd" => Self::Next1or2Wd,
            "prevwdtag" => Self::PrevWdTag,
            "nextwdtag" => Self::NextWdTag,
            "wdprevtag" => Self::WdPrevTag,
            "wdnexttag" => Self::WdNextTag,
            "wdand2aft" => Self::WdAnd2Aft,
            "wdand2tagbfr" => Self::WdAnd2TagBfr,
            "wdand2tagaft" => Self::WdAnd2TagAft,
            "lbigram" => Self::LBigram,
            "rbigram" => Self::RBigram,
            "prevbigram" => Self::PrevBigram,
            "nextbigram" => Self::NextBigram,
            _ => Self::Never,
        }
    }
}

/// One Brill contextual rule `from to CMD x [y]`.
#[derive(Debug, Clone)]
struct CtxRule {
    from: String,
    to: String,
    cmd: CtxCmd,
    x: String,
    y: String,
}

/// One named entity of `en-entities.txt`: lower-cased words and the label suffix (`-PERS`, ...).
#[derive(Debug, Clone)]
struct Entity {
    words: Vec<String>,
    label: String,
}

/// Which of textblob's two tagging pipelines to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TaggerMode {
    /// pattern's full `find_tags`: lexicon, Brill lexical rules for unknown words, Brill
    /// contextual rules, named entities.
    #[default]
    Brill,
    /// `TextBlob(text).tags`: lexicon plus `_suffix_rules` for unknown words, no context rules.
    TextBlobDefault,
}

/// The Brill tagger of pattern/textblob with its resources loaded.
#[derive(Debug, Clone)]
pub struct BrillTagger {
    lexicon: Lexicon,
    morphology: Vec<MorphRule>,
    context: Vec<CtxRule>,
    /// For each tag, the indices (in file order) of the contextual rules that may fire on it.
    context_by_tag: HashMap<String, Vec<usize>>,
    context_star: Vec<usize>,
    entities: HashMap<String, Vec<Entity>>,
    mode: TaggerMode,
    dir: PathBuf,
}

/// The four resource file names inside textblob's `en/` directory.
pub const RESOURCE_FILES: [&str; 4] = [
    "en-lexicon.txt",
    "en-morphology.txt",
    "en-context.txt",
    "en-entities.txt",
];

impl BrillTagger {
    /// Finds textblob's `en/` directory: `$AMP_TEXTBLOB_DIR`, then the virtual environments named by
    /// `$VIRTUAL_ENV` and `$AMP_VENV`, then `~/.cache/amp/torch-2.11.0` (where `scripts/setup.sh`
    /// installs it), each searched as `lib/python*/site-packages/textblob/en`.
    pub fn locate_resources() -> Result<PathBuf> {
        if let Ok(d) = std::env::var("AMP_TEXTBLOB_DIR") {
            let d = PathBuf::from(d);
            if d.join(RESOURCE_FILES[0]).is_file() {
                return Ok(d);
            }
            return Err(AmpDataError::Tagger(format!(
                "AMP_TEXTBLOB_DIR={} has no {}",
                d.display(),
                RESOURCE_FILES[0]
            )));
        }
        let mut venvs: Vec<PathBuf> = Vec::new();
        for var in ["VIRTUAL_ENV", "AMP_VENV"] {
            if let Ok(v) = std::env::var(var) {
                venvs.push(v.into());
            }
        }
        if let Ok(home) = std::env::var("HOME") {
            venvs.push(Path::new(&home).join(".cache/amp/torch-2.11.0"));
        }
        for venv in &venvs {
            let Ok(rd) = std::fs::read_dir(venv.join("lib")) else {
                continue;
            };
            let mut libs: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
            libs.sort();
            for lib in libs {
                let d = lib.join("site-packages/textblob/en");
                if d.join(RESOURCE_FILES[0]).is_file() {
                    return Ok(d);
                }
            }
        }
        Err(AmpDataError::Tagger(format!(
            "textblob's en/ directory not found (searched $AMP_TEXTBLOB_DIR and lib/python*/site-packages/textblob/en under {}); \
             install it with `pip install textblob` (scripts/setup.sh does) or pass the directory explicitly",
            venvs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        )))
    }

    /// Loads the tagger from the installed textblob package (see [`Self::locate_resources`]).
    pub fn from_installed(mode: TaggerMode) -> Result<Self> {
        Self::from_dir(&Self::locate_resources()?, mode)
    }

    /// Loads the tagger from a directory holding the four `en-*.txt` files.
    pub fn from_dir(dir: &Path, mode: TaggerMode) -> Result<Self> {
        for f in RESOURCE_FILES {
            if !dir.join(f).is_file() {
                return Err(AmpDataError::Tagger(format!(
                    "{} is missing",
                    dir.join(f).display()
                )));
            }
        }
        // Lexicon.load: dict.update(x.split(" ")[:2]); later lines win.
        let lex_path = dir.join("en-lexicon.txt");
        let mut lexicon = Lexicon::with_capacity(100_000);
        for line in read_lines(&lex_path)? {
            let mut it = line.split(' ');
            let w = it.next().unwrap_or_default();
            let Some(t) = it.next() else {
                return Err(AmpDataError::data(
                    &lex_path,
                    format!("line {line:?}"),
                    "expected `word TAG`",
                ));
            };
            lexicon.insert(w.to_string(), t.to_string());
        }
        // Morphology.apply resolves each rule with variables that persist from the previous rule.
        let morph_path = dir.join("en-morphology.txt");
        let mut morphology = Vec::new();
        let mut state: Option<(bool, String, String, Option<MorphCmd>)> = None;
        let keys = [
            "char",
            "haspref",
            "hassuf",
            "addpref",
            "addsuf",
            "deletepref",
            "deletesuf",
            "goodleft",
            "goodright",
        ];
        let is_key =
            |s: &str| keys.contains(&s) || s.strip_prefix('f').is_some_and(|t| keys.contains(&t));
        for line in read_lines(&morph_path)? {
            let r: Vec<&str> = line.split_whitespace().collect();
            // `if r[1] in self.cmd`: f = False, x = r[0], pos = r[-2], cmd = r[1].lower()
            if r.len() > 1 && is_key(r[1]) {
                state = Some((
                    false,
                    r[0].into(),
                    r[r.len() - 2].into(),
                    MorphCmd::parse(&r[1].to_lowercase()),
                ));
            }
            // `if r[2] in self.cmd`: f = True, x = r[1], pos = r[-2], cmd = r[2].lower().lstrip("f")
            if r.len() > 2 && is_key(r[2]) {
                let c = r[2].to_lowercase();
                state = Some((
                    true,
                    r[1].into(),
                    r[r.len() - 2].into(),
                    MorphCmd::parse(c.trim_start_matches('f')),
                ));
            }
            let Some((f, x, pos, cmd)) = state.clone() else {
                return Err(AmpDataError::data(
                    &morph_path,
                    format!("rule {line:?}"),
                    "no command",
                ));
            };
            morphology.push(MorphRule {
                from: f.then(|| r[0].to_string()),
                affix: x,
                cmd,
                to: pos,
            });
        }
        let ctx_path = dir.join("en-context.txt");
        let mut context = Vec::new();
        for line in read_lines(&ctx_path)? {
            let r: Vec<&str> = line.split_whitespace().collect();
            if r.len() < 4 {
                return Err(AmpDataError::data(
                    &ctx_path,
                    format!("rule {line:?}"),
                    "expected `FROM TO CMD x [y]`",
                ));
            }
            context.push(CtxRule {
                from: r[0].into(),
                to: r[1].into(),
                cmd: CtxCmd::parse(r[2]),
                x: r[3].into(),
                y: r.get(4).copied().unwrap_or("").into(),
            });
        }
        let mut context_by_tag: HashMap<String, Vec<usize>> = HashMap::new();
        let context_star: Vec<usize> = (0..context.len())
            .filter(|&i| context[i].from == "*")
            .collect();
        for (i, r) in context.iter().enumerate() {
            if r.from != "*" {
                context_by_tag.entry(r.from.clone()).or_default().push(i);
            }
        }
        for v in context_by_tag.values_mut() {
            v.extend(&context_star);
            v.sort_unstable();
        }
        let mut entities: HashMap<String, Vec<Entity>> = HashMap::new();
        for line in read_lines(&dir.join("en-entities.txt"))? {
            let mut words: Vec<String> =
                line.split_whitespace().map(|w| w.to_lowercase()).collect();
            let label = match words.last().map(String::as_str) {
                Some("pers" | "loc" | "org") => {
                    let l = words.pop().unwrap();
                    format!("-{}", l.to_uppercase())
                }
                _ => String::new(),
            };
            if words.is_empty() {
                continue;
            }
            entities
                .entry(words[0].clone())
                .or_default()
                .push(Entity { words, label });
        }
        Ok(Self {
            lexicon,
            morphology,
            context,
            context_by_tag,
            context_star,
            entities,
            mode,
            dir: dir.to_path_buf(),
        })
    }

    /// The directory the resources were loaded from.
    pub fn resource_dir(&self) -> &Path {
        &self.dir
    }

    /// The tagging pipeline in use.
    pub fn mode(&self) -> TaggerMode {
        self.mode
    }

    /// The known-word lexicon.
    pub fn lexicon(&self) -> &Lexicon {
        &self.lexicon
    }

    /// `Morphology.apply` on an unknown word initially tagged `NN`.
    fn morphology(&self, w: &str, prev: Option<&str>, next: Option<&str>) -> String {
        let mut tag = "NN".to_string();
        for r in &self.morphology {
            if let Some(from) = &r.from {
                if *from != tag {
                    continue;
                }
            }
            let x = r.affix.as_str();
            let Some(cmd) = r.cmd else { continue };
            let hit = match cmd {
                MorphCmd::Char => w.contains(x),
                MorphCmd::HasPref => w.starts_with(x),
                MorphCmd::HasSuf => w.ends_with(x),
                MorphCmd::AddPref => self.lexicon.contains_key(&format!("{x}{w}")),
                MorphCmd::AddSuf => self.lexicon.contains_key(&format!("{w}{x}")),
                MorphCmd::DeletePref => w
                    .strip_prefix(x)
                    .is_some_and(|s| self.lexicon.contains_key(s)),
                // Python: w[: -len(x)], which is "" for an empty affix.
                MorphCmd::DeleteSuf => {
                    w.ends_with(x)
                        && self.lexicon.contains_key(if x.is_empty() {
                            ""
                        } else {
                            &w[..w.len() - x.len()]
                        })
                }
                MorphCmd::GoodLeft => next == Some(x),
                MorphCmd::GoodRight => prev == Some(x),
            };
            if hit {
                tag = r.to.clone();
            }
        }
        tag
    }

    /// `Context.apply` over one sentence.
    fn context(&self, words: &[String], tags: &mut [String]) {
        const PAD: &str = "STAART";
        let n = tags.len();
        let w = |k: isize| -> &str {
            if k < 0 || k as usize >= n {
                PAD
            } else {
                words[k as usize].as_str()
            }
        };
        for i in 0..n {
            let orig = tags[i].clone();
            if orig == PAD {
                continue;
            }
            let rules = self.context_by_tag.get(&orig).unwrap_or(&self.context_star);
            let ii = i as isize;
            for &ri in rules {
                let r = &self.context[ri];
                let t = |k: isize| -> &str {
                    if k < 0 || k as usize >= n {
                        PAD
                    } else {
                        tags[k as usize].as_str()
                    }
                };
                let (x, y) = (r.x.as_str(), r.y.as_str());
                let hit = match r.cmd {
                    CtxCmd::PrevTag => x == t(ii - 1),
                    CtxCmd::NextTag => x == t(ii + 1),
                    CtxCmd::Prev2Tag => x == t(ii - 2),
                    CtxCmd::Next2Tag => x == t(ii + 2),
                    CtxCmd::Prev1or2Tag => x == t(ii - 1) || x == t(ii - 2),
                    CtxCmd::Next1or2Tag => x == t(ii + 1) || x == t(ii + 2),
                    CtxCmd::Prev1or2or3Tag => x == t(ii - 1) || x == t(ii - 2) || x == t(ii - 3),
                    CtxCmd::Next1or2or3Tag => x == t(ii + 1) || x == t(ii + 2) || x == t(ii + 3),
                    CtxCmd::SurroundTag => x == t(ii - 1) && y == t(ii + 1),
                    CtxCmd::CurWd => x == w(ii),
                    CtxCmd::PrevWd => x == w(ii - 1),
                    CtxCmd::NextWd => x == w(ii + 1),
                    CtxCmd::Prev1or2Wd => x == w(ii - 1) || x == w(ii - 2),
                    CtxCmd::Next1or2Wd => x == w(ii + 1) || x == w(ii + 2),
                    CtxCmd::PrevWdTag => x == w(ii - 1) && y == t(ii - 1),
                    CtxCmd::NextWdTag => x == w(ii + 1) && y == t(ii + 1),
                    CtxCmd::WdPrevTag => x == t(ii - 1) && y == w(ii),
                    CtxCmd::WdNextTag => x == w(ii) && y == t(ii + 1),
                    CtxCmd::WdAnd2Aft => x == w(ii) && y == w(ii + 2),
                    CtxCmd::WdAnd2TagBfr => x == t(ii - 2) && y == w(ii),
                    CtxCmd::WdAnd2TagAft => x == w(ii) && y == t(ii + 2),
                    CtxCmd::LBigram => x == w(ii - 1) && y == w(ii),
                    CtxCmd::RBigram => x == w(ii) && y == w(ii + 1),
                    CtxCmd::PrevBigram => x == t(ii - 2) && y == t(ii - 1),
                    CtxCmd::NextBigram => x == t(ii + 1) && y == t(ii + 2),
                    CtxCmd::Never => false,
                };
                if hit {
                    tags[i] = r.to.clone();
                }
            }
        }
    }

    /// `Entities.apply` over one sentence.
    fn entities(&self, words: &[String], tags: &mut [String]) {
        let n = words.len();
        let mut i = 0;
        while i < n {
            let w = words[i].to_lowercase();
            if w.starts_with("http://") || is_www(&w) || is_email(&w) {
                tags[i] = "NNP".into();
            }
            if let Some(list) = self.entities.get(&w) {
                for e in list {
                    let matched = e
                        .words
                        .iter()
                        .enumerate()
                        .all(|(j, ew)| i + j < n && words[i + j].to_lowercase() == *ew);
                    if matched {
                        let j = e.words.len() - 1;
                        for tag in tags.iter_mut().skip(i).take(j + 1) {
                            let base = if tag == "NNPS" { "NNPS" } else { "NNP" };
                            *tag = format!("{base}{}", e.label);
                        }
                        i += j;
                        break;
                    }
                }
            }
            i += 1;
        }
    }

    /// Tags one tokenized sentence (pattern's `find_tags`). Returns one Penn Treebank tag per token.
    pub fn tag(&self, tokens: &[String]) -> Vec<String> {
        self.tag_with(tokens, true)
    }

    /// Tags without Brill's contextual rules (lexicon, then morphology or suffix rules for unknown
    /// words, then entities): the input of the chunker's own contextual rules
    /// ([`crate::np_tags`]), which replace Brill's on captions (they turn "at" into VB and
    /// "coffee" into VBP after "drinking").
    pub fn tag_lexical(&self, tokens: &[String]) -> Vec<String> {
        self.tag_with(tokens, false)
    }

    fn tag_with(&self, tokens: &[String], context: bool) -> Vec<String> {
        let mut tags: Vec<Option<String>> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| {
                self.lexicon.get(t).cloned().or_else(|| {
                    if i == 0 {
                        self.lexicon
                            .get(&t.to_lowercase())
                            .filter(|s| !s.is_empty())
                            .cloned()
                    } else {
                        None
                    }
                })
            })
            .collect();
        for i in 0..tokens.len() {
            if tags[i].is_some() {
                continue;
            }
            let tok = tokens[i].as_str();
            let tag = if py_istitle(tok) {
                "NNP".to_string()
            } else if is_cd(tok) {
                "CD".to_string()
            } else if self.mode == TaggerMode::Brill {
                let prev = (i > 0).then(|| tokens[i - 1].as_str());
                let next = tokens.get(i + 1).map(String::as_str);
                self.morphology(tok, prev, next)
            } else {
                suffix_rules(tok).to_string()
            };
            tags[i] = Some(tag);
        }
        let mut tags: Vec<String> = tags.into_iter().map(Option::unwrap).collect();
        if self.mode == TaggerMode::Brill {
            if context {
                self.context(tokens, &mut tags);
            }
            self.entities(tokens, &mut tags);
        }
        tags
    }

    /// Tokenizes and tags a text: one `(tokens, tags)` pair per sentence.
    pub fn tag_text(&self, text: &str) -> Vec<TaggedSentence> {
        tokenize(text)
            .into_iter()
            .map(|tokens| {
                let tags = self.tag(&tokens);
                TaggedSentence { tokens, tags }
            })
            .collect()
    }
}

/// A tokenized, tagged sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedSentence {
    pub tokens: Vec<String>,
    pub tags: Vec<String>,
}

impl TaggedSentence {
    /// The sentence as text, with pattern's token spacing undone (see [`detokenize`]).
    pub fn text(&self) -> String {
        detokenize(&self.tokens)
    }
}

/// Joins tokens back into readable text: no space before closing punctuation or after opening
/// brackets, and `' s` / `n't` contractions re-attached.
pub fn detokenize(tokens: &[String]) -> String {
    let mut out = String::new();
    let mut no_space_next = true;
    for (k, t) in tokens.iter().enumerate() {
        let t = t.as_str();
        let attach_left = matches!(
            t,
            "," | "." | ";" | ":" | "!" | "?" | ")" | "]" | "}" | "..." | "n't" | "%"
        ) || (t == "'"
            && tokens
                .get(k + 1)
                .is_some_and(|n| matches!(n.as_str(), "s" | "d" | "m" | "ll" | "re" | "ve")))
            // plural possessive: "farmers' market"
            || (t == "'" && k > 0 && tokens[k - 1].len() > 1 && tokens[k - 1].ends_with('s'))
            || (k > 0 && tokens[k - 1] == "'" && matches!(t, "s" | "d" | "m" | "ll" | "re" | "ve"));
        if !out.is_empty() && !attach_left && !no_space_next {
            out.push(' ');
        }
        out.push_str(t);
        no_space_next = matches!(t, "(" | "[" | "{" | "$");
    }
    out
}

/// `RE_ENTITY2 = ^www\..*?\.[com|org|net|edu|de|uk]$` (a character class, as in pattern).
fn is_www(w: &str) -> bool {
    let c: Vec<char> = w.chars().collect();
    c.len() >= 6
        && w.starts_with("www.")
        && c[c.len() - 2] == '.'
        && "com|orgnetdeduk".contains(c[c.len() - 1])
        && !w.contains('\n')
}

/// `RE_ENTITY3 = ^[\w\-\.\+]+@(\w[\w\-]+\.)+[\w\-]+$`.
fn is_email(w: &str) -> bool {
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let Some((local, domain)) = w.split_once('@') else {
        return false;
    };
    if local.is_empty() || !local.chars().all(|c| word(c) || "-.+".contains(c)) {
        return false;
    }
    let parts: Vec<&str> = domain.split('.').collect();
    if parts.len() < 2 {
        return false;
    }
    let (last, labels) = parts.split_last().unwrap();
    !last.is_empty()
        && last.chars().all(|c| word(c) || c == '-')
        && labels.iter().all(|l| {
            let mut cs = l.chars();
            cs.next().is_some_and(word) && l.chars().count() >= 2 && cs.all(|c| word(c) || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenize_matches_pattern_on_basic_cases() {
        let s = tokenize("The cat's hat, e.g. a fedora, isn't red. Mr. Smith... left!\n\nNew para");
        let joined: Vec<String> = s.iter().map(|x| x.join(" ")).collect();
        assert_eq!(
            joined,
            vec![
                "The cat ' s hat , e.g. a fedora , is n ' t red .",
                "Mr. Smith ...",
                "left !",
                "New para"
            ]
        );
    }

    #[test]
    fn emoticons_are_merged_like_pattern() {
        // expected values from textblob._text.find_tokens
        assert_eq!(merge_emoticons("so happy : ) today"), "so happy :) today");
        assert_eq!(merge_emoticons("Sox D"), "SoxD");
        assert_eq!(merge_emoticons("a ( 8 )"), "a ( 8)");
        assert_eq!(merge_emoticons("It is : c ) ok"), "It is :c) ok");
        assert_eq!(merge_emoticons("I < 3 it \u{2665} x"), "I <3 it \u{2665} x");
    }

    #[test]
    fn istitle_matches_python() {
        assert!(py_istitle("Hello"));
        assert!(py_istitle("U.S."));
        assert!(py_istitle("3D"));
        assert!(!py_istitle("McDonald"));
        assert!(!py_istitle("HELLO"));
        assert!(!py_istitle("123"));
    }

    #[test]
    fn email_and_www() {
        assert!(is_email("a.b@example.com"));
        assert!(!is_email("a@b"));
        // pattern's character class matches one letter after the last dot (checked in Python)
        assert!(!is_www("www.google.com"));
        assert!(is_www("www.google.c"));
        assert!(is_www("www..k"));
        assert!(!is_www("www.a.x"));
        assert!(is_email("a@bb.c"));
        assert!(!is_email("a@b.c"));
    }
}
