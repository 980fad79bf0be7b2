//! Every metric against hand-computed values on small files.

use std::path::Path;

use approx::assert_abs_diff_eq;
use mrhal_bench::answers::{load_answers, AnswerRecord, Benchmark};
use mrhal_bench::data::{load_mmhal, load_mrhal, load_pope};
use mrhal_bench::metrics::{llava_metrics, mmhal_metrics, mrhal_metrics, pope_metrics, pope_parse_yes};
use mrhal_bench::runner::{answer_hash, score_mmhal, score_mrhal, score_pope, JudgmentRecord};
use serde_json::json;

#[test]
fn mrhal_eq8_and_reference_code_variants() {
    // Dialogues: [6,2,4], [1,2], [5]
    // rounds = 6, Σ = 20 -> cumulative score 20/6 = 3.3333
    // rounds < 3: 2, 1, 2 -> cumulative hallucination 3/6 = 0.5
    // per-dialogue means 4, 1.5, 5 -> mean score 10.5/3 = 3.5
    // per-dialogue hallucinated fractions 1/3, 2/2, 0 -> paper mean rate (1/3+1+0)/3 = 4/9
    // dialogues with mean < 3: only [1,2] -> reference-code mean rate 1/3
    let m = mrhal_metrics(&[vec![6, 2, 4], vec![1, 2], vec![5]]).unwrap();
    assert_eq!((m.dialogues, m.rounds), (3, 6));
    assert_abs_diff_eq!(m.cumulative_score, 20.0 / 6.0, epsilon = 1e-12);
    assert_abs_diff_eq!(m.cumulative_hallucination_rate, 0.5, epsilon = 1e-12);
    assert_abs_diff_eq!(m.mean_score, 3.5, epsilon = 1e-12);
    assert_abs_diff_eq!(m.mean_hallucination_rate_paper, 4.0 / 9.0, epsilon = 1e-12);
    assert_abs_diff_eq!(m.mean_hallucination_rate_refcode, 1.0 / 3.0, epsilon = 1e-12);
    assert!(mrhal_metrics(&[]).is_none());
}

#[test]
fn mmhal_average_rate_and_types() {
    // ratings 5, 2, 0, 6 -> average 13/4 = 3.25; < 3: {2, 0} -> 0.5
    // attribute: (5+2)/2 = 3.5, counting 0, holistic 6
    let s = vec![("attribute".to_string(), 5), ("attribute".into(), 2), ("counting".into(), 0), ("holistic".into(), 6)];
    let m = mmhal_metrics(&s).unwrap();
    assert_abs_diff_eq!(m.average_score, 3.25, epsilon = 1e-12);
    assert_abs_diff_eq!(m.hallucination_rate, 0.5, epsilon = 1e-12);
    assert_eq!(m.per_type.len(), 3);
    assert_abs_diff_eq!(m.per_type["attribute"], 3.5, epsilon = 1e-12);
    assert_abs_diff_eq!(m.per_type["counting"], 0.0, epsilon = 1e-12);
    assert_abs_diff_eq!(m.per_type["holistic"], 6.0, epsilon = 1e-12);
}

#[test]
fn pope_parsing_follows_eval_pope() {
    assert!(pope_parse_yes("Yes, there is a dog in the image."));
    assert!(!pope_parse_yes("No."));
    assert!(!pope_parse_yes("no"));
    assert!(!pope_parse_yes("There is not a dog."));
    assert!(!pope_parse_yes("No, there is no dog."));
    // Only the first sentence counts.
    assert!(pope_parse_yes("Yes. There is no cat."));
    // The reference script's quirks are kept for comparability: matching is case-sensitive
    // and on single spaces, and "don't"/"NO" are not negations.
    assert!(pope_parse_yes("NO"));
    assert!(pope_parse_yes("I don't see one"));
}

