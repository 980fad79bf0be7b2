//! How well a ranking orders responses by their true number of hallucinated claims.
//!
//! In the synthetic world every claim of a response can be checked against the scene graph
//! ([`amp_world::claims::count_hallucinations`]), so each response has a known number of
//! hallucinated claims. A ranked pair (i above j) is *wrong* when i has strictly more
//! hallucinated claims than j. The paper reports a 2.25% inconsistency rate for its auto-checked
//! data (paper §4.6; docs/paper-notes.md §3); we measure the same kind of number before (initial MEG/IG
//! order) and after the auto-check.
use amp_data::pipeline::CheckedRow;
use amp_world::claims::count_hallucinations;
use amp_world::{SceneIndex, Turn};
use serde::{Deserialize, Serialize};

/// Pair statistics of one ranking.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PairStats {
    /// Ranked pairs considered.
    pub pairs: usize,
    /// Pairs whose two responses have a different number of hallucinated claims.
    pub decided: usize,
    /// Pairs where the higher-ranked response has strictly more hallucinated claims.
    pub wrong: usize,
}

impl PairStats {
    /// wrong / pairs (ties in truth count as correctly ordered).
    pub fn wrong_rate(&self) -> f64 {
        if self.pairs == 0 {
            0.0
        } else {
            self.wrong as f64 / self.pairs as f64
        }
    }
    /// wrong / decided (only pairs the truth orders).
    pub fn wrong_rate_decided(&self) -> f64 {
        if self.decided == 0 {
            0.0
        } else {
            self.wrong as f64 / self.decided as f64
        }
    }
    fn add(&mut self, upper: usize, lower: usize) {
        self.pairs += 1;
        if upper != lower {
            self.decided += 1;
        }
        if upper > lower {
            self.wrong += 1;
        }
    }
}

/// Ranking quality of a data set before and after the auto-check.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RankingQuality {
    pub samples: usize,
    /// Samples with no scene (skipped).
    pub unknown_scene: usize,
    /// Pairs among generated responses, initial order.
    pub initial: PairStats,
    /// Pairs among generated responses, order after the auto-check.
    pub checked: PairStats,
    /// All pairs including the standard response (level 0), initial order.
    pub initial_with_standard: PairStats,
    /// All pairs including the standard response, after the check.
    pub checked_with_standard: PairStats,
    /// Mean hallucinated claims per response, by source (in initial-rank order of the first row).
    pub mean_hallucinations_by_source: Vec<(String, f64)>,
    /// Mean hallucinated claims of the standard responses (0 when the world's text is right).
    pub standard_mean_hallucinations: f64,
}

fn to_world(c: &[mdpo::Turn]) -> Vec<Turn> {
    c.iter().map(|t| Turn { from: t.from.clone(), value: t.value.clone() }).collect()
}

fn pairs_of(order: &[usize], stats: &mut PairStats) {
    // `order` lists hallucination counts from the top of the ranking down.
    for a in 0..order.len() {
        for b in a + 1..order.len() {
            stats.add(order[a], order[b]);
        }
    }
}

/// Measures `rows` (checked rows: each response carries its initial and final rank).
pub fn ranking_quality(rows: &[CheckedRow], scenes: &SceneIndex) -> RankingQuality {
    let mut q = RankingQuality::default();
    let mut by_source: Vec<(String, f64, usize)> = Vec::new();
    let mut std_sum = 0.0;
    for row in rows {
        let Some(scene) = scenes.get(&row.image) else {
            q.unknown_scene += 1;
            continue;
        };
        q.samples += 1;
        let std_h = count_hallucinations(scene, &to_world(&row.standard));
        std_sum += std_h as f64;
        let h: Vec<(usize, usize, usize)> = row
            .responses
            .iter()
            .map(|r| (r.initial_rank, r.final_rank, count_hallucinations(scene, &to_world(&r.conversation))))
            .collect();
        for (r, (_, _, n)) in row.responses.iter().zip(&h) {
            match by_source.iter_mut().find(|s| s.0 == r.source) {
                Some(s) => {
                    s.1 += *n as f64;
                    s.2 += 1;
                }
                None => by_source.push((r.source.clone(), *n as f64, 1)),
            }
        }
        let mut init = h.clone();
        init.sort_by_key(|x| x.0);
        let mut fin = h.clone();
        fin.sort_by_key(|x| x.1);
        let init: Vec<usize> = init.iter().map(|x| x.2).collect();
        let fin: Vec<usize> = fin.iter().map(|x| x.2).collect();
        pairs_of(&init, &mut q.initial);
        pairs_of(&fin, &mut q.checked);
        let with = |v: &[usize]| std::iter::once(std_h).chain(v.iter().copied()).collect::<Vec<_>>();
        pairs_of(&with(&init), &mut q.initial_with_standard);
        pairs_of(&with(&fin), &mut q.checked_with_standard);
    }
    // Sources in the initial-rank order of the first row.
    if let Some(first) = rows.first() {
        let mut order: Vec<(usize, String)> = first.responses.iter().map(|r| (r.initial_rank, r.source.clone())).collect();
        order.sort();
        by_source.sort_by_key(|s| order.iter().position(|o| o.1 == s.0).unwrap_or(usize::MAX));
    }
    q.mean_hallucinations_by_source = by_source.into_iter().map(|(s, t, n)| (s, t / n as f64)).collect();
    q.standard_mean_hallucinations = if q.samples > 0 { std_sum / q.samples as f64 } else { 0.0 };
    q
}

