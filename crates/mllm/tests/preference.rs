//! The `mdpo::PreferenceModel` implementation: weights, shared vs per-response image encoding,
//! agreement with a direct computation from the logits, the adapter switch.
use mdpo::{PreferenceExample, PreferenceModel, Turn};
use mllm::lora::LoraConfig;
use mllm::preference::LlavaPreference;
use tch::{Kind, Tensor};

fn turn(from: &str, v: &str) -> Turn {
    Turn { from: from.into(), value: v.into() }
}

fn examples(img: &std::path::Path) -> Vec<PreferenceExample> {
    let conv = |a: &str, b: &str| {
        vec![
            turn("human", "<image>\nWhat is shown?"),
            turn("gpt", a),
            turn("human", "And the colour?"),
            turn("gpt", b),
        ]
    };
    vec![
        PreferenceExample {
            id: "0".into(),
            image: Some(img.into()),
            responses: vec![conv("A cat.", "Black."), conv("A dog on a mat.", "White."), conv("Nothing", "Red")],
        },
        PreferenceExample {
            id: "1".into(),
            image: None,
            responses: vec![
                vec![turn("human", "Hi"), turn("gpt", "Hello!")],
                vec![turn("human", "Hi"), turn("gpt", "Go away.")],
                vec![turn("human", "Hi"), turn("gpt", "...")],
            ],
        },
    ]
}

fn write_image(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("img.png");
    let img = image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([(x * 6) as u8, (y * 8) as u8, 77]));
    img.save(&p).unwrap();
    p
}

#[test]
fn response_logps_weights_and_sharing() {
    let tmp = tempfile::tempdir().unwrap();
    let img = write_image(tmp.path());
    let mut pm = LlavaPreference::tiny(0).unwrap();
    let ex = examples(&img);
    let batch = pm.encode(&ex).unwrap();
    assert_eq!(pm.batch_len(&batch), 2);
    let all = tch::no_grad(|| pm.response_logps(&batch, 0..3, false)).unwrap();
    assert_eq!(all.sum.size(), vec![3, 2]);
    // direct recomputation of level 1, example 0 from full logits
    let enc = pm
        .tokenizer
        .encode(&ex[0].responses[1].iter().map(|t| t.value.clone()).collect::<Vec<_>>(), None)
        .unwrap();
    let px = pm.images.preprocess_file(&img).unwrap().unsqueeze(0);
    let ids = Tensor::from_slice(&enc.ids).unsqueeze(0);
    let logits = tch::no_grad(|| pm.model.forward(&ids, Some(&px), None)).unwrap();
    let lp = logits.log_softmax(-1, Kind::Float);
    let (mut s, mut w, mut n) = (0f64, 0f64, 0f64);
    for t in 1..enc.ids.len() {
        let wt = enc.weights()[t] as f64;
        if wt > 0. {
            s += wt * lp.double_value(&[0, t as i64 - 1, enc.ids[t]]);
            w += wt;
            n += 1.;
        }
    }
    assert!((all.sum.double_value(&[1, 0]) - s).abs() < 1e-3, "{} vs {s}", all.sum.double_value(&[1, 0]));
    assert!((all.weight.double_value(&[1, 0]) - w).abs() < 1e-5);
    assert_eq!(all.tokens.double_value(&[1, 0]), n);
    // round-1 tokens weigh 1.05: weight > tokens
    assert!(w > n);
    // a sub-range of levels equals the matching rows
    let sub = tch::no_grad(|| pm.response_logps(&batch, 1..3, false)).unwrap();
    assert!((sub.sum - all.sum.narrow(0, 1, 2)).abs().max().double_value(&[]) < 1e-4);
    // naive per-response image encoding gives the same numbers
    pm.share_image_encoding = false;
    let naive = tch::no_grad(|| pm.response_logps(&batch, 0..3, false)).unwrap();
    assert!((naive.sum - &all.sum).abs().max().double_value(&[]) < 1e-4);
    pm.share_image_encoding = true;
    // adapters: off = base; trainable vars = adapters
    assert!(pm.set_adapters_enabled(false).is_err());
    pm.model.add_lora(&LoraConfig { r: 2, alpha: 4., dropout: 0., ..Default::default() }, 0).unwrap();
    tch::no_grad(|| {
        for (k, mut v) in pm.trainable_vars().variables() {
            if k.contains("lora_B") {
                let _ = v.fill_(0.05);
            }
        }
    });
    let on = tch::no_grad(|| pm.response_logps(&batch, 0..3, false)).unwrap();
    assert!((&on.sum - &all.sum).abs().max().double_value(&[]) > 1e-4);
    pm.set_adapters_enabled(false).unwrap();
    let off = tch::no_grad(|| pm.response_logps(&batch, 0..3, false)).unwrap();
    assert!((off.sum - &all.sum).abs().max().double_value(&[]) < 1e-5);
    pm.set_adapters_enabled(true).unwrap();
    // gradients flow to the adapters
    let l = pm.response_logps(&batch, 0..3, true).unwrap();
    l.sum.sum(Kind::Float).backward();
    assert!(pm.trainable_vars().variables().values().all(|v| v.grad().defined()));
    assert!(pm.encoding_fingerprint().contains("vicuna_v1"));
}

#[test]
fn bad_examples_are_errors() {
    let pm = LlavaPreference::tiny(0).unwrap();
    let mut ex = examples(std::path::Path::new("/nonexistent/img.png"));
    let e = pm.encode(&ex[..1]).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/img.png"), "{e}");
    ex[1].responses[0][0].from = "gpt".into();
    let e = pm.encode(&ex[1..]).unwrap_err().to_string();
    assert!(e.contains("example 1") && e.contains("turn 0"), "{e}");
}