#[test]
fn pope_confusion_metrics() {
    // (pred, label): TP×3, FP×1, TN×2, FN×2 -> N=8
    // acc = 5/8; P = 3/4; R = 3/5; F1 = 2·0.75·0.6/1.35 = 2/3; yes-ratio = 4/8
    let mut pairs = vec![(true, true); 3];
    pairs.push((true, false));
    pairs.extend([(false, false); 2]);
    pairs.extend([(false, true); 2]);
    let m = pope_metrics(&pairs).unwrap();
    assert_eq!((m.tp, m.fp, m.tn, m.fn_), (3, 1, 2, 2));
    assert_abs_diff_eq!(m.accuracy, 0.625, epsilon = 1e-12);
    assert_abs_diff_eq!(m.precision.unwrap(), 0.75, epsilon = 1e-12);
    assert_abs_diff_eq!(m.recall.unwrap(), 0.6, epsilon = 1e-12);
    assert_abs_diff_eq!(m.f1.unwrap(), 2.0 / 3.0, epsilon = 1e-12);
    assert_abs_diff_eq!(m.yes_ratio, 0.5, epsilon = 1e-12);
    // A model that never says yes has no precision (not 0, not 1).
    let m = pope_metrics(&[(false, true), (false, false)]).unwrap();
    assert!(m.precision.is_none() && m.f1.is_none());
    assert_abs_diff_eq!(m.recall.unwrap(), 0.0, epsilon = 1e-12);
}

#[test]
fn llava_relative_scores() {
    // conv: ref (8+10)/2 = 9, model (6+8)/2 = 7 -> 77.777...
    // detail: 5/5 -> 100
    // all: ref 23/3, model 19/3 -> 19/23·100 = 82.6087
    let pairs = vec![("conv".to_string(), [8.0, 6.0]), ("conv".into(), [10.0, 8.0]), ("detail".into(), [5.0, 5.0])];
    let m = llava_metrics(&pairs);
    assert_abs_diff_eq!(m["conv"].relative, 700.0 / 9.0, epsilon = 1e-9);
    assert_abs_diff_eq!(m["conv"].model_mean, 7.0, epsilon = 1e-12);
    assert_abs_diff_eq!(m["detail"].relative, 100.0, epsilon = 1e-12);
    assert_abs_diff_eq!(m["all"].relative, 1900.0 / 23.0, epsilon = 1e-9);
    assert_eq!(m["all"].n, 3);
}

fn write_lines<T: serde::Serialize>(p: &Path, recs: &[T]) {
    let s: String = recs.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect();
    std::fs::write(p, s).unwrap();
}

fn ans(bench: Benchmark, id: &str, round: usize, a: &str, meta: serde_json::Value) -> AnswerRecord {
    AnswerRecord {
        bench,
        id: id.into(),
        round,
        question: "q".into(),
        answer: a.into(),
        model: "m".into(),
        decoding: json!({"temperature": 0.0, "seed": 7}),
        meta,
    }
}

fn verdict(bench: Benchmark, id: &str, answers: &[&str], ok: bool, ratings: Vec<f64>) -> JudgmentRecord {
    let a: Vec<String> = answers.iter().map(|s| s.to_string()).collect();
    JudgmentRecord {
        bench,
        id: id.into(),
        answer_model: "m".into(),
        answer_hash: answer_hash(&a),
        ok,
        ratings,
        judge_model: ok.then(|| "gpt-4-0613".into()),
        prompt_hash: ok.then(|| "h1".into()),
        raw: None,
        error: (!ok).then(|| "unparsable".into()),
        judge_params: json!({"temperature": 0.0}),
    }
}

