//! Claim extraction: parse an answer (possibly ungrammatical, from a small model) back into
//! checkable claims about a [`Scene`], and check them.
//!
//! The parser is a small rule-based chunker over the world's vocabulary: noun phrases
//! ("a large red circle", "two squares", "nothing"), position phrases ("in the top left"),
//! relations ("to the left of", "above"), copula predicates ("... is red"), superlatives
//! ("the largest object"), comparisons ("more circles than squares") and yes/no. A claim that
//! contradicts the scene is a hallucination (MRHal rubric, docs/paper-notes.md §5).
use crate::scene::{Colour, Object, Scene, Shape, Size};
use serde::{Deserialize, Serialize};

/// A partial object description; `None` fields are unconstrained.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct ObjRef {
    pub shape: Option<Shape>,
    pub colour: Option<Colour>,
    pub size: Option<Size>,
    pub row: Option<u8>,
    pub col: Option<u8>,
}

impl ObjRef {
    /// Whether `o` satisfies every specified field.
    pub fn matches(&self, o: &Object) -> bool {
        self.shape.is_none_or(|s| s == o.shape)
            && self.colour.is_none_or(|c| c == o.colour)
            && self.size.is_none_or(|s| s == o.size)
            && self.row.is_none_or(|r| r == o.cell.row)
            && self.col.is_none_or(|c| c == o.cell.col)
    }
    /// No field specified.
    pub fn is_empty(&self) -> bool {
        *self == ObjRef::default()
    }
    fn has_pos(&self) -> bool {
        self.row.is_some() || self.col.is_some()
    }
    /// Fill in (and override) with the fields `other` specifies.
    pub fn merge(&mut self, other: &ObjRef) {
        self.shape = other.shape.or(self.shape);
        self.colour = other.colour.or(self.colour);
        self.size = other.size.or(self.size);
        self.row = other.row.or(self.row);
        self.col = other.col.or(self.col);
    }
    /// Fill in only the fields `self` leaves open.
    pub fn fill(&mut self, other: &ObjRef) {
        self.shape = self.shape.or(other.shape);
        self.colour = self.colour.or(other.colour);
        self.size = self.size.or(other.size);
        self.row = self.row.or(other.row);
        self.col = self.col.or(other.col);
    }
    /// Indices of matching objects.
    pub fn resolve(&self, scene: &Scene) -> Vec<usize> {
        (0..scene.objects.len())
            .filter(|&i| self.matches(&scene.objects[i]))
            .collect()
    }
    /// Number of specified fields.
    pub fn n_fields(&self) -> usize {
        self.shape.is_some() as usize
            + self.colour.is_some() as usize
            + self.size.is_some() as usize
            + self.row.is_some() as usize
            + self.col.is_some() as usize
    }
}

/// A spatial relation of a to b.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Rel {
    LeftOf,
    RightOf,
    Above,
    Below,
}

impl Rel {
    fn holds(self, a: &Object, b: &Object) -> bool {
        match self {
            Rel::LeftOf => a.cell.col < b.cell.col,
            Rel::RightOf => a.cell.col > b.cell.col,
            Rel::Above => a.cell.row < b.cell.row,
            Rel::Below => a.cell.row > b.cell.row,
        }
    }
}

/// Superlatives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Extreme {
    Largest,
    Smallest,
    Leftmost,
    Rightmost,
    Topmost,
    Bottommost,
}

impl Extreme {
    /// The value the superlative maximises.
    pub fn key(self, o: &Object) -> i32 {
        match self {
            Extreme::Largest => o.size as i32,
            Extreme::Smallest => -(o.size as i32),
            Extreme::Leftmost => -(o.cell.col as i32),
            Extreme::Rightmost => o.cell.col as i32,
            Extreme::Topmost => -(o.cell.row as i32),
            Extreme::Bottommost => o.cell.row as i32,
        }
    }
}

