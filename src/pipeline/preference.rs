//! The preference data (AMP §3.1): every expert answers every preference prompt (MEG, and IG
//! when configured), the gates check the experts are graded before any training (docs/demo.md),
//! the auto-check re-ranks the responses (§3.1.3), the K-level datasets are cut per variant, and
//! the ranking's quality is measured against the world's truth.
use super::experts::{ig_experts, ExpertEvaluation, Tower};
use super::run::{DemoRun, WorldData};
use super::stage::fingerprint_dir;
use super::{engine, gates, io_err, ranking, read_json, stage_err, write_json, DemoError, Result, Source, VariantKind};
use crate::adapters::BertEmbedder;
use amp_data::pipeline::{self as dp, CheckedRow, GeneratedRow, Shard};
use amp_data::{AutoCheckConfig, AutoChecker, Expert, InstructionRecord};
use mdpo::PreferenceExample;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// The response generators, by source.
pub(super) struct Pools {
    /// The preference prompts (`world/pref.json`, LLaVA records).
    pub prompts: Vec<InstructionRecord>,
    /// (source, [(expert name, model dir)], best first): the MEG pool, then the IG pool.
    pub pools: Vec<(Source, Vec<(String, PathBuf)>)>,
}

/// The pools the responses come from: the MEG experts largest first (AMP §3.1.1) and, with
/// `ig_parts > 0`, the Incremental Generation chain ([`ig_experts`]). Reads the preference
/// prompts.
pub(super) fn response_pools(run: &mut DemoRun, world: &WorldData, tower: &Tower, train: &[PreferenceExample]) -> Result<Pools> {
    let prompts = amp_data::load_llava(&run.paths.world().join("pref.json"), Some(&run.paths.images()))?;
    let ig_models = if run.cfg.ig_parts > 0 { ig_experts(run, world, tower, train)? } else { Vec::new() };
    let (cfg, paths) = (&run.cfg, &run.paths);
    let meg_models: Vec<(String, PathBuf)> =
        cfg.experts.iter().map(|e| (e.name.clone(), engine::model_dir(&paths.expert(&e.name)))).collect();
    let mut pools: Vec<(Source, Vec<(String, PathBuf)>)> = vec![(Source::Meg, meg_models)];
    if !ig_models.is_empty() {
        pools.push((Source::Ig, ig_models));
    }
    Ok(Pools { prompts, pools })
}

/// Stages `generate meg` / `generate ig` (AMP §3.1, MEG and IG): every model of a pool answers
/// every preference prompt, batched and memoised, then `amp_data::pipeline::generate` writes
/// `<run>/data/<source>/generated.jsonl` with the initial ranking (pool order). Keyed by the
/// world, the decoding and the fingerprints of the pool's model directories. Returns the rows by
/// source tag (`meg`, `ig`).
pub(super) fn generate_stage(run: &mut DemoRun, pools: &Pools) -> Result<BTreeMap<String, Vec<GeneratedRow>>> {
    let (cfg, paths, st) = run.parts();
    let pref_records = &pools.prompts;
    let mut generated: BTreeMap<String, Vec<GeneratedRow>> = BTreeMap::new();
    for (source, models) in &pools.pools {
        let tag = format!("{source:?}").to_lowercase();
        let out = paths.data().join(&tag).join("generated.jsonl");
        // The models' weights (not only their names) key the stage: an IG chain fine-tuned on
        // other data must not reuse old answers.
        let key = (cfg.world_key(), &cfg.gen, models.iter().map(|m| (&m.0, fingerprint_dir(&m.1))).collect::<Vec<_>>());
        st.run(&format!("generate {tag}"), &key, std::slice::from_ref(&out), |name| {
            let _ = std::fs::remove_file(&out); // a stale file of another config
            let dialogues: Vec<(Arc<Vec<u8>>, Vec<String>)> = pref_records
                .iter()
                .map(|r| {
                    let img = std::fs::read(&r.image).map_err(io_err(&r.image))?;
                    Ok((Arc::new(img), r.conversations.iter().filter(|t| t.from == "human").map(|t| t.value.clone()).collect()))
                })
                .collect::<Result<_>>()?;
            let mut experts = Vec::new();
            for (m, dir) in models {
                let chat = engine::chat(name, m, dir, &paths.tokenizer(), &cfg.gen)?;
                chat.prefill(&dialogues, &format!("{tag} {m}")).map_err(|e| stage_err(name, e))?;
                experts.push(Expert { name: m.clone(), generator: Arc::new(chat) });
            }
            let experts = amp_data::generate::multi_size_experts(experts, None)?;
            dp::generate(pref_records, &experts, &out, Shard::ALL, 1)?;
            Ok(())
        })?;
        generated.insert(tag, dp::load_rows(&out)?);
    }
    Ok(generated)
}

