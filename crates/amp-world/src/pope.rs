//! POPE-style existence probes (docs/paper-notes.md §6): "Is there a `<colour> <shape>` in the image?"
//! with half yes / half no per image, and three kinds of negatives, as in POPE:
//! - random: absent categories drawn uniformly;
//! - popular: the most frequent categories of the probe set that are absent from the image;
//! - adversarial: absent categories most similar to the image's objects (sharing a colour or a
//!   shape with them; ties broken by co-occurrence with the image's categories, then frequency).
//!
//! A category is a (colour, shape) pair, or a shape alone when the world's
//! [`crate::WorldConfig::pope_objects`] is [`PopeObjects::Shape`] (POPE's own form: COCO object
//! categories, no attributes).
use crate::rng::Rng;
use crate::scene::{Colour, Scene, Shape};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The three POPE splits, in file order.
pub const POPE_SPLITS: [&str; 3] = ["adversarial", "popular", "random"];

/// One line of `coco_pope_<split>.json` (JSON lines).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PopeRecord {
    pub question_id: u64,
    /// Image file name (relative to the dataset's `images/` folder).
    pub image: String,
    pub text: String,
    /// "yes" or "no".
    pub label: String,
}

/// What an existence question (POPE's and the canonical dialogues') names as "the object".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PopeObjects {
    /// A colour-shape pair: "Is there a red circle in the image?" (a conjunction of two
    /// attributes, which the demo's small experts did not learn; docs/demo.md).
    #[default]
    ColourShape,
    /// A shape, the world's object category: "Is there a circle in the image?", as POPE asks
    /// about COCO categories without attributes.
    Shape,
}

impl PopeObjects {
    pub fn is_default(&self) -> bool {
        *self == PopeObjects::ColourShape
    }
}

/// The POPE question for a category (`None`: the shape alone).
pub fn pope_question(c: Option<Colour>, s: Shape) -> String {
    match c {
        Some(c) => format!("Is there a {} {} in the image?", c.name(), s.name()),
        None => format!("Is there a {} in the image?", s.name()),
    }
}

type Cat = (Option<Colour>, Shape);

fn present(scene: &Scene, objects: PopeObjects) -> Vec<Cat> {
    let mut p: Vec<Cat> = scene
        .objects
        .iter()
        .map(|o| match objects {
            PopeObjects::ColourShape => (Some(o.colour), o.shape),
            PopeObjects::Shape => (None, o.shape),
        })
        .collect();
    p.sort();
    p.dedup();
    p
}

/// Build the three splits over `scenes` (`image_of` maps a scene to its image file name).
/// Each image gets k = min(3, present categories, absent categories) yes and k no questions,
/// alternating (an image with no absent category gets none).
pub fn pope_splits(
    scenes: &[Scene],
    colours: &[Colour],
    shapes: &[Shape],
    objects: PopeObjects,
    seed: u64,
    image_of: impl Fn(&Scene) -> String,
) -> Vec<(String, Vec<PopeRecord>)> {
    let all: Vec<Cat> = match objects {
        PopeObjects::ColourShape => colours
            .iter()
            .flat_map(|&c| shapes.iter().map(move |&s| (Some(c), s)))
            .collect(),
        PopeObjects::Shape => shapes.iter().map(|&s| (None, s)).collect(),
    };
    let mut freq: HashMap<Cat, usize> = HashMap::new();
    let mut cooc: HashMap<(Cat, Cat), usize> = HashMap::new();
    for sc in scenes {
        let p = present(sc, objects);
        for &a in &p {
            *freq.entry(a).or_default() += 1;
            for &b in &p {
                if a != b {
                    *cooc.entry((a, b)).or_default() += 1;
                }
            }
        }
    }
    let mut out = Vec::new();
    for (si, split) in POPE_SPLITS.iter().enumerate() {
        let mut recs = Vec::new();
        let mut qid = 1u64;
        for (ii, sc) in scenes.iter().enumerate() {
            // Positives are the same in every split (as in POPE); negatives differ.
            let mut rng = Rng::keyed(&[seed, 0x909E, ii as u64]);
            let pres = present(sc, objects);
            let mut pos = pres.clone();
            rng.shuffle(&mut pos);
            let mut absent: Vec<Cat> = all.iter().copied().filter(|c| !pres.contains(c)).collect();
            // With 32 colour-shape pairs some are always absent; with 4 shapes not always.
            let k = pos.len().min(3).min(absent.len());
            pos.truncate(k);
            let mut nrng = Rng::keyed(&[seed, 0x909E, ii as u64, si as u64 + 1]);
            match *split {
                "random" => nrng.shuffle(&mut absent),
                "popular" => {
                    absent.sort_by_key(|c| std::cmp::Reverse(freq.get(c).copied().unwrap_or(0)))
                }
                _ => {
                    absent.sort_by_key(|c| {
                        let sim = pres.iter().filter(|p| p.0.is_some() && p.0 == c.0).count()
                            + pres.iter().filter(|p| p.1 == c.1).count();
                        let co: usize = pres
                            .iter()
                            .map(|p| cooc.get(&(*p, *c)).copied().unwrap_or(0))
                            .sum();
                        std::cmp::Reverse((sim, co, freq.get(c).copied().unwrap_or(0)))
                    })
                }
            }
            let neg: Vec<Cat> = absent.into_iter().take(k).collect();
            for (p, n) in pos.iter().zip(&neg) {
                for (c, label) in [(p, "yes"), (n, "no")] {
                    recs.push(PopeRecord {
                        question_id: qid,
                        image: image_of(sc),
                        text: pope_question(c.0, c.1),
                        label: label.into(),
                    });
                    qid += 1;
                }
            }
        }
        out.push((split.to_string(), recs));
    }
    out
}
