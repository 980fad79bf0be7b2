//! Loader formats and errors that name the file, record and field.

use std::path::Path;

use approx::assert_abs_diff_eq;
use mrhal_bench::answers::{load_answers, AnswerRecord, Benchmark};
use mrhal_bench::data::{load_llava_bench, load_llava_rules, load_mmhal, load_mrhal, load_pope, ImageRef};
use mrhal_bench::runner::{answer_hash, score_llava, JudgmentRecord};
use serde_json::json;

fn write(p: &Path, s: &str) {
    std::fs::write(p, s).unwrap();
}

fn err_of<T: std::fmt::Debug>(r: mrhal_bench::Result<T>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn mrhal_repack_rows_with_json_string_fields_and_inline_image() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("rows.jsonl");
    let conv = json!([{"from":"human","value":"<image>\nWhat is it?"},{"from":"gpt","value":"A cat."},
                      {"from":"human","value":"Colour?"},{"from":"gpt","value":"Black."}]).to_string();
    let row = json!({"id": 7, "image": {"bytes": "iVBORw==", "path": null}, "image_name": "x.jpg",
                     "label": "[\"existence\", \"attribute\"]", "conversations": conv});
    write(&p, &format!("{row}\n"));
    let d = load_mrhal(&p).unwrap();
    assert_eq!(d[0].id, "7");
    assert_eq!(d[0].labels, vec!["existence", "attribute"]);
    assert_eq!(d[0].questions, vec!["What is it?", "Colour?"]);
    assert_eq!(d[0].references, vec!["A cat.", "Black."]);
    assert_eq!(d[0].image, ImageRef::Bytes(vec![0x89, b'P', b'N', b'G']));
    assert!(d[0].image_content.is_empty());
}

