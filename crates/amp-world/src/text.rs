//! Templated English for the world: detailed descriptions (the standard response), MRHal-Bench
//! style question categories (docs/paper-notes.md §5) and multi-round LLaVA dialogues.
//!
//! Every sentence is built from a small vocabulary and parses back with [`crate::claims`]; the
//! crate's tests check that every generated answer yields only true claims.
use crate::rng::Rng;
use crate::scene::{Cell, Object, Scene, Shape, Size};
use serde::{Deserialize, Serialize};

/// vicuna_v1 system prompt (LLaVA `conv_vicuna_v1`).
pub const VICUNA_SYSTEM: &str = "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions.";
/// vicuna_v1 role strings.
pub const VICUNA_USER: &str = "USER";
pub const VICUNA_ASSISTANT: &str = "ASSISTANT";
/// The image placeholder of LLaVA conversations.
pub const IMAGE_TOKEN: &str = "<image>";
/// LLaVA's POPE short-answer instruction (appended in `llava_pope_test.jsonl`).
pub const SHORT_ANSWER: &str = "Answer the question using a single word or phrase.";

/// One LLaVA conversation turn (`from` is `"human"` or `"gpt"`); same JSON as `mdpo::data::Turn`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    pub from: String,
    pub value: String,
}

impl Turn {
    pub fn human(value: impl Into<String>) -> Self {
        Turn {
            from: "human".into(),
            value: value.into(),
        }
    }
    pub fn gpt(value: impl Into<String>) -> Self {
        Turn {
            from: "gpt".into(),
            value: value.into(),
        }
    }
}

/// The vicuna_v1 prompt of a conversation, as LLaVA's `Conversation.get_prompt()` builds it:
/// `"{system} USER: {q1} ASSISTANT: {a1}</s>USER: {q2} ASSISTANT:"`. A trailing human turn ends
/// with `"ASSISTANT:"` (the generation prompt).
pub fn vicuna_v1_prompt(turns: &[Turn]) -> String {
    let mut s = format!("{VICUNA_SYSTEM} ");
    for t in turns {
        if t.from == "human" {
            s.push_str(&format!("{VICUNA_USER}: {} ", t.value));
        } else {
            s.push_str(&format!("{VICUNA_ASSISTANT}: {}</s>", t.value));
        }
    }
    if turns.last().is_none_or(|t| t.from == "human") {
        s.push_str(&format!("{VICUNA_ASSISTANT}:"));
    }
    s
}

/// MRHal-Bench question categories (docs/paper-notes.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Attribute,
    Description,
    Existence,
    Counting,
    Reasoning,
    /// Spatial relation.
    Relation,
}

impl Category {
    pub const ALL: [Category; 6] = [
        Category::Attribute,
        Category::Description,
        Category::Existence,
        Category::Counting,
        Category::Reasoning,
        Category::Relation,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Category::Attribute => "attribute",
            Category::Description => "description",
            Category::Existence => "existence",
            Category::Counting => "counting",
            Category::Reasoning => "reasoning",
            Category::Relation => "relation",
        }
    }
}

/// One question with its standard answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Qa {
    pub category: Category,
    pub question: String,
    pub answer: String,
}

const NUMBERS: [&str; 10] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
];

/// "two" for 2.
pub fn number_word(n: usize) -> String {
    NUMBERS
        .get(n)
        .map(|s| s.to_string())
        .unwrap_or_else(|| n.to_string())
}

fn article(next: &str) -> &'static str {
    if next.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

pub(crate) fn with_article(np: &str) -> String {
    format!("{} {np}", article(np))
}

pub(crate) fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// Which attributes a noun phrase mentions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fields {
    pub size: bool,
    pub colour: bool,
    pub shape: bool,
    pub cell: bool,
}

impl Fields {
    pub const FULL: Fields = Fields {
        size: true,
        colour: true,
        shape: true,
        cell: true,
    };
    const fn new(size: bool, colour: bool, shape: bool, cell: bool) -> Self {
        Fields {
            size,
            colour,
            shape,
            cell,
        }
    }
    fn matches(self, a: &Object, b: &Object) -> bool {
        (!self.size || a.size == b.size)
            && (!self.colour || a.colour == b.colour)
            && (!self.shape || a.shape == b.shape)
            && (!self.cell || a.cell == b.cell)
    }
}

