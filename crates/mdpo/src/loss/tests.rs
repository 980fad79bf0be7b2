//! Worked examples (by hand) and finite differences for every loss variant.
use tch::Tensor;
use super::*;

fn t(v: &[f64], k: i64) -> Tensor {
    Tensor::from_slice(v).reshape([k, -1])
}

#[test]
fn pair_sets() {
    assert_eq!(PairSet::All.pairs(3).unwrap(), vec![(0, 1), (0, 2), (1, 2)]);
    assert_eq!(PairSet::Adjacent.pairs(4).unwrap(), vec![(0, 1), (1, 2), (2, 3)]);
    assert_eq!(PairSet::TopVsRest.pairs(3).unwrap(), vec![(0, 1), (0, 2)]);
    assert!(PairSet::Explicit(vec![(1, 0)]).pairs(3).is_err());
    assert!(PairSet::Explicit(vec![(0, 3)]).pairs(3).is_err());
    assert!(PairSet::Explicit(vec![(0, 1), (0, 1)]).pairs(3).is_err());
    assert_eq!(PairSet::All.pairs(4).unwrap().len(), 6);
}

/// K = 4, B = 1, β = 0.1, worked by hand.
///
/// policy    = [-10, -12, -15, -20], reference = [-11, -11, -13, -16]
/// ratio ρ   = π − π_ref = [1, -1, -2, -4]
/// h_ij = ρ_i − ρ_j : h01 = 2, h02 = 3, h03 = 5, h12 = 1, h13 = 3, h23 = 2
/// −log σ(0.1·h) = softplus(−0.1·h):
///   h=1: ln(1+e^−0.1) = 0.6443966600735709
///   h=2: ln(1+e^−0.2) = 0.5981388693815918
///   h=3: ln(1+e^−0.3) = 0.5543552444685272
///   h=5: ln(1+e^−0.5) = 0.4740769841801067
/// Σ over 6 pairs = 0.5981388693815918 + 0.5543552444685272 + 0.4740769841801067
///                + 0.6443966600735709 + 0.5543552444685272 + 0.5981388693815918
///                = 3.4234618719539156
/// anchor = π_ref(y0) − π(y0) = −11 − (−10) = −1, added on the 3 pairs with winner 0 → −3
/// Sum (Eq. 7)   = 3.4234618719539156 − 3 = 0.4234618719539156
/// Mean (code)   = 0.4234618719539156 / 6 = 0.0705769786589859
/// Gradient wrt π (mean): d/dπ_i of softplus(−0.1 h) = −0.1·σ(−0.1 h) for the winner,
/// +0.1·σ(−0.1 h) for the loser; anchor adds −1 to π0 per winner-0 pair.
///   σ(−0.1)=0.47502081252106, σ(−0.2)=0.45016600268752, σ(−0.3)=0.42555748318834,
///   σ(−0.5)=0.37754066879815
///   dπ0 = [−0.1(0.45016600268752+0.42555748318834+0.37754066879815) − 3] / 6
///       = (−0.125326415467401 − 3)/6 = −0.5208877359112335
///   dπ3 = 0.1(0.37754066879815+0.42555748318834+0.45016600268752)/6 = 0.02088773591123350
#[test]
fn k4_by_hand() {
    let pi = t(&[-10.0, -12.0, -15.0, -20.0], 4).set_requires_grad(true);
    let rf = t(&[-11.0, -11.0, -13.0, -16.0], 4);
    let out = preference_loss(&pi, &rf, &LossConfig::mdpo()).unwrap();
    assert!((out.loss.double_value(&[]) - 0.0705769786589859).abs() < 1e-12);
    let sum_cfg = LossConfig { reduction: PairReduction::Sum, ..LossConfig::mdpo() };
    let s = preference_loss(&pi, &rf, &sum_cfg).unwrap().loss.double_value(&[]);
    assert!((s - 0.4234618719539156).abs() < 1e-12);
    let g = Tensor::run_backward(&[&out.loss], &[&pi], false, false);
    let g: Vec<f64> = Vec::try_from(g[0].flatten(0, -1)).unwrap();
    assert!((g[0] + 0.5208877359112335).abs() < 1e-12, "{g:?}");
    assert!((g[3] - 0.0208877359112335).abs() < 1e-12, "{g:?}");
    // all 6 pairs ordered correctly → accuracy 1, margin of (0,1) = 0.1·2
    let m = &out.metrics;
    assert_eq!(m.pairs.len(), 6);
    assert!(m.pairs.iter().all(|p| p.accuracy == 1.0));
    assert!((m.pairs[0].margin - 0.2).abs() < 1e-12);
    assert!((m.anchor + 1.0).abs() < 1e-12);
}

#[test]
fn adjacent_and_explicit_subsets() {
    let pi = t(&[-10.0, -12.0, -15.0, -20.0], 4);
    let rf = t(&[-11.0, -11.0, -13.0, -16.0], 4);
    // Adjacent: (0,1) h=2, (1,2) h=1, (2,3) h=2; anchor on (0,1) only.
    let cfg = LossConfig { pairs: PairSet::Adjacent, ..LossConfig::mdpo() };
    let l = preference_loss(&pi, &rf, &cfg).unwrap().loss.double_value(&[]);
    let want = (0.5981388693815918 + 0.6443966600735709 + 0.5981388693815918 - 1.0) / 3.0;
    assert!((l - want).abs() < 1e-12);
    // Explicit S>A & A>B without anchor equals the mean of the two DPO terms.
    let cfg = LossConfig { pairs: PairSet::Explicit(vec![(0, 1), (1, 2)]), ..LossConfig::dpo() };
    let l = preference_loss(&pi, &rf, &cfg).unwrap().loss.double_value(&[]);
    assert!((l - (0.5981388693815918 + 0.6443966600735709) / 2.0).abs() < 1e-12);
}

