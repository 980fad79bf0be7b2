//! The loss against Python oracles (tests/oracles/gen_mdpo.py): TRL's DPO formulas for K = 2
//! (sigmoid, cDPO label smoothing, hinge; loss, gradients, logged rewards) and the AMP authors'
//! own MDPO pair loop for K = 2..5 (loss and gradients, torch autograd in f64).
use mdpo::loss::{preference_loss, LossConfig, PairLoss};
use serde_json::Value;
use std::path::PathBuf;
use tch::Tensor;

fn fixtures() -> Value {
    let dir = std::env::var("AMP_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/oracle-fixtures")));
    let path = dir.join("mdpo").join("mdpo_loss.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "fixtures missing: run `bash scripts/test.sh` (or $AMP_PYTHON tests/oracles/gen_mdpo.py {})",
            dir.join("mdpo").display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

fn matrix(v: &Value) -> Tensor {
    let rows: Vec<Vec<f64>> = serde_json::from_value(v.clone()).unwrap();
    let k = rows.len() as i64;
    Tensor::from_slice(&rows.concat()).reshape([k, -1])
}

fn close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() <= 1e-12 * (1.0 + b.abs()), "{what}: {a} vs oracle {b}");
}

fn check_grad(pi: &Tensor, loss: &Tensor, want: &Value) {
    let g = Tensor::run_backward(&[loss], &[pi], false, false).remove(0);
    let want = matrix(want);
    let d = (&g - &want).abs().max().double_value(&[]);
    assert!(d < 1e-12, "gradient differs by {d}");
}

#[test]
fn k2_matches_trl_dpo() {
    let fx = fixtures();
    let cases = fx["k2"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for c in cases {
        let loss_type = match c["loss_type"].as_str().unwrap() {
            "sigmoid" => PairLoss::Sigmoid,
            _ => PairLoss::Hinge,
        };
        let cfg = LossConfig {
            beta: c["beta"].as_f64().unwrap(),
            label_smoothing: c["label_smoothing"].as_f64().unwrap(),
            loss: loss_type,
            ..LossConfig::dpo()
        };
        let pi = matrix(&c["policy"]).set_requires_grad(true);
        let rf = matrix(&c["reference"]);
        let out = preference_loss(&pi, &rf, &cfg).unwrap();
        close(out.loss.double_value(&[]), c["loss"].as_f64().unwrap(), "loss");
        let p = &out.metrics.pairs[0];
        close(p.chosen_reward, c["chosen_rewards"].as_f64().unwrap(), "rewards/chosen");
        close(p.rejected_reward, c["rejected_rewards"].as_f64().unwrap(), "rewards/rejected");
        close(p.accuracy, c["accuracy"].as_f64().unwrap(), "rewards/accuracies");
        close(p.margin, c["margin"].as_f64().unwrap(), "rewards/margins");
        check_grad(&pi, &out.loss, &c["grad"]);
    }
}

#[test]
fn mdpo_matches_the_authors_pair_loop() {
    let fx = fixtures();
    for c in fx["mdpo"].as_array().unwrap() {
        let cfg = LossConfig { beta: c["beta"].as_f64().unwrap(), ..LossConfig::mdpo() };
        let pi = matrix(&c["policy"]).set_requires_grad(true);
        let rf = matrix(&c["reference"]);
        let out = preference_loss(&pi, &rf, &cfg).unwrap();
        close(out.loss.double_value(&[]), c["loss"].as_f64().unwrap(), "mdpo loss");
        check_grad(&pi, &out.loss, &c["grad"]);
    }
}
