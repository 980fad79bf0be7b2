//! POPE-style existence probes (docs/paper-notes.md §6): "Is there a `<colour> <shape>` in the image?"
//! with half yes / half no per image, and three kinds of negatives, as in POPE:
//! - random: absent categories drawn uniformly;
//! - popular: the most frequent categories of the probe set that are absent from the image;
//! - adversarial: absent categories most similar to the image's objects (sharing a colour or a
//!   shape with them; ties broken by co-occurrence with the image's categories, then frequency).
//!
//! A category is a (colour, shape) pair.
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

/// The POPE question for a category.
pub fn pope_question(c: Colour, s: Shape) -> String {
    format!("Is there a {} {} in the image?", c.name(), s.name())
}

type Cat = (Colour, Shape);

fn present(scene: &Scene) -> Vec<Cat> {
    let mut p: Vec<Cat> = scene.objects.iter().map(|o| o.category()).collect();
    p.sort();
    p.dedup();
    p
}

/// Build the three splits over `scenes` (`image_of` maps a scene to its image file name).
/// Each image gets k = min(3, distinct categories) yes and k no questions, alternating.
pub fn pope_splits(
    scenes: &[Scene],
    colours: &[Colour],
    shapes: &[Shape],
    seed: u64,
    image_of: impl Fn(&Scene) -> String,
) -> Vec<(String, Vec<PopeRecord>)> {
    let all: Vec<Cat> = colours
        .iter()
        .flat_map(|&c| shapes.iter().map(move |&s| (c, s)))
        .collect();
    let mut freq: HashMap<Cat, usize> = HashMap::new();
    let mut cooc: HashMap<(Cat, Cat), usize> = HashMap::new();
    for sc in scenes {
        let p = present(sc);
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
            let mut pos = present(sc);
            rng.shuffle(&mut pos);
            let k = pos.len().min(3);
            pos.truncate(k);
            let mut absent: Vec<Cat> = all
                .iter()
                .copied()
                .filter(|c| !present(sc).contains(c))
                .collect();
            let mut nrng = Rng::keyed(&[seed, 0x909E, ii as u64, si as u64 + 1]);
            match *split {
                "random" => nrng.shuffle(&mut absent),
                "popular" => {
                    absent.sort_by_key(|c| std::cmp::Reverse(freq.get(c).copied().unwrap_or(0)))
                }
                _ => {
                    let pres = present(sc);
                    absent.sort_by_key(|c| {
                        let sim = pres.iter().filter(|p| p.0 == c.0).count()
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
            if neg.len() < k {
                continue; // an image showing every category cannot be balanced
            }
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
