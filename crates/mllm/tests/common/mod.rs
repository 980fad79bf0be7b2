#![allow(dead_code)]
use std::collections::HashMap;
use std::path::PathBuf;
use tch::Tensor;

pub fn fixtures() -> PathBuf {
    let base = std::env::var("AMP_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/oracle-fixtures")));
    let dir = base.join("llava");
    assert!(
        dir.join("oracle.json").exists(),
        "fixtures missing: run `bash scripts/test.sh` (or $AMP_PYTHON tests/oracles/gen_llava.py {})",
        dir.display()
    );
    dir
}

pub fn oracle_json() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("oracle.json")).unwrap()).unwrap()
}

pub fn oracle_tensors() -> HashMap<String, Tensor> {
    Tensor::read_safetensors(fixtures().join("oracle.safetensors")).unwrap().into_iter().collect()
}

pub fn ids(v: &serde_json::Value) -> Vec<i64> {
    v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}
