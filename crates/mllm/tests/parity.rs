//! Logit parity with transformers 5.x (`tests/oracles/gen_llava.py`) for every checkpoint layout.
mod common;
use common::*;
use mllm::llava::{LoadOptions, Llava};
use tch::Tensor;

fn check_logits(sub: &str, key: &str) {
    let dir = fixtures();
    let o = oracle_json();
    let t = oracle_tensors();
    let m = Llava::load(&dir.join(sub), LoadOptions::default()).unwrap_or_else(|e| panic!("{sub}: {e}"));
    let ids = Tensor::from_slice(&ids(&o["train_ids"])).unsqueeze(0);
    let logits = tch::no_grad(|| m.forward(&ids, Some(&t["pixel_values_pad"]), None)).unwrap();
    let want = &t[key];
    assert_eq!(logits.size(), want.size());
    let d = max_abs_diff(&logits, want);
    assert!(d <= 1e-4, "{sub}: max |Δlogits| = {d}");
}

#[test]
fn logits_match_transformers_llava_hf() {
    check_logits("hf", "logits");
}

#[test]
fn logits_match_transformers_sharded() {
    check_logits("hf_sharded", "logits");
}

#[test]
fn logits_match_transformers_tied_embeddings() {
    check_logits("hf_tied", "logits_tied");
}

/// `tie_word_embeddings: true` at the top level only (text_config says false): transformers ties.
#[test]
fn logits_match_transformers_tied_at_top_level_only() {
    check_logits("hf_tied_top", "logits_tied_top");
}

#[test]
fn logits_match_transformers_original_layout_separate_clip() {
    check_logits("original", "logits");
}

#[test]
fn logits_match_transformers_original_layout_embedded_tower() {
    check_logits("original_embedded", "logits");
}