#[test]
fn ipo_hinge_smoothing_pl() {
    let pi = t(&[-1.0, -2.0], 2);
    let rf = t(&[-1.5, -1.5], 2); // h = 0.5 - (-0.5) = 1
    let beta = 0.5;
    let ipo = LossConfig { beta, loss: PairLoss::Ipo, anchor_weight: 0.0, ..LossConfig::mdpo() };
    let l = preference_loss(&pi, &rf, &ipo).unwrap().loss.double_value(&[]);
    assert!((l - 0.0).abs() < 1e-12); // (1 − 1/(2·0.5))² = 0
    let hinge = LossConfig { beta, loss: PairLoss::Hinge, anchor_weight: 0.0, ..LossConfig::mdpo() };
    let l = preference_loss(&pi, &rf, &hinge).unwrap().loss.double_value(&[]);
    assert!((l - 0.5).abs() < 1e-12); // relu(1 − 0.5)
    let cdpo = LossConfig { beta, label_smoothing: 0.1, ..LossConfig::dpo() };
    let l = preference_loss(&pi, &rf, &cdpo).unwrap().loss.double_value(&[]);
    // 0.9·ln(1+e^−0.5) + 0.1·ln(1+e^0.5)
    let want = 0.9 * (1.0f64 + (-0.5f64).exp()).ln() + 0.1 * (1.0f64 + 0.5f64.exp()).ln();
    assert!((l - want).abs() < 1e-12);
    // Plackett–Luce with K = 2 equals the DPO sigmoid loss.
    let pl = LossConfig { beta, objective: Objective::PlackettLuce, ..LossConfig::dpo() };
    let a = preference_loss(&pi, &rf, &pl).unwrap().loss.double_value(&[]);
    let b = preference_loss(&pi, &rf, &LossConfig { beta, ..LossConfig::dpo() }).unwrap().loss.double_value(&[]);
    assert!((a - b).abs() < 1e-12);
    assert!(LossConfig { label_smoothing: 0.6, ..LossConfig::dpo() }.validate(2).is_err());
}

/// Plackett–Luce K = 3 by hand: r = β ρ with β = 1, ρ = [0, -1, -2]:
/// stage 0: logsumexp(0,-1,-2) − 0 = ln(1 + e^−1 + e^−2) = 0.40760596444438
/// stage 1: logsumexp(-1,-2) + 1 = ln(1 + e^−1) = 0.31326168751822
#[test]
fn plackett_luce_k3() {
    let pi = t(&[0.0, -1.0, -2.0], 3);
    let rf = pi.zeros_like();
    let cfg = LossConfig {
        beta: 1.0,
        objective: Objective::PlackettLuce,
        reduction: PairReduction::Sum,
        ..LossConfig::dpo()
    };
    let l = preference_loss(&pi, &rf, &cfg).unwrap().loss.double_value(&[]);
    assert!((l - (0.40760596444438 + 0.31326168751822)).abs() < 1e-12);
}

/// Central finite differences (f64) of every variant against autograd.
#[test]
fn gradients_match_finite_differences() {
    let k = 4;
    let b = 3;
    let base: Vec<f64> = (0..k * b).map(|i| -5.0 - ((i * 37 % 11) as f64) * 0.7).collect();
    let refv: Vec<f64> = (0..k * b).map(|i| -6.0 - ((i * 13 % 7) as f64) * 0.9).collect();
    let rf = t(&refv, k as i64);
    let cfgs = vec![
        LossConfig::mdpo(),
        LossConfig { reduction: PairReduction::Sum, ..LossConfig::mdpo() },
        LossConfig { pairs: PairSet::Adjacent, label_smoothing: 0.2, ..LossConfig::mdpo() },
        LossConfig { loss: PairLoss::Ipo, ..LossConfig::mdpo() },
        LossConfig { loss: PairLoss::Hinge, beta: 0.01, ..LossConfig::mdpo() },
        LossConfig { objective: Objective::PlackettLuce, ..LossConfig::mdpo() },
    ];
    for cfg in cfgs {
        let pi = t(&base, k as i64).set_requires_grad(true);
        let out = preference_loss(&pi, &rf, &cfg).unwrap();
        let g = Tensor::run_backward(&[&out.loss], &[&pi], false, false);
        let g: Vec<f64> = Vec::try_from(g[0].flatten(0, -1)).unwrap();
        let e = 1e-6;
        for n in 0..k * b {
            let mut p = base.clone();
            p[n] += e;
            let lp = preference_loss(&t(&p, k as i64), &rf, &cfg).unwrap().loss.double_value(&[]);
            p[n] -= 2.0 * e;
            let lm = preference_loss(&t(&p, k as i64), &rf, &cfg).unwrap().loss.double_value(&[]);
            let fd = (lp - lm) / (2.0 * e);
            assert!((fd - g[n]).abs() < 1e-7, "{cfg:?} coord {n}: fd {fd} vs autograd {}", g[n]);
        }
    }
}