/// Noun phrase without article: "large red circle in the top left", "object in the center".
pub fn noun_phrase(o: &Object, f: Fields) -> String {
    let mut w: Vec<&str> = Vec::new();
    if f.size {
        w.push(o.size.name());
    }
    if f.colour {
        w.push(o.colour.name());
    }
    w.push(if f.shape { o.shape.name() } else { "object" });
    let mut s = w.join(" ");
    if f.cell {
        s.push_str(" in the ");
        s.push_str(&o.cell.name());
    }
    s
}

/// Whether `f` picks out object `i` uniquely.
pub fn is_unique(scene: &Scene, i: usize, f: Fields) -> bool {
    let o = &scene.objects[i];
    scene.objects.iter().filter(|p| f.matches(o, p)).count() == 1
}

/// A random unique referring field set for object `i`, drawn from `candidates` (shorter first
/// are more likely); falls back to the full description.
fn refer_fields(scene: &Scene, i: usize, candidates: &[Fields], rng: &mut Rng) -> Fields {
    let ok: Vec<Fields> = candidates
        .iter()
        .copied()
        .filter(|f| is_unique(scene, i, *f))
        .collect();
    if ok.is_empty() {
        return Fields::FULL;
    }
    // Prefer the first (shortest) unique form half of the time.
    if rng.chance(0.5) {
        ok[0]
    } else {
        *rng.choose(&ok)
    }
}

const REF_FORMS: [Fields; 6] = [
    Fields::new(false, false, true, false),
    Fields::new(false, true, true, false),
    Fields::new(true, false, true, false),
    Fields::new(true, true, true, false),
    Fields::new(false, true, true, true),
    Fields::new(true, true, true, true),
];

/// "the red circle" (a unique definite reference to object `i`).
fn the_ref(scene: &Scene, i: usize, rng: &mut Rng) -> String {
    let f = refer_fields(scene, i, &REF_FORMS, rng);
    format!("the {}", noun_phrase(&scene.objects[i], f))
}

pub(crate) fn count_phrase(n: usize, singular: &str, plural: &str) -> String {
    match n {
        0 => format!("no {plural}"),
        1 => format!("one {singular}"),
        _ => format!("{} {plural}", number_word(n)),
    }
}

pub(crate) fn there_be(n: usize) -> &'static str {
    if n == 1 {
        "there is"
    } else {
        "there are"
    }
}

/// The detailed description of a scene: the standard response of "describe" prompts.
pub fn description(scene: &Scene, rng: &mut Rng) -> String {
    let n = scene.objects.len();
    let nw = number_word(n);
    let mut s: Vec<String> = Vec::new();
    s.push(match rng.below(3) {
        0 => format!("The image shows {nw} objects on a gray background."),
        1 => format!("There are {nw} objects in the image."),
        _ => format!("The image contains {nw} shapes."),
    });
    for o in &scene.objects {
        let np = noun_phrase(o, Fields::new(true, true, true, false));
        let cell = o.cell.name();
        s.push(match rng.below(4) {
            0 => format!("There is {} in the {cell}.", with_article(&np)),
            1 => format!("{} is in the {cell}.", capitalise(&with_article(&np))),
            2 => format!("In the {cell}, there is {}.", with_article(&np)),
            _ => format!("The {cell} has {}.", with_article(&np)),
        });
    }
    // One summary count for a repeated shape, when there is one.
    let mut shapes: Vec<Shape> = scene.objects.iter().map(|o| o.shape).collect();
    shapes.sort();
    shapes.dedup();
    let repeated: Vec<Shape> = shapes
        .into_iter()
        .filter(|sh| scene.objects.iter().filter(|o| o.shape == *sh).count() >= 2)
        .collect();
    if !repeated.is_empty() && rng.chance(0.5) {
        let sh = *rng.choose(&repeated);
        let k = scene.objects.iter().filter(|o| o.shape == sh).count();
        s.push(format!(
            "In total, there are {} {}.",
            number_word(k),
            sh.plural()
        ));
    }
    s.join(" ")
}

