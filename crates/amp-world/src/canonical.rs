//! Canonical text: one phrasing per question type, and dialogues in which most rounds are
//! *grounded* (answerable only by reading one grid cell of the image).
//!
//! The default text ([`crate::text`]) phrases each of MRHal-Bench's six categories in several
//! templates. Models trained from scratch on two CPU cores in minutes cannot learn both the
//! phrasing variety and to read the right image token (docs/demo.md, "Stage 1/2"); with one
//! phrasing per question type they can. This is the LLaVA recipe in miniature: stage 1 aligns
//! the projector on captions of one form ([`caption`]), stage 2 tunes on instruction dialogues
//! ([`dialogue`]). Used when [`crate::WorldConfig::canonical`] is set.
//!
//! Question types (each exactly one phrasing):
//! - existence, POPE's form: "Is there a red circle in the image?" — yes and no equally often —
//!   or, with [`crate::PopeObjects::Shape`], "Is there a circle in the image?", balanced per shape;
//! - cell: "What is in the top left?";
//! - attribute by cell: "What color / shape / size is the object in the top left?";
//! - description: "Describe the image." (the caption);
//! - counting: "How many circles are there?";
//! - relation: "Where is the red circle?";
//! - reasoning: "Which object is the largest?" (one phrasing per superlative).
use crate::claims::Extreme;
use crate::rng::Rng;
use crate::scene::{Object, Scene};
use crate::text::{
    absent_object, all_cells, capitalise, is_unique, noun_phrase, number_word, push_round,
    unique_argmax, with_article, Category, Fields, Qa, Turn, Vocab, IMAGE_TOKEN,
};

/// The one description question.
pub const DESCRIBE: &str = "Describe the image.";

const FULL: Fields = Fields {
    size: true,
    colour: true,
    shape: true,
    cell: false,
};

/// The canonical caption: "There are three objects. There is a small red circle in the top
/// left. ..." (objects in reading order).
pub fn caption(scene: &Scene) -> String {
    let n = scene.objects.len();
    let mut s = vec![if n == 1 {
        "There is one object.".to_string()
    } else {
        format!("There are {} objects.", number_word(n))
    }];
    for o in &scene.objects {
        s.push(format!(
            "There is {} in the {}.",
            with_article(&noun_phrase(o, FULL)),
            o.cell.name()
        ));
    }
    s.join(" ")
}

fn located(o: &Object) -> String {
    format!(
        "{} in the {}",
        with_article(&noun_phrase(o, FULL)),
        o.cell.name()
    )
}

/// "Is there a red circle in the image?", present (yes) or absent (no) by `yes`; "Is there a
/// circle in the image?" when the world's existence questions name shapes
/// ([`crate::PopeObjects::Shape`]; then `yes` is not used: the answer is balanced per shape).
pub fn existence(scene: &Scene, yes: bool, vocab: &Vocab, rng: &mut Rng) -> Option<Qa> {
    if vocab.objects == crate::PopeObjects::Shape {
        return shape_existence(scene, vocab, rng);
    }
    let (question, answer) = if yes {
        let o = *rng.choose(&scene.objects);
        let np = format!("{} {}", o.colour.name(), o.shape.name());
        let matching: Vec<&Object> = scene
            .objects
            .iter()
            .filter(|p| p.colour == o.colour && p.shape == o.shape)
            .collect();
        let a = if matching.len() == 1 {
            format!("Yes, there is {}.", located(&o))
        } else {
            format!(
                "Yes, there are {} {} {}.",
                number_word(matching.len()),
                o.colour.name(),
                o.shape.plural()
            )
        };
        (format!("Is there {} in the image?", with_article(&np)), a)
    } else {
        let adversarial = rng.chance(0.5);
        let (c, s) = absent_object(scene, rng, &vocab.colours, &vocab.shapes, adversarial)?;
        let np = format!("{} {}", c.name(), s.name());
        (
            format!("Is there {} in the image?", with_article(&np)),
            format!("No, there is no {np} in the image."),
        )
    };
    Some(Qa {
        category: Category::Existence,
        question,
        answer,
    })
}