/// One checkable statement about a scene.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Claim {
    /// At least one object matches ("there is a large red circle in the top left").
    Exists(ObjRef),
    /// No object matches ("there is no blue triangle", "there is nothing in the center").
    Absent(ObjRef),
    /// Exactly n objects match ("there are two circles").
    Count(ObjRef, usize),
    /// Some matching a stands in all the relations to some matching b.
    Relation(ObjRef, Vec<Rel>, ObjRef),
    /// Some matching object attains the superlative ("the largest object is the red circle").
    Extreme(Extreme, ObjRef),
    /// Some matching a is larger (`true`) / smaller (`false`) than some matching b.
    SizeCompare(ObjRef, ObjRef, bool),
    /// More (`true`) / fewer (`false`) objects match a than b.
    CountCompare(ObjRef, ObjRef, bool),
    /// Every object matching the filter also matches the predicate, and there is one.
    All(ObjRef, ObjRef),
    /// A yes/no answer; checked against the question (or reference answer).
    YesNo(bool),
}

impl Claim {
    /// Truth of the claim in `scene`; `YesNo` needs the expected answer (`None` if unknown).
    pub fn check(&self, scene: &Scene, expected_yes: Option<bool>) -> Option<bool> {
        let count = |r: &ObjRef| scene.objects.iter().filter(|o| r.matches(o)).count();
        let pairs = |a: &ObjRef, b: &ObjRef, f: &dyn Fn(&Object, &Object) -> bool| {
            scene.objects.iter().enumerate().any(|(i, x)| {
                a.matches(x)
                    && scene
                        .objects
                        .iter()
                        .enumerate()
                        .any(|(j, y)| i != j && b.matches(y) && f(x, y))
            })
        };
        Some(match self {
            Claim::Exists(r) => count(r) > 0,
            Claim::Absent(r) => count(r) == 0,
            Claim::Count(r, n) => count(r) == *n,
            Claim::Relation(a, rels, b) => pairs(a, b, &|x, y| rels.iter().all(|r| r.holds(x, y))),
            Claim::Extreme(e, r) => {
                let best = scene.objects.iter().map(|o| e.key(o)).max();
                scene
                    .objects
                    .iter()
                    .any(|o| r.matches(o) && Some(e.key(o)) == best)
            }
            Claim::SizeCompare(a, b, larger) => pairs(a, b, &|x, y| {
                if *larger {
                    x.size > y.size
                } else {
                    x.size < y.size
                }
            }),
            Claim::CountCompare(a, b, more) => {
                if *more {
                    count(a) > count(b)
                } else {
                    count(a) < count(b)
                }
            }
            Claim::All(f, p) => {
                let mut all = *f;
                all.merge(p);
                count(f) > 0 && count(f) == count(&all)
            }
            Claim::YesNo(y) => return expected_yes.map(|e| e == *y),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Lexing

#[derive(Debug, Clone, Default)]
struct Mention {
    r: ObjRef,
    /// Fields given by a predicate of an "all" mention ("are all the circles red").
    pred: ObjRef,
    plural: bool,
    num: Option<usize>,
    /// "one", "only", "single", "exactly": a count, not mere existence.
    count_det: bool,
    all: bool,
    neg: bool,
    /// "it", "this", or bare adjectives: refers to the question's focus.
    pronoun: bool,
    /// Merged into another mention or used by a relation/comparison.
    used: bool,
    /// The subject as written when a predicate contradicts it ("the small circle is large"):
    /// its existence is still claimed.
    presup: Option<ObjRef>,
}

#[derive(Debug, Clone)]
enum Item {
    M(Mention),
    Pos(Option<u8>, Option<u8>),
    Rel(Rel),
    Adj(ObjRef),
    Copula,
    Have,
    Neg,
    Yes,
    No,
    Ext(Extreme),
    /// Larger / smaller (size), more / fewer (count): (is_size, positive).
    Comp(bool, bool),
    Than,
    And,
    Comma,
    Num(usize),
    Dead,
}

fn number(w: &str) -> Option<usize> {
    const W: [&str; 13] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
        "eleven", "twelve",
    ];
    W.iter().position(|x| *x == w).or_else(|| w.parse().ok())
}

fn adjective(w: &str) -> Option<ObjRef> {
    let size = match w {
        "small" | "little" | "tiny" => Some(Size::Small),
        "medium" => Some(Size::Medium),
        "large" | "big" | "huge" => Some(Size::Large),
        _ => None,
    };
    let colour = Colour::ALL.iter().copied().find(|c| c.name() == w);
    (size.is_some() || colour.is_some()).then_some(ObjRef {
        size,
        colour,
        ..Default::default()
    })
}

/// (shape, plural) of a noun; generic nouns give `None` shape.
fn noun(w: &str) -> Option<(Option<Shape>, bool)> {
    for s in Shape::ALL {
        if s.name() == w {
            return Some((Some(s), false));
        }
        if s.plural() == w {
            return Some((Some(s), true));
        }
    }
    match w {
        "object" | "shape" | "item" | "thing" | "figure" => Some((None, false)),
        "objects" | "shapes" | "items" | "things" | "figures" => Some((None, true)),
        _ => None,
    }
}

fn is_pos_word(w: &str) -> bool {
    matches!(
        w,
        "top"
            | "upper"
            | "bottom"
            | "lower"
            | "middle"
            | "center"
            | "centre"
            | "central"
            | "left"
            | "right"
    )
}

fn row_of(w: &str) -> Option<u8> {
    match w {
        "top" | "upper" => Some(0),
        "middle" | "center" | "centre" | "central" => Some(1),
        "bottom" | "lower" => Some(2),
        _ => None,
    }
}

fn col_of(w: &str) -> Option<u8> {
    match w {
        "left" => Some(0),
        "middle" | "center" | "centre" | "central" => Some(1),
        "right" => Some(2),
        _ => None,
    }
}

/// Lower-case words and punctuation; sentences split at . ? ! ; and newlines.
fn sentences(text: &str) -> Vec<Vec<String>> {
    let t = text
        .to_lowercase()
        .replace("n't", " not")
        .replace("left-most", "leftmost")
        .replace("right-most", "rightmost")
        .replace("top-most", "topmost")
        .replace("bottom-most", "bottommost")
        .replace("<image>", " ");
    let mut out = vec![Vec::new()];
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<Vec<String>>| {
        if !word.is_empty() {
            out.last_mut().expect("nonempty").push(std::mem::take(word));
        }
    };
    for ch in t.chars() {
        if ch.is_ascii_alphanumeric() {
            word.push(ch);
        } else {
            flush(&mut word, &mut out);
            match ch {
                '.' | '?' | '!' | ';' | '\n' if !out.last().expect("nonempty").is_empty() => {
                    out.push(Vec::new());
                }
                ',' | ':' => out.last_mut().expect("nonempty").push(",".into()),
                _ => {}
            }
        }
    }
    flush(&mut word, &mut out);
    out.retain(|s| !s.is_empty());
    out
}

fn lex(words: &[String]) -> Vec<Item> {
    let mut items = Vec::new();
    let n = words.len();
    let w = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
    let mut i = 0;
    // Pending determiners for the next noun phrase.
    let mut det_num: Option<usize> = None;
    let mut det_count = false;
    let mut det_all = false;
    while i < n {
        let cur = w(i);
        // Noun phrase: [adj]* noun.
        let mut j = i;
        let mut adj = ObjRef::default();
        while let Some(a) = adjective(w(j)) {
            adj.fill(&a);
            j += 1;
        }
        if let Some((shape, plural)) = noun(w(j)) {
            let mut r = adj;
            r.shape = shape;
            items.push(Item::M(Mention {
                r,
                plural,
                num: det_num.take(),
                count_det: std::mem::take(&mut det_count),
                all: std::mem::take(&mut det_all),
                ..Default::default()
            }));
            i = j + 1;
            continue;
        }
        if j > i {
            // Adjectives without a noun (predicate adjectives: "is red").
            items.push(Item::Adj(adj));
            i = j;
            continue;
        }
        match cur {
            "yes" | "yeah" | "correct" => items.push(Item::Yes),
            "no" => {
                let next = w(i + 1);
                if adjective(next).is_some() || noun(next).is_some() {
                    det_num = Some(0);
                } else {
                    items.push(Item::No);
                }
            }
            "not" | "neither" | "nor" => items.push(Item::Neg),
            "nothing" | "none" => items.push(Item::M(Mention {
                num: Some(0),
                ..Default::default()
            })),
            "it" | "this" | "that" => {
                let next = w(i + 1);
                if matches!(next, "is" | "was" | "has" | "appears" | "looks" | "") || next == "," {
                    items.push(Item::M(Mention {
                        pronoun: true,
                        ..Default::default()
                    }));
                }
            }
            "only" | "single" | "exactly" | "just" => det_count = true,
            "all" | "every" | "each" | "both" => det_all = true,
            "is" | "are" | "was" | "were" | "appears" | "appear" | "sits" | "seems" | "be"
            | "looks" => items.push(Item::Copula),
            "has" | "have" | "contains" | "contain" | "holds" | "shows" | "show" | "see"
            | "includes" => items.push(Item::Have),
            "above" | "over" => items.push(Item::Rel(Rel::Above)),
            "below" | "under" | "beneath" | "underneath" => items.push(Item::Rel(Rel::Below)),
            "largest" | "biggest" => items.push(Item::Ext(Extreme::Largest)),
            "smallest" | "tiniest" => items.push(Item::Ext(Extreme::Smallest)),
            "leftmost" => items.push(Item::Ext(Extreme::Leftmost)),
            "rightmost" => items.push(Item::Ext(Extreme::Rightmost)),
            "topmost" | "highest" | "uppermost" => items.push(Item::Ext(Extreme::Topmost)),
            "bottommost" | "lowest" | "lowermost" => items.push(Item::Ext(Extreme::Bottommost)),
            "furthest" | "farthest" | "most" => {
                let mut k = i + 1;
                while matches!(w(k), "to" | "the" | "on") {
                    k += 1;
                }
                let e = match w(k) {
                    "left" => Some(Extreme::Leftmost),
                    "right" => Some(Extreme::Rightmost),
                    "top" | "up" => Some(Extreme::Topmost),
                    "bottom" | "down" => Some(Extreme::Bottommost),
                    _ => None,
                };
                if let Some(e) = e {
                    items.push(Item::Ext(e));
                    i = k + 1;
                    continue;
                }
            }
            "larger" | "bigger" => items.push(Item::Comp(true, true)),
            "smaller" => items.push(Item::Comp(true, false)),
            "more" => items.push(Item::Comp(false, true)),
            "fewer" | "less" => items.push(Item::Comp(false, false)),
            "than" => items.push(Item::Than),
            "and" => items.push(Item::And),
            "," => items.push(Item::Comma),
            _ if is_pos_word(cur) => {
                // "left of" / "right of" / "on top of" are relations.
                let mut k = i + 1;
                while matches!(w(k), "side" | "hand") {
                    k += 1;
                }
                if w(k) == "of" {
                    match cur {
                        "left" => items.push(Item::Rel(Rel::LeftOf)),
                        "right" => items.push(Item::Rel(Rel::RightOf)),
                        "top" => items.push(Item::Rel(Rel::Above)),
                        "bottom" => items.push(Item::Rel(Rel::Below)),
                        _ => {}
                    }
                    i = k + 1;
                    continue;
                }
                // A position phrase: up to two position words, then an optional marker.
                let mut ws = vec![cur];
                let mut k = i + 1;
                if is_pos_word(w(k)) && w(k + 1) != "of" {
                    ws.push(w(k));
                    k += 1;
                }
                let mut marker = "";
                while matches!(
                    w(k),
                    "corner" | "side" | "row" | "column" | "part" | "half" | "area" | "edge"
                ) {
                    if marker.is_empty() {
                        marker = w(k);
                    }
                    k += 1;
                }
                let (row, col) = if ws.len() == 2 {
                    if row_of(ws[0]).is_some()
                        && col_of(ws[1]).is_some()
                        && !matches!(ws[0], "left" | "right")
                    {
                        (row_of(ws[0]), col_of(ws[1]))
                    } else {
                        (row_of(ws[1]), col_of(ws[0]))
                    }
                } else {
                    let x = ws[0];
                    match marker {
                        "row" => (row_of(x), None),
                        "column" => (None, col_of(x)),
                        _ => match x {
                            "left" | "right" => (None, col_of(x)),
                            "middle" | "center" | "centre" | "central" => (Some(1), Some(1)),
                            _ => (row_of(x), None),
                        },
                    }
                };
                if row.is_some() || col.is_some() {
                    items.push(Item::Pos(row, col));
                }
                i = k;
                continue;
            }
            _ => {
                if let Some(k) = number(cur) {
                    det_num = Some(k);
                    // A bare number ("Two.") stays as an item too.
                    if noun(w(i + 1)).is_none() && adjective(w(i + 1)).is_none() {
                        items.push(Item::Num(k));
                        det_num = None;
                    } else if k == 1 {
                        det_count = true;
                    }
                }
            }
        }
        i += 1;
    }
    items
}

fn mention_mut(items: &mut [Item], i: usize) -> Option<&mut Mention> {
    match items.get_mut(i) {
        Some(Item::M(m)) => Some(m),
        _ => None,
    }
}

fn is_mention(items: &[Item], i: usize) -> bool {
    matches!(items.get(i), Some(Item::M(_)))
}

/// Attach positions, predicates and trailing adjectives to mentions.
fn attach(items: &mut [Item]) {
    let n = items.len();
    // Positions.
    for p in 0..n {
        let Item::Pos(row, col) = items[p] else {
            continue;
        };
        let pos = ObjRef {
            row,
            col,
            ..Default::default()
        };
        let mut target = None;
        // Backward: "X in the top left", "X is in the top left".
        let mut k = p;
        while k > 0 {
            k -= 1;
            match &items[k] {
                Item::Copula => continue,
                Item::M(m) if !m.r.has_pos() => {
                    target = Some(k);
                    break;
                }
                _ => break,
            }
        }
        // Forward: "In the top left, there is X", "The top left has X".
        if target.is_none() {
            let mut k = p + 1;
            while k < n && matches!(items[k], Item::Comma | Item::Copula | Item::Have) {
                k += 1;
            }
            if matches!(&items.get(k), Some(Item::M(m)) if !m.r.has_pos()) {
                target = Some(k);
            }
        }
        // Otherwise the last earlier mention without a position.
        if target.is_none() {
            target = (0..p)
                .rev()
                .find(|&k| matches!(&items[k], Item::M(m) if !m.r.has_pos()));
        }
        if let Some(t) = target {
            if let Some(m) = mention_mut(items, t) {
                m.r.fill(&pos);
            }
        }
        items[p] = Item::Dead;
    }
    // Copula predicates: "X is [not] red", "X is a small green triangle".
    for c in 0..n {
        if !matches!(items[c], Item::Copula) {
            continue;
        }
        let Some(subj) = (0..c).rev().find(|&k| is_mention(items, k)) else {
            continue;
        };
        let mut k = c + 1;
        let mut neg = false;
        if matches!(items.get(k), Some(Item::Neg)) {
            neg = true;
            k += 1;
        }
        let mut pred = ObjRef::default();
        let mut got = false;
        loop {
            match items.get(k).cloned() {
                Some(Item::Adj(a)) => {
                    pred.merge(&a);
                    items[k] = Item::Dead;
                    got = true;
                }
                Some(Item::M(m)) if !m.plural && m.num.is_none() && !m.used => {
                    pred.merge(&m.r);
                    if let Some(mm) = mention_mut(items, k) {
                        mm.used = true;
                    }
                    got = true;
                    break;
                }
                Some(Item::Ext(_)) => {}
                _ => break,
            }
            k += 1;
        }
        if got {
            if let Some(s) = mention_mut(items, subj) {
                if s.all {
                    s.pred.merge(&pred);
                } else {
                    let mut merged = s.r;
                    merged.merge(&pred);
                    let mut filled = s.r;
                    filled.fill(&pred);
                    if merged != filled && !neg {
                        s.presup = Some(s.r);
                    }
                    s.r = merged;
                }
                s.neg |= neg;
            }
        }
    }
    // Remaining adjectives: to the previous mention, else the next, else a pronoun.
    for a in 0..n {
        let Item::Adj(adj) = items[a] else { continue };
        let target = (0..a)
            .rev()
            .find(|&k| matches!(&items[k], Item::M(m) if !m.used))
            .or_else(|| (a + 1..n).find(|&k| matches!(&items[k], Item::M(m) if !m.used)));
        match target.and_then(|t| mention_mut(items, t)) {
            Some(m) if m.all => m.pred.merge(&adj),
            Some(m) => m.r.merge(&adj),
            None => {
                items[a] = Item::M(Mention {
                    r: adj,
                    pronoun: true,
                    ..Default::default()
                });
                continue;
            }
        }
        items[a] = Item::Dead;
    }
}

/// Claims of one sentence, plus the bare numbers found.
fn sentence_claims(
    words: &[String],
    first: bool,
    out: &mut Vec<(Claim, bool)>,
    nums: &mut Vec<usize>,
) {
    let mut items = lex(words);
    attach(&mut items);
    let n = items.len();
    let mut seen_mention = false;
    let mut i = 0;
    while i < n {
        match items[i].clone() {
            Item::Yes | Item::No if !seen_mention && (first || i == 0) => {
                out.push((Claim::YesNo(matches!(items[i], Item::Yes)), false));
            }
            Item::Num(k) => nums.push(k),
            Item::Rel(r0) => {
                let a = (0..i).rev().find(|&k| is_mention(&items, k));
                let mut rels = vec![r0];
                let mut k = i + 1;
                while k < n && matches!(items[k], Item::Rel(_) | Item::And | Item::Comma) {
                    if let Item::Rel(r) = items[k] {
                        rels.push(r);
                    }
                    k += 1;
                }
                let b = (k..n).find(|&k| is_mention(&items, k));
                if let (Some(a), Some(b)) = (a, b) {
                    let (Item::M(ma), Item::M(mb)) = (items[a].clone(), items[b].clone()) else {
                        unreachable!()
                    };
                    rels.sort();
                    rels.dedup();
                    out.push((Claim::Relation(ma.r, rels, mb.r), ma.pronoun || mb.pronoun));
                    for x in [a, b] {
                        if let Some(m) = mention_mut(&mut items, x) {
                            m.used = true;
                        }
                    }
                }
                i = k;
                continue;
            }
            Item::Comp(is_size, pos) => {
                let than = (i + 1..n).find(|&k| matches!(items[k], Item::Than));
                if let Some(t) = than {
                    let b = (t + 1..n).find(|&k| is_mention(&items, k));
                    let a = if is_size {
                        (0..i).rev().find(|&k| is_mention(&items, k))
                    } else {
                        (i + 1..t).find(|&k| is_mention(&items, k))
                    };
                    if let (Some(a), Some(b)) = (a, b) {
                        let (Item::M(ma), Item::M(mb)) = (items[a].clone(), items[b].clone())
                        else {
                            unreachable!()
                        };
                        out.push((
                            if is_size {
                                Claim::SizeCompare(ma.r, mb.r, pos)
                            } else {
                                Claim::CountCompare(ma.r, mb.r, pos)
                            },
                            false,
                        ));
                        for x in [a, b] {
                            if let Some(m) = mention_mut(&mut items, x) {
                                m.used = true;
                            }
                        }
                    }
                }
            }
            Item::Ext(e) => {
                // The most specific mention of the sentence.
                let best = (0..n)
                    .filter(|&k| matches!(&items[k], Item::M(m) if !m.plural))
                    .max_by_key(|&k| match &items[k] {
                        Item::M(m) => (!m.used as usize, m.r.n_fields()),
                        _ => (0, 0),
                    });
                if let Some(b) = best {
                    if let Some(m) = mention_mut(&mut items, b) {
                        out.push((Claim::Extreme(e, m.r), m.pronoun));
                        m.used = true;
                    }
                    for k in 0..n {
                        if let Some(m) = mention_mut(&mut items, k) {
                            if m.r.shape.is_none() && !m.r.has_pos() {
                                m.used = true;
                            }
                        }
                    }
                }
            }
            Item::M(_) => seen_mention = true,
            _ => {}
        }
        i += 1;
    }
    // Plain mentions.
    let neg_before = |items: &[Item], k: usize| {
        (0..k)
            .rev()
            .take_while(|&j| !is_mention(items, j))
            .any(|j| matches!(items[j], Item::Neg))
    };
    for k in 0..n {
        let Item::M(m) = items[k].clone() else {
            continue;
        };
        if m.used {
            continue;
        }
        let neg = m.neg || neg_before(&items, k);
        let claim = if neg || m.num == Some(0) {
            Some(Claim::Absent(m.r))
        } else if m.all {
            Some(Claim::All(m.r, m.pred))
        } else if let Some(c) = m.num.filter(|&c| c >= 2 || m.count_det) {
            Some(Claim::Count(m.r, c))
        } else if m.count_det {
            Some(Claim::Count(m.r, 1))
        } else if !m.r.is_empty() || m.pronoun {
            Some(Claim::Exists(m.r))
        } else {
            None
        };
        if let Some(c) = claim {
            out.push((c, m.pronoun));
        }
        if let Some(p) = m.presup {
            out.push((Claim::Exists(p), m.pronoun));
        }
    }
}

/// Claims of `text`, resolving pronouns, bare adjectives and bare numbers against the
/// `question`'s focus ("What color is the circle in the top left?" / "Red.").
pub fn extract_claims(text: &str, question: Option<&str>) -> Vec<Claim> {
    let mut raw = Vec::new();
    let mut nums = Vec::new();
    for (si, s) in sentences(text).iter().enumerate() {
        sentence_claims(s, si == 0, &mut raw, &mut nums);
    }
    let focus = question.and_then(question_focus);
    let how_many = question.is_some_and(|q| q.to_lowercase().contains("how many"));
    let mut out = Vec::new();
    for (c, pronoun) in raw {
        let c = match (c, pronoun, focus) {
            (Claim::Exists(mut r), true, Some(f)) => {
                r.fill(&f);
                Claim::Exists(r)
            }
            (Claim::Absent(mut r), true, Some(f)) => {
                r.fill(&f);
                Claim::Absent(r)
            }
            (c, true, _) if matches!(&c, Claim::Exists(r) | Claim::Absent(r) if r.is_empty()) => {
                continue
            }
            (c, _, _) => c,
        };
        if !out.contains(&c) {
            out.push(c);
        }
    }
    if how_many
        && !out
            .iter()
            .any(|c| matches!(c, Claim::Count(..) | Claim::Absent(_)))
    {
        if let (Some(&k), Some(f)) = (nums.first(), focus) {
            out.push(if k == 0 {
                Claim::Absent(f)
            } else {
                Claim::Count(f, k)
            });
        }
    }
    out
}

/// The first object description in a question (its "focus").
pub fn question_focus(question: &str) -> Option<ObjRef> {
    for s in sentences(question) {
        let mut items = lex(&s);
        attach(&mut items);
        for it in items {
            if let Item::M(m) = it {
                if !m.pronoun {
                    return Some(m.r);
                }
            }
        }
    }
    None
}

/// For a yes/no question ("Is there a red circle in the image?"), whether the answer is yes.
/// `None` when the question is not a parseable yes/no question.
pub fn question_truth(scene: &Scene, question: &str) -> Option<bool> {
    // Only the question sentence: drop `<image>` and instructions such as the POPE suffix.
    let q = question.replace("<image>", " ").to_lowercase();
    let q = q.split('?').next().unwrap_or("").trim().to_string();
    let first = q.split_whitespace().next()?;
    if !matches!(first, "is" | "are" | "does" | "do" | "can" | "has" | "have") || q.contains(" or ")
    {
        return None;
    }
    let claims: Vec<Claim> = extract_claims(&q, None)
        .into_iter()
        .filter(|c| !matches!(c, Claim::YesNo(_)))
        .collect();
    match claims.as_slice() {
        [c] => c.check(scene, None),
        _ => None,
    }
}

/// The first yes/no of an answer, if it starts with one.
pub fn answer_yes_no(answer: &str) -> Option<bool> {
    extract_claims(answer, None)
        .into_iter()
        .find_map(|c| match c {
            Claim::YesNo(y) => Some(y),
            _ => None,
        })
}

/// A claim with its verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckedClaim {
    pub claim: Claim,
    /// `Some(false)`: hallucination; `None`: unverifiable (a yes/no with no known answer).
    pub truth: Option<bool>,
}

/// Extract and check the claims of `answer` to `question` about `scene`. Yes/no claims are
/// checked against `reference`'s yes/no when given, else against the question itself.
pub fn check_answer(
    scene: &Scene,
    question: &str,
    answer: &str,
    reference: Option<&str>,
) -> Vec<CheckedClaim> {
    let expected = reference
        .and_then(answer_yes_no)
        .or_else(|| question_truth(scene, question));
    extract_claims(answer, Some(question))
        .into_iter()
        .map(|claim| {
            let truth = claim.check(scene, expected);
            CheckedClaim { claim, truth }
        })
        .collect()
}

/// Number of hallucinated (scene-contradicting) claims in a whole conversation's gpt turns,
/// each checked against the preceding human question.
pub fn count_hallucinations(scene: &Scene, conversation: &[crate::Turn]) -> usize {
    conversation_claims(scene, conversation)
        .iter()
        .flatten()
        .filter(|c| c.truth == Some(false))
        .count()
}

/// Checked claims of every gpt turn of a conversation (one entry per gpt turn).
pub fn conversation_claims(scene: &Scene, conversation: &[crate::Turn]) -> Vec<Vec<CheckedClaim>> {
    let mut q = "";
    let mut out = Vec::new();
    for t in conversation {
        if t.from == "gpt" {
            out.push(check_answer(scene, q, &t.value, None));
        } else {
            q = &t.value;
        }
    }
    out
}

/// Claim counts of a conversation's gpt turns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimStats {
    /// Claims checked true.
    pub correct: usize,
    /// Claims contradicting the scene (hallucinations).
    pub hallucinated: usize,
    /// Yes/no claims whose expected answer is unknown.
    pub unverifiable: usize,
}

impl ClaimStats {
    /// hallucinated / (correct + hallucinated); 0 when there is no checkable claim.
    pub fn hallucination_rate(&self) -> f64 {
        let n = self.correct + self.hallucinated;
        if n == 0 {
            0.0
        } else {
            self.hallucinated as f64 / n as f64
        }
    }
}

/// Correct / hallucinated / unverifiable claim counts of a conversation (the ground truth the
/// demo ranks responses by).
pub fn claim_stats(scene: &Scene, conversation: &[crate::Turn]) -> ClaimStats {
    let mut s = ClaimStats::default();
    for c in conversation_claims(scene, conversation).iter().flatten() {
        match c.truth {
            Some(true) => s.correct += 1,
            Some(false) => s.hallucinated += 1,
            None => s.unverifiable += 1,
        }
    }
    s
}

/// How well a model reads the objects it names at a position: over every `there is a <size>
/// <colour> <shape> in the <cell>` claim whose cell holds an object, how often each named
/// attribute is that object's. A grounding measure below the hallucination rate: it separates
/// "sees where things are" from "sees what they are".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributeTally {
    /// Located claims (the named cell holds an object).
    pub located: usize,
    pub shape_named: usize,
    pub shape_right: usize,
    pub colour_named: usize,
    pub colour_right: usize,
    pub size_named: usize,
    pub size_right: usize,
}