fn describe_question(rng: &mut Rng) -> String {
    (*rng.choose(&[
        "Describe the image in detail.",
        "What do you see in the image?",
        "Give a detailed description of the image.",
        "Can you describe this image?",
    ]))
    .to_string()
}

pub(crate) fn all_cells() -> Vec<Cell> {
    (0..9u8)
        .map(|i| Cell {
            row: i / 3,
            col: i % 3,
        })
        .collect()
}

fn q_attribute(scene: &Scene, rng: &mut Rng) -> Option<Qa> {
    let i = rng.below(scene.objects.len());
    let o = scene.objects[i];
    let (question, answer) = match rng.below(3) {
        0 => {
            let f = refer_fields(
                scene,
                i,
                &[
                    Fields::new(false, false, true, false),
                    Fields::new(true, false, true, false),
                    Fields::new(false, false, true, true),
                ],
                rng,
            );
            let r = noun_phrase(&o, f);
            let q = match rng.below(3) {
                0 => format!("What color is the {r}?"),
                1 => format!("What is the color of the {r}?"),
                _ => format!("Which color does the {r} have?"),
            };
            (q, format!("The {r} is {}.", o.colour.name()))
        }
        1 => {
            let f = refer_fields(
                scene,
                i,
                &[
                    Fields::new(false, true, false, true),
                    Fields::new(false, false, false, true),
                ],
                rng,
            );
            let r = noun_phrase(&o, f);
            let q = match rng.below(2) {
                0 => format!("What shape is the {r}?"),
                _ => format!("What is the shape of the {r}?"),
            };
            (q, format!("The {r} is {}.", with_article(o.shape.name())))
        }
        _ => {
            let f = refer_fields(
                scene,
                i,
                &[
                    Fields::new(false, false, true, false),
                    Fields::new(false, true, true, false),
                    Fields::new(false, true, true, true),
                ],
                rng,
            );
            let r = noun_phrase(&o, f);
            let q = match rng.below(2) {
                0 => format!("What size is the {r}?"),
                _ => format!("Is the {r} large or small?"),
            };
            (q, format!("The {r} is {}.", o.size.name()))
        }
    };
    Some(Qa {
        category: Category::Attribute,
        question,
        answer,
    })
}

fn q_description(scene: &Scene, rng: &mut Rng) -> Option<Qa> {
    if rng.chance(0.5) {
        return Some(Qa {
            category: Category::Description,
            question: describe_question(rng),
            answer: description(scene, rng),
        });
    }
    let cell = *rng.choose(&all_cells());
    let cn = cell.name();
    let question = match rng.below(2) {
        0 => format!("Describe the object in the {cn}."),
        _ => format!("What is in the {cn}?"),
    };
    let answer = match scene.at(cell) {
        Some(o) => {
            let np = noun_phrase(o, Fields::new(true, true, true, false));
            match rng.below(2) {
                0 => format!("There is {} in the {cn}.", with_article(&np)),
                _ => format!("The object in the {cn} is {}.", with_article(&np)),
            }
        }
        None => format!("There is nothing in the {cn}."),
    };
    Some(Qa {
        category: Category::Description,
        question,
        answer,
    })
}

/// A (colour, shape, size) that no object of the scene has, close to a present one (one attribute
/// changed) when `adversarial`.
pub(crate) fn absent_object(
    scene: &Scene,
    rng: &mut Rng,
    colours: &[crate::Colour],
    shapes: &[Shape],
    adversarial: bool,
) -> Option<(crate::Colour, Shape)> {
    let present = |c, s| scene.objects.iter().any(|o| o.colour == c && o.shape == s);
    let mut cands = Vec::new();
    if adversarial {
        for o in &scene.objects {
            for &c in colours {
                if !present(c, o.shape) {
                    cands.push((c, o.shape));
                }
            }
            for &s in shapes {
                if !present(o.colour, s) {
                    cands.push((o.colour, s));
                }
            }
        }
    } else {
        for &c in colours {
            for &s in shapes {
                if !present(c, s) {
                    cands.push((c, s));
                }
            }
        }
    }
    if cands.is_empty() {
        None
    } else {
        Some(*rng.choose(&cands))
    }
}