/// "Is there a <shape> in the image?", the shape drawn uniformly and kept with a probability
/// that makes every shape's question "yes" exactly half of the time over the world's scenes
/// (`None` when not kept: [`dialogue`] asks a cell or attribute question instead, or moves to
/// the next category, so how many existence questions a dialogue gets never depends on its
/// scene). Frequent shapes are present
/// more often, so without this a question-only guess ("circle: yes, diamond: no") is right more
/// often than chance, and the experts learned that guess instead of looking (docs/demo.md; VQA
/// v2 balanced its questions' language prior for the same reason).
fn shape_existence(scene: &Scene, vocab: &Vocab, rng: &mut Rng) -> Option<Qa> {
    let i = rng.below(vocab.shapes.len());
    let s = vocab.shapes[i];
    let p = vocab.shape_presence[i];
    let matching: Vec<&Object> = scene.objects.iter().filter(|o| o.shape == s).collect();
    // P(yes | s) = p a_yes / (p a_yes + (1 - p) a_no) = 1/2.
    let keep = if matching.is_empty() { p / (1.0 - p) } else { (1.0 - p) / p };
    if !rng.chance(keep.min(1.0)) {
        return None;
    }
    let question = format!("Is there {} in the image?", with_article(s.name()));
    let answer = match matching.as_slice() {
        [] => format!("No, there is no {} in the image.", s.name()),
        [o] => format!("Yes, there is {}.", located(o)),
        m => format!("Yes, there are {} {}.", number_word(m.len()), s.plural()),
    };
    Some(Qa {
        category: Category::Existence,
        question,
        answer,
    })
}

/// "What is in the <cell>?" for a random cell (empty cells as often as the scene has them).
pub fn cell(scene: &Scene, rng: &mut Rng) -> Qa {
    let c = *rng.choose(&all_cells());
    let cn = c.name();
    let answer = match scene.at(c) {
        Some(o) => format!("There is {}.", located(o)),
        None => format!("There is nothing in the {cn}."),
    };
    Qa {
        category: Category::Description,
        question: format!("What is in the {cn}?"),
        answer,
    }
}

/// "What color / shape / size is the object in the <cell>?" about an occupied cell.
pub fn attribute(scene: &Scene, rng: &mut Rng) -> Qa {
    let o = *rng.choose(&scene.objects);
    let cn = o.cell.name();
    let (what, value) = match rng.below(3) {
        0 => ("color", o.colour.name().to_string()),
        1 => ("shape", with_article(o.shape.name())),
        _ => ("size", o.size.name().to_string()),
    };
    Qa {
        category: Category::Attribute,
        question: format!("What {what} is the object in the {cn}?"),
        answer: format!("The object in the {cn} is {value}."),
    }
}

fn counting(scene: &Scene, rng: &mut Rng, vocab: &Vocab) -> Qa {
    // The shape of a present object most of the time, else any shape (answers "no ...").
    let s = if rng.chance(0.7) {
        rng.choose(&scene.objects).shape
    } else {
        *rng.choose(&vocab.shapes)
    };
    let k = scene.objects.iter().filter(|p| p.shape == s).count();
    let answer = match k {
        0 => format!("There are no {} in the image.", s.plural()),
        1 => format!("There is one {}.", s.name()),
        _ => format!("There are {} {}.", number_word(k), s.plural()),
    };
    Qa {
        category: Category::Counting,
        question: format!("How many {} are there?", s.plural()),
        answer,
    }
}