impl AttributeTally {
    /// Add the located claims of one answer.
    pub fn add_answer(&mut self, scene: &Scene, question: Option<&str>, answer: &str) {
        for c in extract_claims(answer, question) {
            let Claim::Exists(r) = c else { continue };
            let (Some(row), Some(col)) = (r.row, r.col) else { continue };
            let Some(o) = scene.at(crate::Cell { row, col }) else { continue };
            self.located += 1;
            if let Some(s) = r.shape {
                self.shape_named += 1;
                self.shape_right += usize::from(s == o.shape);
            }
            if let Some(c) = r.colour {
                self.colour_named += 1;
                self.colour_right += usize::from(c == o.colour);
            }
            if let Some(z) = r.size {
                self.size_named += 1;
                self.size_right += usize::from(z == o.size);
            }
        }
    }
    fn ratio(right: usize, named: usize) -> f64 {
        if named == 0 {
            f64::NAN
        } else {
            right as f64 / named as f64
        }
    }
    /// Fraction of located claims naming the right shape (NaN when none names one).
    pub fn shape_accuracy(&self) -> f64 {
        Self::ratio(self.shape_right, self.shape_named)
    }
    /// Fraction of located claims naming the right colour.
    pub fn colour_accuracy(&self) -> f64 {
        Self::ratio(self.colour_right, self.colour_named)
    }
    /// Fraction of located claims naming the right size.
    pub fn size_accuracy(&self) -> f64 {
        Self::ratio(self.size_right, self.size_named)
    }
}

#[cfg(test)]
mod attribute_tests {
    use super::*;
    use crate::{Cell, Object};

    #[test]
    fn located_claims_are_scored_per_attribute() {
        let o = |shape, colour, size, row, col| Object { shape, colour, size, cell: Cell { row, col }, cx: 0.0, cy: 0.0, r: 1.0 };
        let scene = Scene {
            id: "t".into(),
            image_size: 48,
            objects: vec![o(Shape::Circle, Colour::Red, Size::Small, 0, 0), o(Shape::Square, Colour::Blue, Size::Large, 2, 2)],
        };
        let mut t = AttributeTally::default();
        // Right shape and colour, wrong size; wrong shape; a claim about an empty cell (ignored).
        t.add_answer(&scene, None, "There is a large red circle in the top left. There is a large blue circle in the bottom right. There is a small green square in the center.");
        assert_eq!(t.located, 2);
        assert_eq!((t.shape_right, t.shape_named), (1, 2));
        assert_eq!((t.colour_right, t.colour_named), (2, 2));
        assert_eq!((t.size_right, t.size_named), (1, 2));
        assert_eq!(t.shape_accuracy(), 0.5);
    }
}