/// The gates (docs/demo.md, [`gates`]), computed before any preference training from the
/// experts' benchmark results and the MEG responses, printed and written to
/// `<run>/data/gates.json`: claim hallucination falls strictly with size, the base is between
/// 15% and 50%, adjacent levels of the largest MEG pool are ≥ 0.3 hallucinated claims apart,
/// and their yes/no flips are balanced. With `enforce_gates`, a failure ends the run
/// ([`DemoError::Gates`]).
pub(super) fn check_gates(run: &DemoRun, world: &WorldData, experts: &ExpertEvaluation, generated: &BTreeMap<String, Vec<GeneratedRow>>) -> Result<gates::Gates> {
    let (cfg, paths) = (&run.cfg, &run.paths);
    let (scenes, experts) = (&world.scenes, &experts.experts);
    let gates_path = paths.data().join("gates.json");
    let gate_pool: Vec<String> = cfg
        .variants
        .iter()
        .filter(|v| v.source == Source::Meg && v.kind == VariantKind::Preference && !v.pool.is_empty())
        .max_by_key(|v| v.levels)
        .map(|v| v.pool.clone())
        .unwrap_or_else(|| cfg.experts.iter().map(|e| e.name.clone()).collect());
    let expert_rates: Vec<(String, f64, Vec<(String, f64)>)> = experts
        .iter()
        .map(|e| {
            let dist = e
                .eval
                .grounding
                .iter()
                .filter_map(|(k, v)| k.strip_prefix("shape_share/").map(|s| (s.to_string(), *v)))
                .collect();
            (e.name.clone(), e.eval.claim_hallucination_rate(), dist)
        })
        .collect();
    let gate = gates::compute(&expert_rates, &cfg.base, &generated["meg"], &gate_pool, scenes);
    write_json(&gates_path, &gate)?;
    let gate_text = gates::lines(&gate).join("\n");
    eprintln!("[demo] gates (before preference training):\n{gate_text}");
    if cfg.enforce_gates && !gate.passed {
        return Err(DemoError::Gates { path: gates_path, text: gate_text });
    }
    Ok(gate)
}

/// The preference datasets and what the auto-check did.
pub(super) struct PreferenceData {
    /// Per preference variant: its AMP file's statistics.
    pub dataset_stats: BTreeMap<String, dp::DatasetStats>,
    /// Wrongly ordered pairs before and after the check, against the true hallucination counts.
    pub ranking: ranking::RankingQuality,
}