fn q_existence(scene: &Scene, rng: &mut Rng, ctx: &Vocab) -> Option<Qa> {
    let lead = |rng: &mut Rng, np: &str| match rng.below(3) {
        0 => format!("Is there {} in the image?", with_article(np)),
        1 => format!("Does the image contain {}?", with_article(np)),
        _ => format!("Can you see {} in the image?", with_article(np)),
    };
    // Present and absent "<colour> <shape>" probes are equally likely (as in POPE, whose
    // questions have this form): a 1:3 yes:no prior here taught the experts to answer "no".
    let kind = rng.below(6);
    let (question, answer) = if kind < 2 {
        // Present object.
        let i = rng.below(scene.objects.len());
        let o = scene.objects[i];
        let f = *rng.choose(&[
            Fields::new(false, true, true, false),
            Fields::new(false, true, true, false),
            Fields::new(true, true, true, false),
        ]);
        let np = noun_phrase(&o, f);
        let matching: Vec<&Object> = scene.objects.iter().filter(|p| f.matches(&o, p)).collect();
        let answer = if matching.len() == 1 {
            format!(
                "Yes, there is {} in the {}.",
                with_article(&noun_phrase(&o, Fields::new(true, true, true, false))),
                o.cell.name()
            )
        } else {
            let plural = noun_phrase(
                &o,
                Fields {
                    shape: false,
                    cell: false,
                    ..f
                },
            );
            let plural = plural.trim_end_matches("object").to_string() + o.shape.plural();
            format!("Yes, there are {} {plural}.", number_word(matching.len()))
        };
        (lead(rng, &np), answer)
    } else if kind < 4 {
        // Absent object: a near miss of a present one (one attribute changed, POPE's
        // "adversarial" negatives) or any absent colour/shape pair ("random").
        let adversarial = rng.chance(0.5);
        let (c, s) = absent_object(scene, rng, &ctx.colours, &ctx.shapes, adversarial)?;
        let np = format!("{} {}", c.name(), s.name());
        (
            lead(rng, &np),
            format!("No, there is no {np} in the image."),
        )
    } else if kind == 4 {
        // A shape in a cell: half of the time the shape that is there (a "yes"), else any.
        let (cell, s) = if rng.chance(0.5) {
            let o = rng.choose(&scene.objects);
            (o.cell, o.shape)
        } else {
            (*rng.choose(&all_cells()), *rng.choose(&ctx.shapes))
        };
        let cn = cell.name();
        let q = format!("Is there {} in the {cn}?", with_article(s.name()));
        let a = match scene.at(cell) {
            Some(o) if o.shape == s => format!(
                "Yes, there is {} in the {cn}.",
                with_article(&noun_phrase(o, Fields::new(true, true, true, false)))
            ),
            Some(o) => format!(
                "No, the object in the {cn} is {}.",
                with_article(&noun_phrase(o, Fields::new(true, true, true, false)))
            ),
            None => format!("No, there is nothing in the {cn}."),
        };
        (q, a)
    } else {
        let s = *rng.choose(&ctx.shapes);
        let k = scene.objects.iter().filter(|o| o.shape == s).count();
        let q = format!("Are there any {} in the image?", s.plural());
        let a = match k {
            0 => format!("No, there are no {} in the image.", s.plural()),
            1 => format!("Yes, there is one {}.", s.name()),
            _ => format!("Yes, there are {} {}.", number_word(k), s.plural()),
        };
        (q, a)
    };
    Some(Qa {
        category: Category::Existence,
        question,
        answer,
    })
}