#[test]
fn mrhal_scoring_from_files_counts_missing_and_never_imputes() {
    let dir = tempfile::tempdir().unwrap();
    let gt = dir.path().join("eval_gt.json");
    let conv = |n: usize| {
        (0..n)
            .flat_map(|r| {
                [
                    json!({"from": "human", "value": if r == 0 { format!("<image>\nQ{r}") } else { format!("Q{r}") }}),
                    json!({"from": "gpt", "value": format!("R{r}")}),
                ]
            })
            .collect::<Vec<_>>()
    };
    let items: Vec<_> = [("d1", 3), ("d2", 2), ("d3", 1), ("d4", 2), ("d5", 1)]
        .iter()
        .map(|(id, n)| json!({"id": id, "image": format!("{id}.jpg"), "image_content": ["cat"], "label": "existence", "revised": conv(*n)}))
        .collect();
    std::fs::write(&gt, serde_json::to_string(&items).unwrap()).unwrap();
    let data = load_mrhal(&gt).unwrap();
    assert_eq!(data[0].questions, vec!["Q0", "Q1", "Q2"]);
    assert_eq!(data[0].references, vec!["R0", "R1", "R2"]);
    // d1..d4 answered completely, d5 not at all; d4 judged with a failure; d3 judged for
    // *other* answers (stale); d1, d2 valid. -> scored {d1, d2}; missing: no_answer 1 (d5),
    // judge_failed 1 (d4), not_judged 1 (d3).
    let b = Benchmark::Mrhal;
    let answers = dir.path().join("answers.jsonl");
    let mut recs = vec![];
    for (id, n) in [("d1", 3), ("d2", 2), ("d3", 1), ("d4", 2)] {
        for r in 0..n {
            recs.push(ans(b, id, r, &format!("{id}a{r}"), json!(null)));
        }
    }
    write_lines(&answers, &recs);
    let judg = dir.path().join("judgments.jsonl");
    write_lines(
        &judg,
        &[
            verdict(b, "d1", &["d1a0", "d1a1", "d1a2"], true, vec![6.0, 2.0, 4.0]),
            verdict(b, "d2", &["d2a0", "d2a1"], true, vec![1.0, 2.0]),
            verdict(b, "d3", &["something else"], true, vec![5.0]),
            verdict(b, "d4", &["d4a0", "d4a1"], false, vec![]),
        ],
    );
    let set = load_answers(&answers).unwrap();
    let r = score_mrhal(&data, &set, &judg).unwrap();
    assert_eq!((r.items_total, r.items_scored), (5, 2));
    assert_eq!((r.missing.no_answer, r.missing.judge_failed, r.missing.not_judged), (1, 1, 1));
    assert_eq!(r.missing.ids, vec!["d3", "d4", "d5"]);
    // Over [6,2,4],[1,2]: Σ=15 over 5 rounds = 3.0; <3: 3/5; means 4, 1.5 -> 2.75;
    // fractions 1/3, 1 -> 2/3; mean<3: 1 of 2 -> 0.5
    assert_abs_diff_eq!(r.metrics["cumulative_score"], 3.0, epsilon = 1e-12);
    assert_abs_diff_eq!(r.metrics["cumulative_hallucination_rate"], 0.6, epsilon = 1e-12);
    assert_abs_diff_eq!(r.metrics["mean_score"], 2.75, epsilon = 1e-12);
    assert_abs_diff_eq!(r.metrics["mean_hallucination_rate_paper"], 2.0 / 3.0, epsilon = 1e-12);
    assert_abs_diff_eq!(r.metrics["mean_hallucination_rate_refcode"], 0.5, epsilon = 1e-12);
    assert_eq!(r.judge_models["gpt-4-0613"], 2);
    assert_eq!(r.prompt_hashes["h1"], 2);
    assert_eq!(r.decoding["seed"], 7);
}

#[test]
fn mmhal_scoring_uses_question_type_then_index_mod_8() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("response_template.json");
    // 10 items; item 1 has an explicit type "counting", others none -> i % 8 types:
    // 0 attribute, 2 comparison, 8 attribute, 9 adversarial.
    let items: Vec<_> = (0..10)
        .map(|i| {
            let mut v = json!({"question": format!("q{i}"), "gt_answer": "g", "image_content": ["a"],
                "image_src": format!("https://x/y/img{i}.jpg"), "image_id": format!("i{i}")});
            if i == 1 {
                v["question_type"] = json!("counting");
            }
            v
        })
        .collect();
    std::fs::write(&p, serde_json::to_string(&items).unwrap()).unwrap();
    let data = load_mmhal(&p).unwrap();
    assert_eq!(data[1].type_name(), "counting");
    assert_eq!(data[8].type_name(), "attribute");
    assert_eq!(data[9].type_name(), "adversarial");
    let b = Benchmark::Mmhal;
    let answers = dir.path().join("a.jsonl");
    let ids = ["0", "1", "2", "8", "9"];
    write_lines(&answers, &ids.iter().map(|i| ans(b, i, 0, &format!("a{i}"), json!(null))).collect::<Vec<_>>());
    let judg = dir.path().join("j.jsonl");
    // ratings: 0->6, 1->1, 2->3, 8->2, 9->parse failure
    let mut js: Vec<_> = [("0", 6.0), ("1", 1.0), ("2", 3.0), ("8", 2.0)]
        .iter()
        .map(|(i, r)| verdict(b, i, &[&format!("a{i}")], true, vec![*r]))
        .collect();
    js.push(verdict(b, "9", &["a9"], false, vec![]));
    write_lines(&judg, &js);
    let r = score_mmhal(&data, &load_answers(&answers).unwrap(), &judg).unwrap();
    // scored 4: avg (6+1+3+2)/4 = 3.0; <3: {1,2} -> 0.5
    // attribute {6,2} -> 4, counting 1, comparison 3
    assert_eq!(r.items_scored, 4);
    assert_eq!(r.missing.total(), 6); // 5 unanswered + 1 judge failure
    assert_eq!(r.missing.judge_failed, 1);
    assert_abs_diff_eq!(r.metrics["average_score"], 3.0, epsilon = 1e-12);
    assert_abs_diff_eq!(r.metrics["hallucination_rate"], 0.5, epsilon = 1e-12);
    assert_abs_diff_eq!(r.metrics["type/attribute"], 4.0, epsilon = 1e-12);
    assert_abs_diff_eq!(r.metrics["type/counting"], 1.0, epsilon = 1e-12);
    assert_abs_diff_eq!(r.metrics["type/comparison"], 3.0, epsilon = 1e-12);
    assert!(!r.metrics.contains_key("type/adversarial"));
}