/// Stages `check <source>`, `dataset <variant>` and `ranking`:
/// * the auto-check (AMP §3.1.3) with the real all-MiniLM-L6-v2 for both the chunk and the
///   sentence metric re-ranks the generated responses (`data/<source>/checked.jsonl`), and the
///   unchecked initial ranking is kept for the ablation (`initial.jsonl`); the noun chunker is
///   `amp check`'s default ([`amp_data::NounChunker::auto`]: the spaCy port when its model is
///   installed, else the rule chunker); keyed by the generation's key, τ and the chunker's
///   identity ([`amp_data::NounChunker::identity`]: the model and the port's code version, or
///   [`amp_data::CHUNKER_VERSION`] for the rules; a changed chunker or a switch between them
///   re-checks);
/// * per preference variant, its K-level AMP file (`data/variants/<name>/amp.json` and
///   `stats.json`, `amp_data::pipeline::finalize`) from its pool ([`subset_rows`]);
/// * the ranking quality of the MEG check against the world's truth (`data/ranking.json`,
///   [`ranking::ranking_quality`]).
pub(super) fn preference_data(run: &mut DemoRun, world: &WorldData, generated: &BTreeMap<String, Vec<GeneratedRow>>) -> Result<PreferenceData> {
    let (cfg, paths, st) = run.parts();
    let scenes = &world.scenes;
    // Auto-check (real MiniLM sentence expert for both the chunk and the sentence metric).
    let mut checked: BTreeMap<String, (Vec<CheckedRow>, Vec<CheckedRow>)> = BTreeMap::new();
    // loaded once (the spaCy weights take a moment), used only by stages that run
    let chunker = amp_data::NounChunker::auto(None)?;
    let chunker_id = chunker.identity();
    for (tag, rows) in generated {
        let out = paths.data().join(tag).join("checked.jsonl");
        let out_init = paths.data().join(tag).join("initial.jsonl");
        let key = (st.key_of(&format!("generate {tag}")), cfg.tau, &chunker_id);
        st.run(&format!("check {tag}"), &key, &[out.clone(), out_init.clone()], |_| {
            let _ = std::fs::remove_file(&out);
            let _ = std::fs::remove_file(&out_init);
            let minilm = BertEmbedder::minilm()?;
            let checker = AutoChecker::new(chunker.clone(), &minilm, &minilm, AutoCheckConfig { tau: cfg.tau });
            dp::check(rows, Some(&checker), &out, Shard::ALL, 1)?;
            dp::check::<&BertEmbedder, &BertEmbedder>(rows, None, &out_init, Shard::ALL, 1)?;
            Ok(())
        })?;
        checked.insert(tag.clone(), (dp::load_rows(&out)?, dp::load_rows(&out_init)?));
    }

    // K-level datasets per variant.
    let mut dataset_stats = BTreeMap::new();
    for v in cfg.variants.iter().filter(|v| v.kind == VariantKind::Preference) {
        let tag = format!("{:?}", v.source).to_lowercase();
        let (chk, init) = &checked[&tag];
        let rows = if v.checked { chk } else { init };
        let dir = paths.data().join("variants").join(&v.name);
        let key = (st.key_of(&format!("check {tag}")), v.levels, v.checked, &v.pool);
        st.run(&format!("dataset {}", v.name), &key, &[dir.join("amp.json")], |_| {
            let sub = subset_rows(rows, v.levels, &v.pool);
            dp::finalize(sub, &dir)?;
            Ok(())
        })?;
        let s: dp::DatasetStats = read_json(&dir.join("stats.json"))?;
        dataset_stats.insert(v.name.clone(), s);
    }

    // Ranking quality of the auto-check against the world's truth.
    let ranking_path = paths.data().join("ranking.json");
    st.run("ranking", &st.key_of("check meg"), std::slice::from_ref(&ranking_path), |_| {
        write_json(&ranking_path, &ranking::ranking_quality(&checked["meg"].0, scenes))
    })?;
    let ranking: ranking::RankingQuality = read_json(&ranking_path)?;
    Ok(PreferenceData { dataset_stats, ranking })
}