fn q_counting(scene: &Scene, rng: &mut Rng, ctx: &Vocab) -> Option<Qa> {
    let o = *rng.choose(&scene.objects);
    let (sing, plural, k): (String, String, usize) = match rng.below(5) {
        0 => {
            let s = if rng.chance(0.7) {
                o.shape
            } else {
                *rng.choose(&ctx.shapes)
            };
            let k = scene.objects.iter().filter(|p| p.shape == s).count();
            (s.name().into(), s.plural().into(), k)
        }
        1 => {
            let c = if rng.chance(0.7) {
                o.colour
            } else {
                *rng.choose(&ctx.colours)
            };
            let k = scene.objects.iter().filter(|p| p.colour == c).count();
            (
                format!("{} object", c.name()),
                format!("{} objects", c.name()),
                k,
            )
        }
        2 => {
            let k = scene
                .objects
                .iter()
                .filter(|p| p.colour == o.colour && p.shape == o.shape)
                .count();
            (
                format!("{} {}", o.colour.name(), o.shape.name()),
                format!("{} {}", o.colour.name(), o.shape.plural()),
                k,
            )
        }
        3 => {
            let sz = o.size;
            let k = scene.objects.iter().filter(|p| p.size == sz).count();
            (
                format!("{} object", sz.name()),
                format!("{} objects", sz.name()),
                k,
            )
        }
        _ => ("object".into(), "objects".into(), scene.objects.len()),
    };
    let question = match rng.below(3) {
        0 => format!("How many {plural} are there?"),
        1 => format!("How many {plural} are in the image?"),
        _ => format!("Count the {plural} in the image."),
    };
    let answer = match k {
        0 => format!("There are no {plural} in the image."),
        1 => format!("There is one {sing}."),
        _ => format!("There are {} {plural}.", number_word(k)),
    };
    Some(Qa {
        category: Category::Counting,
        question,
        answer,
    })
}

/// Index of the unique object maximising `key`, if unique.
pub(crate) fn unique_argmax(scene: &Scene, key: impl Fn(&Object) -> i32) -> Option<usize> {
    let best = scene.objects.iter().map(&key).max()?;
    let idx: Vec<usize> = (0..scene.objects.len())
        .filter(|&i| key(&scene.objects[i]) == best)
        .collect();
    (idx.len() == 1).then(|| idx[0])
}

