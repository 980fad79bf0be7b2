//! Gradient checkpointing (`LlavaPreference::grad_checkpoint`): the recomputed backward gives the
//! gradients of the plain backward (f32, relative 1e-6), with and without the shared prefix, and
//! with adapters in the vision tower (one segment per vision layer).
use mdpo::{PreferenceExample, PreferenceModel, Turn};
use mllm::config::LlavaConfig;
use mllm::lora::LoraConfig;
use mllm::preference::LlavaPreference;
use std::collections::BTreeMap;
use tch::{Kind, Tensor};

fn conv(turns: &[&str]) -> Vec<Turn> {
    turns.iter().enumerate().map(|(i, v)| Turn { from: if i % 2 == 0 { "human" } else { "gpt" }.into(), value: v.to_string() }).collect()
}

fn examples(img: &std::path::Path) -> Vec<PreferenceExample> {
    let a = ["A cat.", "A dog on a mat.", "Nothing", "A cat!"];
    let b = ["Black.", "White.", "Red", "Black and white, with a long tail."];
    vec![
        PreferenceExample {
            id: "img".into(),
            image: Some(img.into()),
            responses: (0..4).map(|i| conv(&["<image>\nWhat is shown?", a[i], "And the colour?", b[i]])).collect(),
        },
        PreferenceExample {
            id: "text".into(),
            image: None,
            responses: (0..4).map(|i| conv(&["Hi", ["Hello!", "Go away.", "...", "Hello?"][i]])).collect(),
        },
        PreferenceExample {
            id: "img2".into(),
            image: Some(img.into()),
            responses: (0..4).map(|i| conv(&["Describe <image> briefly.", a[(i + 1) % 4]])).collect(),
        },
    ]
}

fn write_image(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("img.png");
    image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([(x * 6) as u8, (y * 8) as u8, 77])).save(&p).unwrap();
    p
}

fn model(vision: bool) -> LlavaPreference {
    // 3 text layers so the chain has interior segments
    let mut pm = LlavaPreference::tiny_with(&LlavaConfig::small(64, 3, 260, 28), 5, tch::Device::Cpu).unwrap();
    let mut cfg = LoraConfig { r: 2, alpha: 4., dropout: 0., ..Default::default() };
    if vision {
        cfg.language_model_only = false;
        cfg.target_modules.extend(["out_proj", "fc1", "fc2"].map(String::from));
    }
    pm.model.add_lora(&cfg, 1).unwrap();
    tch::no_grad(|| {
        for (i, (k, mut v)) in pm.trainable_vars().variables().into_iter().enumerate() {
            if k.contains("lora_B") {
                v.copy_(&(Tensor::randn(v.size(), (Kind::Float, v.device())) * 0.02 * (1 + i % 3) as f64));
            }
        }
    });
    pm
}

fn grads(pm: &LlavaPreference, ex: &[PreferenceExample], g: &Tensor) -> BTreeMap<String, Tensor> {
    let vars = pm.trainable_vars().variables();
    for v in vars.values() {
        let mut gr = v.grad();
        if gr.defined() {
            let _ = gr.zero_();
        }
    }
    let batch = pm.encode(ex).unwrap();
    pm.backward_logps(&batch, 0..4, true, g).unwrap();
    // (adapters of vision layers after LLaVA's `select_layer` never run: no gradient)
    vars.iter().filter(|(_, v)| v.grad().defined()).map(|(k, v)| (k.clone(), v.grad().copy())).collect()
}

#[test]
fn checkpointed_gradients_equal_the_plain_backward() {
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let img = write_image(tmp.path());
    let ex = examples(&img);
    // an MDPO-like upstream gradient ∂L/∂sum, different for every level and example
    let g = (Tensor::arange(12, (Kind::Float, tch::Device::Cpu)).view([4, 3]) - 5.5) / 7.0;
    for vision in [false, true] {
        let mut pm = model(vision);
        for prefix in [true, false] {
            pm.share_prefix = prefix;
            pm.grad_checkpoint = false;
            let plain = grads(&pm, &ex, &g);
            pm.grad_checkpoint = true;
            assert!(pm.recomputes_activations());
            let ckpt = grads(&pm, &ex, &g);
            assert_eq!(plain.keys().collect::<Vec<_>>(), ckpt.keys().collect::<Vec<_>>());
            let mut worst = 0f64;
            let mut vision_vars = 0;
            for (name, a) in &plain {
                let b = &ckpt[name];
                assert!(a.defined() && b.defined(), "{name}: missing gradient");
                let scale = a.abs().max().double_value(&[]);
                assert!(scale > 0., "{name}: zero gradient");
                let rel = (a - b).abs().max().double_value(&[]) / scale;
                assert!(rel <= 1e-6, "vision={vision} prefix={prefix} {name}: relative difference {rel}");
                worst = worst.max(rel);
                vision_vars += name.contains("vision_tower") as usize;
            }
            assert_eq!(vision_vars > 0, vision);
            eprintln!("vision={vision} prefix={prefix}: {} adapters, worst relative gradient difference {worst:.2e}", plain.len());
        }
    }
}
