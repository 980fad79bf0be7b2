//! Benchmarking one saved model: the MRHal-style benchmark (rule judge, per-round verdicts and
//! claim counts) and POPE through `mrhal_bench`'s harness, plus the attribute accuracy of its
//! located claims (docs/demo.md, "Statistics").
use super::results::{EvalResult, ItemScore, RoundScore};
use super::run::{RunPaths, WorldData};
use super::stage::{fingerprint_dir, Stages};
use super::{engine, io_err, read_json, stage_err, write_json, DemoConfig, Result};
use crate::adapters::LlavaChat;
use amp_world::SceneIndex;
use mrhal_bench::answers::{mrhal_tasks, pope_tasks};
use mrhal_bench::{Benchmark, RunResults};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Attribute accuracy of the located object claims in a model's MRHal answers (`answers`, the
/// harness's stored answers of `tasks`).
fn grounding(tasks: &[mrhal_bench::AnswerTask], answers: &mrhal_bench::AnswerSet, scenes: &SceneIndex) -> Result<BTreeMap<String, f64>> {
    let mut t = amp_world::AttributeTally::default();
    for task in tasks {
        let scene = scenes.get(&task.id).ok_or_else(|| stage_err("eval", format!("no scene for benchmark item {}", task.id)))?;
        let Some(item) = answers.items.get(&task.id) else { continue };
        for (q, a) in task.questions.iter().zip(&item.rounds) {
            if let Some(a) = a {
                t.add_answer(scene, Some(q), a);
            }
        }
    }
    let mut m = BTreeMap::from([("located_claims".to_string(), t.located as f64)]);
    for (k, v) in [("shape_accuracy", t.shape_accuracy()), ("colour_accuracy", t.colour_accuracy()), ("size_accuracy", t.size_accuracy())] {
        if v.is_finite() {
            m.insert(k.to_string(), v);
        }
    }
    for (shape, share) in t.shape_distribution() {
        m.insert(format!("shape_share/{}", shape.name()), share);
    }
    Ok(m)
}

/// The rule judge's per-round verdicts and claim counts of a model's benchmark answers
/// (`amp_world::judge_dialogue` against the standard dialogue; a missing answer is judged as an
/// empty one, as the harness's missing rounds are never scored as right).
fn item_scores(world: &Path, answers: &mrhal_bench::AnswerSet, scenes: &SceneIndex) -> Result<Vec<ItemScore>> {
    let recs: Vec<amp_world::BenchRecord> = amp_world::dataset::read_json(&world.join("eval_gt.json"))?;
    let mut out = Vec::with_capacity(recs.len());
    for rec in &recs {
        let scene = scenes.get(&rec.id).ok_or_else(|| stage_err("eval", format!("no scene for benchmark item {}", rec.id)))?;
        let ans: Vec<String> = answers
            .items
            .get(&rec.id)
            .map(|it| it.rounds.iter().map(|a| a.clone().unwrap_or_default()).collect())
            .unwrap_or_default();
        let rounds = amp_world::judge_dialogue(scene, &rec.revised, &ans)
            .iter()
            .enumerate()
            .map(|(k, j)| RoundScore {
                category: rec.label.get(k).cloned().unwrap_or_default(),
                hallucinated: j.hallucinated(),
                claims: j.claims.iter().filter(|c| c.truth.is_some()).count(),
                hallucinated_claims: j.hallucinations,
            })
            .collect();
        out.push(ItemScore { id: rec.id.clone(), rounds });
    }
    Ok(out)
}

/// Stage `eval <name>`: evaluate the model saved in `dir` on the benchmark and POPE through
/// mrhal-bench's harness (answers are written and resumed by the harness; the rule judge rates
/// MRHal rounds). Reads the world's `eval_gt.json`, `pope/` and images; writes `eval/<name>/`
/// (answers, judgments, results and `result.json`, which it returns). Keyed by the model
/// directory's fingerprint ([`fingerprint_dir`]), the decoding and the world.
pub(super) fn evaluate(st: &mut Stages, paths: &RunPaths, cfg: &DemoConfig, world: &WorldData, name: &str, dir: &Path) -> Result<EvalResult> {
    let (judge, scenes) = (&world.judge, &world.scenes);
    let out = paths.eval(name);
    let result = out.join("result.json");
    // "v3": results since the per-item scores and question-free grounding.
    let key = (fingerprint_dir(dir), &cfg.gen, cfg.world_key(), "v3");
    st.run(&format!("eval {name}"), &key, std::slice::from_ref(&result), |stage| {
        if out.exists() {
            std::fs::remove_dir_all(&out).map_err(io_err(&out))?;
        }
        std::fs::create_dir_all(&out).map_err(io_err(&out))?;
        let items = mrhal_bench::data::load_mrhal(&paths.world().join("eval_gt.json"))?;
        let mut pope_items = Vec::new();
        for split in amp_world::pope::POPE_SPLITS {
            pope_items.extend(mrhal_bench::data::load_pope(&paths.world().join(format!("pope/coco_pope_{split}.json")), Some(split))?);
        }
        let chat: LlavaChat<engine::MllmChat> = engine::chat(stage, name, dir, &paths.tokenizer(), &cfg.gen)?;
        // Batched answers first (memoised), then the harness's own resumable answer loop.
        let mtasks = mrhal_tasks(&items);
        let ptasks = pope_tasks(&pope_items);
        let mut dialogues = Vec::new();
        for t in mtasks.iter().chain(&ptasks) {
            dialogues.push((Arc::new(t.image.load(Some(&paths.images()))?), t.questions.clone()));
        }
        chat.prefill(&dialogues, &format!("eval {name}")).map_err(|e| stage_err(stage, e))?;
        let ma = out.join("mrhal_answers.jsonl");
        let pa = out.join("pope_answers.jsonl");
        let s1 = mrhal_bench::generate_answers_sequential(&chat, Benchmark::Mrhal, &mtasks, &amp_io::paths::DataRoot::new(paths.images(), false), &ma)?;
        let s2 = mrhal_bench::generate_answers_sequential(&chat, Benchmark::Pope, &ptasks, &amp_io::paths::DataRoot::new(paths.images(), false), &pa)?;
        if !s1.failed.is_empty() || !s2.failed.is_empty() {
            return Err(stage_err(stage, format!("answer generation failed for {:?}", [s1.failed, s2.failed].concat())));
        }
        let mset = mrhal_bench::load_answers(&ma)?;
        let jpath = out.join("mrhal_judgments.jsonl");
        mrhal_bench::runner::judge_mrhal(judge, &items, &mset, &jpath, 1)?;
        let mres: RunResults = mrhal_bench::runner::score_mrhal(&items, &mset, &jpath)?;
        let pset = mrhal_bench::load_answers(&pa)?;
        let pres: RunResults = mrhal_bench::runner::score_pope(&pope_items, &pope_items, &pset)?;
        mrhal_bench::report::write_results(&out.join("mrhal_results.json"), &mres)?;
        mrhal_bench::report::write_results(&out.join("pope_results.json"), &pres)?;
        let r = EvalResult {
            model: name.into(),
            mrhal: mres.metrics.clone(),
            pope: pres.metrics.clone(),
            missing: mres.missing.total() + pres.missing.total(),
            grounding: grounding(&mtasks, &mset, scenes)?,
            items: item_scores(&paths.world(), &mset, scenes)?,
        };
        write_json(&result, &r)
    })?;
    read_json(&result)
}