fn relation(scene: &Scene, rng: &mut Rng) -> Qa {
    let i = rng.below(scene.objects.len());
    let o = scene.objects[i];
    // The shortest unique reference among colour+shape and size+colour+shape.
    let f = [
        Fields {
            size: false,
            ..FULL
        },
        FULL,
    ]
    .into_iter()
    .find(|f| is_unique(scene, i, *f))
    .unwrap_or(Fields::FULL);
    let r = noun_phrase(&o, f);
    let answer = if f.cell {
        format!("{} is in the {}.", capitalise(&format!("the {r}")), o.cell.name())
    } else {
        format!("The {r} is in the {}.", o.cell.name())
    };
    Qa {
        category: Category::Relation,
        question: format!("Where is the {r}?"),
        answer,
    }
}

fn reasoning(scene: &Scene, rng: &mut Rng) -> Option<Qa> {
    let forms = [
        (Extreme::Largest, "Which object is the largest?", "largest"),
        (Extreme::Smallest, "Which object is the smallest?", "smallest"),
        (Extreme::Leftmost, "Which object is the furthest to the left?", "left-most"),
        (Extreme::Rightmost, "Which object is the furthest to the right?", "right-most"),
        (Extreme::Topmost, "Which object is the highest?", "top-most"),
        (Extreme::Bottommost, "Which object is the lowest?", "bottom-most"),
    ];
    for _ in 0..8 {
        let (e, q, word) = *rng.choose(&forms);
        if let Some(i) = unique_argmax(scene, |o| e.key(o)) {
            let o = &scene.objects[i];
            return Some(Qa {
                category: Category::Reasoning,
                question: q.into(),
                answer: format!(
                    "The {word} object is the {} in the {}.",
                    noun_phrase(o, FULL),
                    o.cell.name()
                ),
            });
        }
    }
    None
}

/// Whether a question type reads one cell of the image (existence, cell, attribute by cell).
pub fn is_grounded(qa: &Qa) -> bool {
    matches!(qa.category, Category::Existence | Category::Attribute)
        || qa.question.starts_with("What is in the ")
}

/// One canonical question of `category`. Description is the caption or, half of the time,
/// "What is in the <cell>?"; existence asks about a present object when `yes`.
pub fn ask(scene: &Scene, category: Category, yes: bool, vocab: &Vocab, rng: &mut Rng) -> Option<Qa> {
    if scene.objects.is_empty() {
        return None;
    }
    match category {
        Category::Attribute => Some(attribute(scene, rng)),
        Category::Description => Some(if rng.chance(0.5) {
            Qa {
                category: Category::Description,
                question: DESCRIBE.into(),
                answer: caption(scene),
            }
        } else {
            cell(scene, rng)
        }),
        Category::Existence => existence(scene, yes, vocab, rng),
        Category::Counting => Some(counting(scene, rng, vocab)),
        Category::Reasoning => reasoning(scene, rng),
        Category::Relation => Some(relation(scene, rng)),
    }
}

