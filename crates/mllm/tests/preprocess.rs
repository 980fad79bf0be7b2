//! Image preprocessing (CLIPImageProcessor PIL backend + LLaVA pad-to-square), the vicuna_v1
//! training encoder, and error messages.
mod common;
use common::*;
use mllm::config::AspectRatio;
use mllm::conversation::ChatTokenizer;
use mllm::image_processor::ImageProcessor;
use mllm::llava::{LoadOptions, Llava};
use mllm::MllmError;

#[test]
fn pixel_values_match_clip_image_processor() {
    let dir = fixtures();
    let t = oracle_tensors();
    for (ar, key) in [(AspectRatio::Square, "pixel_values_plain"), (AspectRatio::Pad, "pixel_values_pad")] {
        let p = ImageProcessor::from_dir(&dir.join("hf"), 28, ar).unwrap();
        let px = p.preprocess_file(&dir.join("image.png")).unwrap().unsqueeze(0);
        let d = max_abs_diff(&px, &t[key]);
        assert!(d <= 1e-4, "{key}: max |Δ| = {d}");
    }
    // an upscaled image (20x12 → 28x28)
    let p = ImageProcessor::from_dir(&dir.join("hf"), 28, AspectRatio::Pad).unwrap();
    let px = p.preprocess_file(&dir.join("image2.png")).unwrap().unsqueeze(0);
    assert!(max_abs_diff(&px, &t["pixel_values2_pad"]) <= 1e-4);
}

#[test]
fn training_encoder_matches_reference_segmentation() {
    let dir = fixtures();
    let o = oracle_json();
    let m = Llava::load(&dir.join("hf"), LoadOptions::default()).unwrap();
    let tok = ChatTokenizer::from_model_dir(&dir.join("hf"), &m.cfg).unwrap();
    let turns: Vec<String> = o["train_turns"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect();
    let e = tok.encode(&turns, None).unwrap();
    assert_eq!(e.ids, ids(&o["train_ids"]));
    let mask: Vec<bool> = ids(&o["train_mask"]).iter().map(|&x| x == 1).collect();
    assert_eq!(e.response_mask, mask);
    assert_eq!(e.rounds, ids(&o["train_rounds"]));
    assert_eq!(e.images, 1);
    let w = e.weights();
    assert!(w.iter().zip(&e.rounds).all(|(w, r)| if *r < 0 { *w == 0. } else { (*w - (1. + 0.05 * *r as f32)).abs() < 1e-6 }));
    assert!(e.rounds.contains(&1));
    // generation prompt
    let g: Vec<String> = o["gen_turns"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect();
    assert_eq!(tok.encode(&g, None).unwrap().ids, ids(&o["gen_ids"]));
    // truncation: the tail only, never inside the image span
    let t = tok.encode(&turns, Some(50)).unwrap();
    assert_eq!(t.ids, e.ids[..50].to_vec());
    let img_start = e.ids.iter().position(|&i| i == tok.image_token_id).unwrap();
    let err = tok.encode(&turns, Some(img_start + 2)).unwrap_err();
    assert!(err.to_string().contains("image span"), "{err}");
}

#[test]
fn corrupt_image_error_names_the_file() {
    let dir = fixtures();
    let p = ImageProcessor::clip(28, AspectRatio::Pad);
    let err = p.preprocess_file(&dir.join("corrupt.png")).unwrap_err();
    assert!(matches!(err, MllmError::Image { .. }));
    assert!(err.to_string().contains("corrupt.png"), "{err}");
}

fn copy_dir(src: &std::path::Path, dst: &std::path::Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
}

fn rewrite(dir: &std::path::Path, f: impl Fn(&mut Vec<(String, tch::Tensor)>)) {
    let file = dir.join("model.safetensors");
    let mut v = tch::Tensor::read_safetensors(&file).unwrap();
    f(&mut v);
    tch::Tensor::write_safetensors(&v, &file).unwrap();
}

#[test]
fn checkpoint_errors_name_the_key() {
    let src = fixtures().join("hf");
    let tmp = tempfile::tempdir().unwrap();
    let key = "language_model.model.layers.1.mlp.up_proj.weight";
    // missing
    let d = tmp.path().join("missing");
    copy_dir(&src, &d);
    rewrite(&d, |v| v.retain(|(k, _)| k != key));
    let e = Llava::load(&d, LoadOptions::default()).unwrap_err();
    assert!(matches!(e, MllmError::MissingTensor { .. }) && e.to_string().contains(key), "{e}");
    // unexpected
    let d = tmp.path().join("unexpected");
    copy_dir(&src, &d);
    rewrite(&d, |v| v.push(("language_model.model.layers.9.extra.weight".into(), tch::Tensor::zeros([2], tch::kind::FLOAT_CPU))));
    let e = Llava::load(&d, LoadOptions::default()).unwrap_err();
    assert!(matches!(e, MllmError::UnexpectedTensor { .. }) && e.to_string().contains("layers.9.extra.weight"), "{e}");
    // shape mismatch
    let d = tmp.path().join("shape");
    copy_dir(&src, &d);
    rewrite(&d, |v| {
        for (k, t) in v.iter_mut() {
            if k == key {
                *t = t.narrow(0, 0, 3);
            }
        }
    });
    let e = Llava::load(&d, LoadOptions::default()).unwrap_err();
    assert!(matches!(e, MllmError::ShapeMismatch { .. }) && e.to_string().contains(key), "{e}");
}