#[cfg(test)]
mod tests {
    use super::*;
    use amp_world::{Split, World, WorldConfig};

    fn conv(q: &str, a: &str) -> Vec<mdpo::Turn> {
        vec![
            mdpo::Turn { from: "human".into(), value: q.into() },
            mdpo::Turn { from: "gpt".into(), value: a.into() },
        ]
    }

    #[test]
    fn counts_wrongly_ordered_pairs_from_true_hallucinations() {
        let world = World::new(WorldConfig::tiny()).unwrap();
        let scene = world.scene(Split::Pref, 0);
        let o = scene.objects[0];
        let absent = amp_world::Colour::ALL
            .iter()
            .flat_map(|&c| amp_world::Shape::ALL.iter().map(move |&s| (c, s)))
            .filter(|(c, s)| !scene.objects.iter().any(|x| x.colour == *c && x.shape == *s))
            .take(2)
            .collect::<Vec<_>>();
        let q = "<image>\nDescribe the image.";
        let good = format!("There is a {} {} {} in the {}.", o.size.name(), o.colour.name(), o.shape.name(), o.cell.name());
        let one_bad = format!("There is a {} {} in the image.", absent[0].0.name(), absent[0].1.name());
        let two_bad = format!("{one_bad} There is a {} {} in the image.", absent[1].0.name(), absent[1].1.name());
        // Built from JSON so that fields amp-data adds later (with serde defaults) do not break it.
        let resp = |src: &str, init: usize, fin: usize, a: &str| {
            serde_json::json!({"source": src, "initial_rank": init, "final_rank": fin, "conversation": conv(q, a), "check": null})
        };
        // Initial order: two_bad (1) > good (2) > one_bad (3): pairs (2>0 wrong), (2>1 wrong), (0<1 ok).
        // After the check: good > one_bad > two_bad: all right.
        let row: CheckedRow = serde_json::from_value(serde_json::json!({
            "id": "x", "index": 0, "image": World::image_name(&scene.id), "standard": conv(q, &good),
            "standard_chunks": 1, "checked": true, "changed": true, "ties": 0,
            "responses": [resp("a", 2, 1, &good), resp("b", 3, 2, &one_bad), resp("c", 1, 3, &two_bad)],
        }))
        .unwrap();
        let q = ranking_quality(&[row], &SceneIndex::new(vec![scene.clone()]));
        assert_eq!(q.samples, 1);
        assert_eq!(q.initial, PairStats { pairs: 3, decided: 3, wrong: 2 });
        assert_eq!(q.checked, PairStats { pairs: 3, decided: 3, wrong: 0 });
        // With the standard (0 hallucinations) on top: 3 more pairs; initial has a 0 under it
        // (good), so decided = 3 + 2.
        assert_eq!(q.initial_with_standard, PairStats { pairs: 6, decided: 5, wrong: 2 });
        assert_eq!(q.standard_mean_hallucinations, 0.0);
        let by: Vec<&str> = q.mean_hallucinations_by_source.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(by, vec!["c", "a", "b"]);
        assert_eq!(q.mean_hallucinations_by_source[0].1, 2.0);
        assert!((q.initial.wrong_rate() - 2.0 / 3.0).abs() < 1e-12);
    }
}