/// A dialogue of `rounds` canonical rounds, `<image>` in the first human turn.
///
/// `grounded_fraction` is the share of rounds drawn from the grounded types (existence, "What is
/// in the <cell>?", attribute by cell; existence is `existence_share` of them and the other two
/// split the rest equally, the default 1/3 giving equal parts); the rest
/// are drawn from the six MRHal categories. With `grounded_fraction = 0` every round is one of
/// the six categories in a shuffled order, as MRHal-Bench's dialogues are.
pub fn dialogue(
    scene: &Scene,
    rounds: usize,
    grounded_fraction: f64,
    existence_share: f64,
    vocab: &Vocab,
    rng: &mut Rng,
) -> (Vec<Turn>, Vec<Category>) {
    let equal_parts = existence_share == crate::config::EQUAL_PARTS;
    let mut cats: Vec<Category> = Category::ALL.to_vec();
    rng.shuffle(&mut cats);
    let mut turns = Vec::new();
    let mut used = Vec::new();
    let mut k = 0;
    let mut tries = 0;
    while used.len() < rounds && tries < 4 * rounds + 12 {
        tries += 1;
        // Each existence round asks about a present object with probability 1/2, independently:
        // answers that alternated within a dialogue (as they did up to GENERATOR_VERSION 1) let
        // a model read the second answer off the first instead of off the image, and the
        // experts learned exactly that (docs/demo.md, "The alternation leak").
        let yes = rng.chance(0.5);
        let qa = if rng.chance(grounded_fraction) {
            // One draw of three for equal parts (the bytes of worlds made before the share).
            let kind = if equal_parts {
                rng.below(3)
            } else if rng.chance(existence_share) {
                0
            } else {
                1 + rng.below(2)
            };
            match kind {
                // A shape question not kept becomes a cell or attribute round rather than
                // another draw: how many existence questions a dialogue gets must not depend on
                // the scene, or the per-shape balance of `shape_existence` would not hold.
                0 if vocab.objects == crate::PopeObjects::Shape => existence(scene, yes, vocab, rng)
                    .or_else(|| Some(if rng.chance(0.5) { cell(scene, rng) } else { attribute(scene, rng) })),
                0 => existence(scene, yes, vocab, rng),
                1 => Some(cell(scene, rng)),
                _ => Some(attribute(scene, rng)),
            }
        } else {
            let c = cats[k % cats.len()];
            k += 1;
            ask(scene, c, yes, vocab, rng)
        };
        let Some(qa) = qa else { continue };
        used.push(qa.category);
        push_round(&mut turns, qa);
    }
    (turns, used)
}