fn q_reasoning(scene: &Scene, rng: &mut Rng, ctx: &Vocab) -> Option<Qa> {
    let full = Fields::new(true, true, true, false);
    for _ in 0..8 {
        match rng.below(4) {
            0 => {
                // Extremes of size or position.
                use crate::claims::Extreme;
                let (e, q, word) = *rng.choose(&[
                    (Extreme::Largest, "Which object is the largest?", "largest"),
                    (
                        Extreme::Smallest,
                        "Which object is the smallest?",
                        "smallest",
                    ),
                    (
                        Extreme::Leftmost,
                        "Which object is the furthest to the left?",
                        "left-most",
                    ),
                    (
                        Extreme::Rightmost,
                        "Which object is the furthest to the right?",
                        "right-most",
                    ),
                    (Extreme::Topmost, "Which object is the highest?", "top-most"),
                    (
                        Extreme::Bottommost,
                        "Which object is the lowest?",
                        "bottom-most",
                    ),
                ]);
                let key = |o: &Object| e.key(o);
                if let Some(i) = unique_argmax(scene, key) {
                    let o = &scene.objects[i];
                    let a = format!(
                        "The {word} object is the {} in the {}.",
                        noun_phrase(o, full),
                        o.cell.name()
                    );
                    return Some(Qa {
                        category: Category::Reasoning,
                        question: q.into(),
                        answer: a,
                    });
                }
            }
            1 => {
                // Count comparison of two shapes.
                let a = rng.choose(&scene.objects).shape;
                let b = *rng.choose(&ctx.shapes);
                if a == b {
                    continue;
                }
                let ka = scene.objects.iter().filter(|o| o.shape == a).count();
                let kb = scene.objects.iter().filter(|o| o.shape == b).count();
                let q = format!("Are there more {} than {}?", a.plural(), b.plural());
                let yn = if ka > kb { "Yes" } else { "No" };
                let ans = format!(
                    "{yn}, {} {} and {}.",
                    there_be(ka),
                    count_phrase(ka, a.name(), a.plural()),
                    count_phrase(kb, b.name(), b.plural())
                );
                return Some(Qa {
                    category: Category::Reasoning,
                    question: q,
                    answer: ans,
                });
            }
            2 => {
                // Size comparison of two objects of different size.
                let i = rng.below(scene.objects.len());
                let j = rng.below(scene.objects.len());
                let (oi, oj) = (scene.objects[i], scene.objects[j]);
                if oi.size == oj.size {
                    continue;
                }
                let forms = [REF_FORMS[0], REF_FORMS[1], REF_FORMS[4]];
                let ra = noun_phrase(&oi, refer_fields(scene, i, &forms, rng));
                let rb = noun_phrase(&oj, refer_fields(scene, j, &forms, rng));
                let bigger = rng.chance(0.5);
                let q = if bigger {
                    format!("Is the {ra} bigger than the {rb}?")
                } else {
                    format!("Is the {ra} smaller than the {rb}?")
                };
                let truth = if bigger {
                    oi.size > oj.size
                } else {
                    oi.size < oj.size
                };
                let ans = format!(
                    "{}, the {ra} is {} and the {rb} is {}.",
                    if truth { "Yes" } else { "No" },
                    oi.size.name(),
                    oj.size.name()
                );
                return Some(Qa {
                    category: Category::Reasoning,
                    question: q,
                    answer: ans,
                });
            }
            _ => {
                // Are all objects of a shape the same colour?
                let s = rng.choose(&scene.objects).shape;
                let of: Vec<&Object> = scene.objects.iter().filter(|o| o.shape == s).collect();
                if of.len() < 2 {
                    continue;
                }
                let c = of[rng.below(of.len())].colour;
                let all = of.iter().all(|o| o.colour == c);
                let q = format!("Are all the {} {}?", s.plural(), c.name());
                let ans = if all {
                    format!(
                        "Yes, there are {} {} {}.",
                        number_word(of.len()),
                        c.name(),
                        s.plural()
                    )
                } else {
                    let odd = of.iter().find(|o| o.colour != c).expect("exists");
                    format!(
                        "No, the {} in the {} is {}.",
                        s.name(),
                        odd.cell.name(),
                        odd.colour.name()
                    )
                };
                return Some(Qa {
                    category: Category::Reasoning,
                    question: q,
                    answer: ans,
                });
            }
        }
    }
    None
}

/// "to the left of", "above and to the right of", ... (a's position relative to b).
pub fn relation_phrase(a: &Object, b: &Object) -> String {
    let v = match a.cell.row.cmp(&b.cell.row) {
        std::cmp::Ordering::Less => Some("above"),
        std::cmp::Ordering::Greater => Some("below"),
        _ => None,
    };
    let h = match a.cell.col.cmp(&b.cell.col) {
        std::cmp::Ordering::Less => Some("to the left of"),
        std::cmp::Ordering::Greater => Some("to the right of"),
        _ => None,
    };
    match (v, h) {
        (Some(v), Some(h)) => format!("{v} and {h}"),
        (Some(v), None) => v.to_string(),
        (None, Some(h)) => h.to_string(),
        (None, None) => "at the same place as".to_string(),
    }
}

