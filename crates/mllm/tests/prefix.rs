//! `LlavaPreference::share_prefix`: the shared prompt prefix run once per example gives the same
//! log-probs and the same LoRA gradients as running every response row in full.
use mdpo::{PreferenceExample, PreferenceModel, Turn};
use mllm::lora::LoraConfig;
use mllm::preference::LlavaPreference;
use std::collections::BTreeMap;
use tch::{Kind, Tensor};

fn turn(from: &str, v: &str) -> Turn {
    Turn { from: from.into(), value: v.into() }
}

fn conv(turns: &[&str]) -> Vec<Turn> {
    turns.iter().enumerate().map(|(i, v)| turn(if i % 2 == 0 { "human" } else { "gpt" }, v)).collect()
}

/// Four examples with K responses each and different prefix lengths: with / without image, one
/// and two rounds, responses that share their first gpt turn (the common token prefix then runs
/// into the response and must be cut before it), responses that differ only in their last byte.
fn examples(img: &std::path::Path, k: usize) -> Vec<PreferenceExample> {
    let a = ["A cat.", "A dog on a mat.", "Nothing", "A cat!"];
    let b = ["Black.", "White.", "Red", "Black and white, with a long tail."];
    vec![
        PreferenceExample {
            id: "img-2round".into(),
            image: Some(img.into()),
            responses: (0..k).map(|i| conv(&["<image>\nWhat is shown?", a[i], "And the colour?", b[i]])).collect(),
        },
        PreferenceExample {
            id: "text-1round".into(),
            image: None,
            responses: (0..k).map(|i| conv(&["Hi", ["Hello!", "Go away.", "...", "Hello?"][i]])).collect(),
        },
        PreferenceExample {
            id: "same-first-answer".into(),
            image: Some(img.into()),
            responses: (0..k).map(|i| conv(&["Describe <image> briefly, please.", "It is a picture.", "More?", b[i]])).collect(),
        },
        PreferenceExample {
            id: "last-byte".into(),
            image: None,
            responses: (0..k)
                .map(|i| conv(&["A rather long question about nothing in particular", &format!("Answer number {i}")]))
                .collect(),
        },
    ]
}

fn write_image(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("img.png");
    let img = image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([(x * 6) as u8, (y * 8) as u8, 77]));
    img.save(&p).unwrap();
    p
}

fn model_with_lora() -> LlavaPreference {
    let mut pm = LlavaPreference::tiny(3).unwrap();
    pm.model.add_lora(&LoraConfig { r: 2, alpha: 4., dropout: 0., ..Default::default() }, 0).unwrap();
    // make the adapters matter (lora_B starts at 0)
    tch::no_grad(|| {
        for (i, (k, mut v)) in pm.trainable_vars().variables().into_iter().enumerate() {
            if k.contains("lora_B") {
                v.copy_(&(Tensor::randn(v.size(), (Kind::Float, v.device())) * 0.02 * (1 + i % 3) as f64));
            }
        }
    });
    pm
}

fn max_rel(a: &Tensor, b: &Tensor) -> f64 {
    let d = (a - b).abs();
    let s = a.abs().clamp_min(1.0);
    (d / s).max().double_value(&[])
}

/// (log-prob sums, weights, tokens, gradients of Σ sum w.r.t. every adapter)
fn run(pm: &LlavaPreference, ex: &[PreferenceExample], levels: std::ops::Range<usize>) -> (Tensor, Tensor, Tensor, BTreeMap<String, Tensor>) {
    let vars = pm.trainable_vars().variables();
    for v in vars.values() {
        let mut g = v.grad();
        if g.defined() {
            let _ = g.zero_();
        }
    }
    let batch = pm.encode(ex).unwrap();
    let l = pm.response_logps(&batch, levels, true).unwrap();
    // a loss that weighs levels/examples differently, as MDPO does
    let n = l.sum.numel() as i64;
    let coef = (Tensor::arange(n, (Kind::Float, l.sum.device())) + 1.0).view(l.sum.size().as_slice()) / n as f64;
    (&l.sum * coef).sum(Kind::Float).backward();
    let grads = vars.iter().map(|(k, v)| (k.clone(), v.grad().copy())).collect();
    (l.sum.detach(), l.weight, l.tokens, grads)
}

#[test]
fn shared_prefix_matches_full_rows() {
    // tiny tensors: more intra-op threads only contend on a shared CI machine
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let img = write_image(tmp.path());
    let mut pm = model_with_lora();
    assert!(pm.share_prefix, "share_prefix is on by default");
    for k in 2..=4 {
        let ex = examples(&img, k);
        // the whole batch and a mixed pair with different prefix lengths; with K = 4 also
        // sub-ranges of levels (a single level: no shared rows, the prefix is the prompt) and a
        // batch of one
        let mut cases = vec![(&ex[..], 0..k), (&ex[1..3], 0..k)];
        if k == 4 {
            cases.extend([(&ex[..], 1..3), (&ex[..1], 0..k), (&ex[2..], 0..1)]);
        }
        {
            for (sel, levels) in cases {
                pm.share_prefix = false;
                let (s0, w0, t0, g0) = run(&pm, sel, levels.clone());
                pm.share_prefix = true;
                let (s1, w1, t1, g1) = run(&pm, sel, levels.clone());
                assert_eq!(s0.size(), s1.size());
                let e = max_rel(&s0, &s1);
                assert!(e < 1e-5, "K={k} levels={levels:?}: log-prob sums differ by {e} (rel): {s0} vs {s1}");
                assert!(s0.abs().min().double_value(&[]) > 0.5, "non-trivial sums");
                assert_eq!((w0 - w1).abs().max().double_value(&[]), 0.);
                assert_eq!((t0 - t1).abs().max().double_value(&[]), 0.);
                let (mut gmax, mut grel) = (0f64, 0f64);
                for (name, a) in &g0 {
                    let b = &g1[name];
                    assert!(a.defined() && b.defined(), "{name}: missing gradient");
                    let scale = a.abs().max().double_value(&[]).max(1e-3);
                    let d = (a - b).abs().max().double_value(&[]);
                    assert!(d / scale < 1e-5 || d < 1e-7, "K={k} levels={levels:?} {name}: gradients differ by {d} (scale {scale})");
                    gmax = gmax.max(a.abs().max().double_value(&[]));
                    grel = grel.max(d / scale);
                }
                assert!(gmax > 1e-4, "the adapters get gradients");
                eprintln!("K={k} levels={levels:?} rows={}: max |Δ sum| = {:.2e} (max |sum| {:.1}), max rel Δ grad = {:.2e}", sel.len(), (&s0 - &s1).abs().max().double_value(&[]), s0.abs().max().double_value(&[]), grel);
            }
        }
    }
}

#[test]
fn shared_prefix_without_grad_and_without_lora() {
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let img = write_image(tmp.path());
    let mut pm = LlavaPreference::tiny(1).unwrap();
    let ex = examples(&img, 3);
    let batch = pm.encode(&ex).unwrap();
    let on = tch::no_grad(|| pm.response_logps(&batch, 0..3, false)).unwrap();
    pm.share_prefix = false;
    let off = tch::no_grad(|| pm.response_logps(&batch, 0..3, false)).unwrap();
    assert!(max_rel(&on.sum, &off.sum) < 1e-5, "{} vs {}", on.sum, off.sum);
    // image encoded per response row: still the same numbers
    pm.share_prefix = true;
    pm.share_image_encoding = false;
    let naive = tch::no_grad(|| pm.response_logps(&batch, 0..3, false)).unwrap();
    assert!(max_rel(&naive.sum, &off.sum) < 1e-5);
}