/// The caption conversation (stage-1 data and single-round description records).
pub fn caption_conversation(scene: &Scene) -> Vec<Turn> {
    vec![
        Turn::human(format!("{IMAGE_TOKEN}\n{DESCRIBE}")),
        Turn::gpt(caption(scene)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::{count_hallucinations, extract_claims};
    use crate::{Split, World, WorldConfig};

    fn world() -> World {
        World::new(WorldConfig {
            canonical: true,
            ..WorldConfig::small()
        })
        .unwrap()
    }

    #[test]
    fn canonical_answers_are_true_and_parse_into_claims() {
        let w = world();
        let v = w.config().vocab();
        let mut n_claims = 0;
        for i in 0..200 {
            let scene = w.scene(Split::Train, i);
            let mut rng = Rng::new(i as u64);
            let (turns, _) = dialogue(&scene, 6, 0.5, crate::config::EQUAL_PARTS, &v, &mut rng);
            assert_eq!(count_hallucinations(&scene, &turns), 0, "{turns:?}");
            assert_eq!(count_hallucinations(&scene, &caption_conversation(&scene)), 0);
            for pair in turns.chunks(2) {
                n_claims += extract_claims(&pair[1].value, Some(&pair[0].value)).len();
            }
        }
        assert!(n_claims > 1000, "{n_claims}");
    }

    #[test]
    fn shape_existence_names_shapes_only_is_true_and_balanced_per_shape() {
        let w = World::new(WorldConfig {
            canonical: true,
            pope_objects: crate::PopeObjects::Shape,
            existence_share: 0.8,
            ..WorldConfig::small()
        })
        .unwrap();
        let v = w.config().vocab();
        // (yes, no) per shape, and how often each shape is in a scene.
        let mut counts = vec![(0usize, 0usize); v.shapes.len()];
        let mut seen = vec![0usize; v.shapes.len()];
        let n_scenes = 3000;
        for i in 0..n_scenes {
            let scene = w.scene(Split::Train, i);
            for (k, s) in v.shapes.iter().enumerate() {
                seen[k] += usize::from(scene.objects.iter().any(|o| o.shape == *s));
            }
            let mut rng = Rng::new(7 + i as u64);
            let (turns, _) = dialogue(&scene, 4, 0.8, 0.8, &v, &mut rng);
            assert_eq!(count_hallucinations(&scene, &turns), 0, "{turns:?}");
            for pair in turns.chunks(2) {
                let q = pair[0].value.trim_start_matches("<image>\n");
                let Some(rest) = q.strip_prefix("Is there ") else { continue };
                // "a circle in the image?": an article, one shape word, no colour.
                let words: Vec<&str> = rest.split_whitespace().collect();
                assert_eq!(words.len(), 5, "{q}");
                let k = v.shapes.iter().position(|s| s.name() == words[1]).expect(q);
                let present = scene.objects.iter().any(|o| o.shape == v.shapes[k]);
                let a = &pair[1].value;
                assert_eq!(a.starts_with("Yes"), present, "{q} {a}");
                if present { counts[k].0 += 1 } else { counts[k].1 += 1 }
                if !present {
                    assert_eq!(a, &format!("No, there is no {} in the image.", words[1]));
                }
            }
        }
        // The analytic presence rates are the scenes' (skewed: the first shape is the most frequent).
        for (k, p) in v.shape_presence.iter().enumerate() {
            let f = seen[k] as f64 / n_scenes as f64;
            assert!((p - f).abs() < 0.03, "shape {k}: presence {p:.3} vs {f:.3} in the scenes");
        }
        assert!(v.shape_presence[0] > v.shape_presence[3] + 0.15, "{:?}", v.shape_presence);
        // Every shape's question is "yes" half of the time: no question-only shortcut.
        for (k, (yes, no)) in counts.iter().enumerate() {
            let share = *yes as f64 / (yes + no) as f64;
            assert!(yes + no > 300 && (0.45..=0.55).contains(&share), "shape {k}: {yes}:{no}");
        }
    }

    #[test]
    fn each_question_type_has_one_phrasing_and_existence_is_balanced() {
        let w = world();
        let v = w.config().vocab();
        let (mut yes, mut no, mut grounded, mut total) = (0, 0, 0, 0);
        // Consecutive existence answers in one dialogue: (same as the previous, pairs).
        let (mut same, mut pairs) = (0, 0);
        let mut forms = std::collections::BTreeSet::new();
        for i in 0..300 {
            let scene = w.scene(Split::Train, i);
            let mut rng = Rng::new(1000 + i as u64);
            let (turns, _) = dialogue(&scene, 4, 0.6, crate::config::EQUAL_PARTS, &v, &mut rng);
            let mut previous: Option<bool> = None;
            for pair in turns.chunks(2) {
                let q = pair[0].value.trim_start_matches("<image>\n");
                let a = &pair[1].value;
                total += 1;
                let qa = Qa { category: Category::Description, question: q.into(), answer: a.clone() };
                if q.starts_with("Is there") {
                    grounded += 1;
                    let y = a.starts_with("Yes");
                    if let Some(p) = previous {
                        pairs += 1;
                        same += usize::from(p == y);
                    }
                    previous = Some(y);
                    if y { yes += 1 } else { no += 1 }
                } else if is_grounded(&qa) || q.starts_with("What color") || q.starts_with("What shape") || q.starts_with("What size") {
                    grounded += 1;
                }
                // The question's form with attribute words and cells masked.
                let mut f = q.to_string();
                for word in ["top", "middle", "bottom", "left", "right", "center"] {
                    f = f.replace(word, "_");
                }
                forms.insert(f.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
            }
        }
        let share = yes as f64 / (yes + no) as f64;
        assert!((0.4..=0.6).contains(&share), "yes share {share}");
        // No alternation to read the next answer off: a repeat about as often as a change.
        let repeat = same as f64 / pairs as f64;
        assert!(pairs > 50 && (0.35..=0.65).contains(&repeat), "{same} repeats of {pairs}");
        assert!(grounded * 2 >= total, "{grounded}/{total} grounded");
        // Every question starts with one of the canonical leads.
        for f in &forms {
            assert!(
                ["Is there", "What is in", "What color is", "What shape is", "What size is", "Describe the image.", "How many", "Where is the", "Which object is"]
                    .iter()
                    .any(|l| f.starts_with(l)),
                "{f}"
            );
        }
    }
}