#[test]
fn mrhal_errors_name_record_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("eval_gt.json");
    write(&p, r#"[{"id":"a","image":"a.jpg","revised":[{"from":"human","value":"q"},{"from":"gpt","value":"r"}]},
                 {"id":"b","image":"b.jpg","revised":[{"from":"gpt","value":"q"},{"from":"human","value":"r"}]}]"#);
    let e = err_of(load_mrhal(&p));
    assert!(e.contains("eval_gt.json") && e.contains("record #1 (id=b)") && e.contains("revised[0].from"), "{e}");
    write(&p, r#"[{"id":"a","image":"a.jpg"}]"#);
    let e = err_of(load_mrhal(&p));
    assert!(e.contains("(id=a)") && e.contains("`revised`"), "{e}");
    write(&p, r#"[{"id":"a","image":"a.jpg","image_content":"cat","revised":[{"from":"human","value":"q"},{"from":"gpt","value":"r"}]}]"#);
    let e = err_of(load_mrhal(&p));
    assert!(e.contains("`image_content`") && e.contains("list of strings"), "{e}");
    write(&p, r#"[{"id":"a","revised":[{"from":"human","value":"q"}]}]"#);
    assert!(err_of(load_mrhal(&p)).contains("1 turns"));
    write(&p, r#"[{"id":"a","image":"a","revised":[{"from":"human","value":"q"},{"from":"gpt","value":"r"}]},
                 {"id":"a","image":"a","revised":[{"from":"human","value":"q"},{"from":"gpt","value":"r"}]}]"#);
    assert!(err_of(load_mrhal(&p)).contains("duplicate id"));
    write(&p, "[{\"id\": ");
    assert!(err_of(load_mrhal(&p)).contains("eval_gt.json"));
}

#[test]
fn mmhal_and_pope_errors_name_record_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("response_template.json");
    write(&p, r#"[{"image_id":"x1","question":"q","gt_answer":"g"},{"image_id":"x2","gt_answer":"g"}]"#);
    let e = err_of(load_mmhal(&p));
    assert!(e.contains("record #1 (image_id=x2)") && e.contains("`question`") && e.contains("missing"), "{e}");
    write(&p, r#"[{"image_id":"x1","question":"q","gt_answer":5}]"#);
    assert!(err_of(load_mmhal(&p)).contains("`gt_answer`: expected a string, found a number"));

    let p = dir.path().join("coco_pope_popular.json");
    write(&p, "{\"question_id\":1,\"image\":\"a.jpg\",\"text\":\"t\",\"label\":\"yes\"}\n{\"question_id\":2,\"image\":\"a.jpg\",\"text\":\"t\",\"label\":\"maybe\"}\n");
    let e = err_of(load_pope(&p, None));
    assert!(e.contains("coco_pope_popular.json") && e.contains("(question_id=2)") && e.contains("`label`"), "{e}");
    write(&p, "{\"question_id\":1,\"image\":\"a.jpg\",\"text\":\"t\"}\nnot json\n");
    assert!(err_of(load_pope(&p, None)).contains("line 2"));
    let q = dir.path().join("questions.jsonl");
    write(&q, "{\"question_id\":1,\"image\":\"a.jpg\",\"text\":\"t\"}\n");
    assert!(err_of(load_pope(&q, None)).contains("`category`"));
    assert_eq!(load_pope(&q, Some("random")).unwrap()[0].id(), "random/1");
}

#[test]
fn llava_bench_loads_context_and_scores_relative() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("qa90_questions.jsonl");
    let a = dir.path().join("qa90_gpt4_answer.jsonl");
    let c = dir.path().join("caps_boxes_coco2014_val_80.jsonl");
    let rules = dir.path().join("rule.json");
    write(&q, "{\"question_id\":0,\"image\":\"i0.jpg\",\"text\":\"What?\",\"category\":\"conv\"}\n\
               {\"question_id\":1,\"image\":\"i0.jpg\",\"text\":\"Describe.\",\"category\":\"detail\"}\n");
    write(&a, "{\"question_id\":0,\"text\":\"ref0\"}\n{\"question_id\":1,\"text\":\"ref1\"}\n");
    write(&c, "{\"image\":\"i0.jpg\",\"captions\":[\"A dog.\",\"A brown dog.\"],\"instances\":[{\"category\":\"dog\",\"bbox\":[0.1,0.2,1.0,0.5]}]}\n");
    write(&rules, r#"{"llava_bench_conv":{"role":"Assistant","prompt":"Rate them."}}"#);
    let items = load_llava_bench(&q, &a, &c).unwrap();
    assert_eq!(items[0].context, "A dog.\nA brown dog.\n\ndog: [0.1, 0.2, 1.0, 0.5]");
    assert_eq!(items[1].reference, "ref1");
    assert_eq!(load_llava_rules(&rules).unwrap()["llava_bench_conv"].prompt, "Rate them.");
    // Missing reference -> error naming the record.
    write(&a, "{\"question_id\":0,\"text\":\"ref0\"}\n");
    let e = err_of(load_llava_bench(&q, &a, &c));
    assert!(e.contains("qa90_questions.jsonl") && e.contains("(question_id=1)") && e.contains("no reference answer"), "{e}");

    // Scoring: conv [8, 6] -> 75; detail [5, 4] -> 80; all: ref 6.5, model 5 -> 76.923
    let b = Benchmark::Llava;
    let answers = dir.path().join("ans.jsonl");
    let rec = |id: &str, t: &str| AnswerRecord {
        bench: b,
        id: id.into(),
        round: 0,
        question: "q".into(),
        answer: t.into(),
        model: "m".into(),
        decoding: json!(null),
        meta: json!(null),
    };
    write(&answers, &format!("{}\n{}\n", serde_json::to_string(&rec("0", "x")).unwrap(), serde_json::to_string(&rec("1", "y")).unwrap()));
    let j = |id: &str, a: &str, s: [f64; 2]| JudgmentRecord {
        bench: b,
        id: id.into(),
        answer_model: "m".into(),
        answer_hash: answer_hash(&[a.to_string()]),
        ok: true,
        ratings: s.to_vec(),
        judge_model: Some("judge".into()),
        prompt_hash: Some("h".into()),
        raw: None,
        error: None,
        judge_params: json!(null),
    };
    let jp = dir.path().join("j.jsonl");
    write(&jp, &format!("{}\n{}\n", serde_json::to_string(&j("0", "x", [8.0, 6.0])).unwrap(), serde_json::to_string(&j("1", "y", [5.0, 4.0])).unwrap()));
    write(&a, "{\"question_id\":0,\"text\":\"ref0\"}\n{\"question_id\":1,\"text\":\"ref1\"}\n");
    let items = load_llava_bench(&q, &a, &c).unwrap();
    let r = score_llava(&items, &load_answers(&answers).unwrap(), &jp).unwrap();
    assert_abs_diff_eq!(r.metrics["conv/relative"], 75.0, epsilon = 1e-9);
    assert_abs_diff_eq!(r.metrics["detail/relative"], 80.0, epsilon = 1e-9);
    assert_abs_diff_eq!(r.metrics["all/relative"], 500.0 / 6.5, epsilon = 1e-9);
}