/// Keep the generated responses of `pool` (expert names, best first) — or, with an empty pool,
/// `levels − 1` of them chosen by their *initial* rank as evenly spread over the pool as
/// possible ([`pick_levels`]) — and renumber the ranks. The check's verdict on each response
/// depends only on that response and the standard, so this equals checking the subset.
pub fn subset_rows(rows: &[CheckedRow], levels: usize, pool: &[String]) -> Vec<CheckedRow> {
    rows.iter()
        .map(|r| {
            let n = r.responses.len();
            let want = pick_levels(n, levels - 1);
            let mut row = r.clone();
            if pool.is_empty() {
                row.responses.retain(|x| want.contains(&(x.initial_rank - 1)));
            } else {
                row.responses.retain(|x| pool.contains(&x.source));
            }
            let mut by_init: Vec<usize> = row.responses.iter().map(|x| x.initial_rank).collect();
            by_init.sort_unstable();
            for (i, x) in row.responses.iter_mut().enumerate() {
                x.final_rank = i + 1;
                x.initial_rank = by_init.iter().position(|&k| k == x.initial_rank).expect("present") + 1;
            }
            row.changed = row.responses.iter().any(|x| x.final_rank != x.initial_rank);
            row
        })
        .collect()
}

/// `m` of `n` pool indices, evenly spread, always including the last (weakest); the first too
/// when `m ≥ 2`.
pub fn pick_levels(n: usize, m: usize) -> Vec<usize> {
    if m >= n {
        return (0..n).collect();
    }
    if m == 1 {
        return vec![n - 1];
    }
    let mut v: Vec<usize> = (0..m).map(|i| ((i as f64) * (n - 1) as f64 / (m - 1) as f64).round() as usize).collect();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_pick_levels_by_expert_name_and_renumber_them() {
        let conv = |a: &str| serde_json::json!([{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": a}]);
        let resp = |src: &str, init: usize, fin: usize| {
            serde_json::json!({"source": src, "initial_rank": init, "final_rank": fin, "conversation": conv(src), "check": null})
        };
        // The check swapped d64 and d48.
        let row: CheckedRow = serde_json::from_value(serde_json::json!({
            "id": "x", "index": 0, "image": "x.png", "standard": conv("std"), "standard_chunks": 1, "checked": true,
            "changed": true, "ties": 0,
            "responses": [resp("d96", 1, 1), resp("d48", 3, 2), resp("d64", 2, 3), resp("d32", 4, 4)],
        }))
        .unwrap();
        let pool = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let k2 = subset_rows(std::slice::from_ref(&row), 2, &pool(&["d96"]));
        assert_eq!(k2[0].responses.len(), 1);
        assert_eq!((k2[0].responses[0].source.as_str(), k2[0].responses[0].initial_rank, k2[0].responses[0].final_rank), ("d96", 1, 1));
        assert!(!k2[0].changed);
        let k3 = subset_rows(std::slice::from_ref(&row), 3, &pool(&["d96", "d64"]));
        let got: Vec<(&str, usize, usize)> = k3[0].responses.iter().map(|x| (x.source.as_str(), x.initial_rank, x.final_rank)).collect();
        assert_eq!(got, vec![("d96", 1, 1), ("d64", 2, 2)]);
        let k4 = subset_rows(std::slice::from_ref(&row), 4, &pool(&["d96", "d64", "d48"]));
        let got: Vec<(&str, usize, usize)> = k4[0].responses.iter().map(|x| (x.source.as_str(), x.initial_rank, x.final_rank)).collect();
        assert_eq!(got, vec![("d96", 1, 1), ("d48", 3, 2), ("d64", 2, 3)]);
        assert!(k4[0].changed);
    }

    #[test]
    fn level_picks_are_spread_and_keep_the_weakest() {
        assert_eq!(pick_levels(4, 1), vec![3]);
        assert_eq!(pick_levels(4, 2), vec![0, 3]);
        assert_eq!(pick_levels(4, 3), vec![0, 2, 3]);
        assert_eq!(pick_levels(4, 4), vec![0, 1, 2, 3]);
        assert_eq!(pick_levels(3, 5), vec![0, 1, 2]);
    }
}