#[test]
fn pope_scoring_per_split_with_label_files() {
    let dir = tempfile::tempdir().unwrap();
    // LLaVA's test file: category, no labels.
    let test = dir.path().join("llava_pope_test.jsonl");
    let mut lines = vec![];
    for split in ["random", "adversarial"] {
        for q in 1..=4 {
            lines.push(json!({"question_id": q, "image": format!("COCO_{q}.jpg"), "text": "Is there a dog?", "category": split}));
        }
    }
    write_lines(&test, &lines);
    // Labels for random only: q1 yes, q2 yes, q3 no, q4 no.
    let lab = dir.path().join("coco_pope_random.json");
    write_lines(
        &lab,
        &(1..=4)
            .map(|q| json!({"question_id": q, "image": format!("COCO_{q}.jpg"), "text": "Is there a dog?", "label": if q <= 2 {"yes"} else {"no"}}))
            .collect::<Vec<_>>(),
    );
    let items = load_pope(&test, None).unwrap();
    let labels = load_pope(&lab, None).unwrap();
    assert_eq!(labels[0].split, "random");
    let b = Benchmark::Pope;
    // random answers: q1 "Yes" (TP), q2 "No, there is not." (FN), q3 "Yes there is" (FP),
    // q4 "No." (TN) -> acc 0.5, P 0.5, R 0.5, F1 0.5, yes-ratio 0.5.
    // adversarial q1..q3 answered, labels in meta: q1 yes/"Yes." TP, q2 no/"No" TN,
    // q3 yes/"no" FN -> acc 2/3, P 1, R 0.5, F1 2/3, yes-ratio 1/3; q4 unanswered.
    let mut recs = vec![];
    for (q, a) in [(1, "Yes"), (2, "No, there is not."), (3, "Yes there is"), (4, "No.")] {
        recs.push(ans(b, &format!("random/{q}"), 0, a, json!({"split": "random"})));
    }
    for (q, a, l) in [(1, "Yes.", "yes"), (2, "No", "no"), (3, "no", "yes")] {
        recs.push(ans(b, &format!("adversarial/{q}"), 0, a, json!({"split": "adversarial", "label": l})));
    }
    let answers = dir.path().join("a.jsonl");
    write_lines(&answers, &recs);
    let r = score_pope(&items, &labels, &load_answers(&answers).unwrap()).unwrap();
    assert_eq!(r.items_scored, 7);
    assert_eq!(r.missing.no_answer, 1);
    for k in ["accuracy", "precision", "recall", "f1", "yes_ratio"] {
        assert_abs_diff_eq!(r.metrics[&format!("random/{k}")], 0.5, epsilon = 1e-12);
    }
    assert_abs_diff_eq!(r.metrics["adversarial/accuracy"], 2.0 / 3.0, epsilon = 1e-12);
    assert_abs_diff_eq!(r.metrics["adversarial/precision"], 1.0, epsilon = 1e-12);
    assert_abs_diff_eq!(r.metrics["adversarial/recall"], 0.5, epsilon = 1e-12);
    assert_abs_diff_eq!(r.metrics["adversarial/f1"], 2.0 / 3.0, epsilon = 1e-12);
    assert_abs_diff_eq!(r.metrics["adversarial/yes_ratio"], 1.0 / 3.0, epsilon = 1e-12);
}