fn q_relation(scene: &Scene, rng: &mut Rng) -> Option<Qa> {
    if scene.objects.len() < 2 || rng.chance(0.2) {
        let i = rng.below(scene.objects.len());
        let r = the_ref(scene, i, rng);
        let o = &scene.objects[i];
        let q = match rng.below(2) {
            0 => format!("Where is {r}?"),
            _ => format!("Where is {r} located?"),
        };
        let a = format!("{} is in the {}.", capitalise(&r), o.cell.name());
        return Some(Qa {
            category: Category::Relation,
            question: q,
            answer: a,
        });
    }
    let i = rng.below(scene.objects.len());
    let mut j = rng.below(scene.objects.len() - 1);
    if j >= i {
        j += 1;
    }
    let (oi, oj) = (scene.objects[i], scene.objects[j]);
    let ri = the_ref(scene, i, rng);
    let rj = the_ref(scene, j, rng);
    let rel = relation_phrase(&oi, &oj);
    if rng.chance(0.5) {
        let q = match rng.below(2) {
            0 => format!("Where is {ri} relative to {rj}?"),
            _ => format!("What is the position of {ri} relative to {rj}?"),
        };
        let a = format!("{} is {rel} {rj}.", capitalise(&ri));
        Some(Qa {
            category: Category::Relation,
            question: q,
            answer: a,
        })
    } else {
        let (word, truth) = match rng.below(4) {
            0 => ("to the left of", oi.cell.col < oj.cell.col),
            1 => ("to the right of", oi.cell.col > oj.cell.col),
            2 => ("above", oi.cell.row < oj.cell.row),
            _ => ("below", oi.cell.row > oj.cell.row),
        };
        let q = format!("Is {ri} {word} {rj}?");
        let a = format!("{}, {ri} is {rel} {rj}.", if truth { "Yes" } else { "No" });
        Some(Qa {
            category: Category::Relation,
            question: q,
            answer: a,
        })
    }
}

/// The attribute values a world uses (for absent-object questions).
#[derive(Debug, Clone)]
pub struct Vocab {
    pub shapes: Vec<Shape>,
    pub colours: Vec<crate::Colour>,
    pub sizes: Vec<Size>,
    /// What an existence question names (canonical dialogues and POPE).
    pub objects: crate::pope::PopeObjects,
    /// [`crate::SceneSpec::shape_presence`], in `shapes` order.
    pub shape_presence: Vec<f64>,
}

/// One question of `category` about `scene` with its standard answer (`None` when the scene
/// cannot support that category, e.g. no unique extreme for reasoning after a few tries).
pub fn ask(scene: &Scene, category: Category, vocab: &Vocab, rng: &mut Rng) -> Option<Qa> {
    if scene.objects.is_empty() {
        return None;
    }
    match category {
        Category::Attribute => q_attribute(scene, rng),
        Category::Description => q_description(scene, rng),
        Category::Existence => q_existence(scene, rng, vocab),
        Category::Counting => q_counting(scene, rng, vocab),
        Category::Reasoning => q_reasoning(scene, rng, vocab),
        Category::Relation => q_relation(scene, rng),
    }
}

/// The single-round "describe the image" conversation (the detailed-caption instruction data).
pub fn description_conversation(scene: &Scene, rng: &mut Rng) -> Vec<Turn> {
    let q = describe_question(rng);
    vec![
        Turn::human(format!("{IMAGE_TOKEN}\n{q}")),
        Turn::gpt(description(scene, rng)),
    ]
}

/// A multi-round dialogue of `rounds` questions from distinct categories (as far as possible),
/// `<image>` only in the first human turn. Returns the turns and the category of each round.
pub fn dialogue(
    scene: &Scene,
    rounds: usize,
    vocab: &Vocab,
    rng: &mut Rng,
) -> (Vec<Turn>, Vec<Category>) {
    let mut cats: Vec<Category> = Category::ALL.to_vec();
    rng.shuffle(&mut cats);
    let mut turns = Vec::new();
    let mut used = Vec::new();
    let mut k = 0;
    while used.len() < rounds && k < 4 * rounds + 12 {
        let c = cats[k % cats.len()];
        k += 1;
        if let Some(qa) = ask(scene, c, vocab, rng) {
            push_round(&mut turns, qa);
            used.push(c);
        }
    }
    (turns, used)
}

/// Append one question-answer round to a dialogue, `<image>` before the first question.
pub(crate) fn push_round(turns: &mut Vec<Turn>, qa: Qa) {
    let q = if turns.is_empty() {
        format!("{IMAGE_TOKEN}\n{}", qa.question)
    } else {
        qa.question
    };
    turns.push(Turn::human(q));
    turns.push(Turn::gpt(qa.answer));
}
