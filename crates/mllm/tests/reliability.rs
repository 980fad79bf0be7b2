//! Input that decides tensor shapes is refused with a typed error naming it, before libtorch sees
//! it (docs/reliability.md, "Sequence bounds and shapes"): a conversation longer than the model's
//! context or than a memory budget, a token id outside the embedding table, pixel values of the
//! wrong size. Each of these was a libtorch panic or allocation failure before.
use mdpo::{PreferenceExample, PreferenceModel, Turn};
use mllm::config::LlavaConfig;
use mllm::generation::{generate, GenerationConfig};
use mllm::image_processor::ImageProcessor;
use mllm::llava::{Llava, LoadOptions};
use mllm::preference::LlavaPreference;
use mllm::MllmError;
use tch::Tensor;

fn turn(from: &str, v: &str) -> Turn {
    Turn { from: from.into(), value: v.into() }
}

/// K = 2 examples; `answer` is the worse response of example `e1`.
fn examples(image: Option<&std::path::Path>, answer: &str) -> Vec<PreferenceExample> {
    let q = if image.is_some() { "<image>\nWhat is shown?" } else { "What is shown?" };
    ["e0", "e1"]
        .iter()
        .map(|id| PreferenceExample {
            id: id.to_string(),
            image: image.map(Into::into),
            responses: vec![
                vec![turn("human", q), turn("gpt", "A cat.")],
                vec![turn("human", q), turn("gpt", if *id == "e1" { answer } else { "A dog." })],
            ],
        })
        .collect()
}

/// The tiny model with its context cut to 256 positions.
fn short_context() -> LlavaPreference {
    let mut cfg = LlavaConfig::tiny();
    cfg.text.max_position_embeddings = 256;
    LlavaPreference::tiny_with(&cfg, 0, tch::Device::Cpu).unwrap()
}

#[test]
fn a_conversation_longer_than_the_context_is_refused_naming_the_example_and_max_len() {
    let mut pm = short_context();
    let long = "word ".repeat(2000);
    let ex = examples(None, &long);
    for e in [pm.check_examples(&ex).unwrap_err(), pm.encode(&ex).unwrap_err()] {
        assert!(matches!(e, MllmError::SequenceTooLong { .. }), "{e}");
        let m = e.to_string();
        for needle in ["example e1: response 1", "context of 256 tokens", "max_position_embeddings", "--max-len"] {
            assert!(m.contains(needle), "{needle:?} missing from {m}");
        }
    }
    // truncated to fit, it trains
    pm.max_len = Some(200);
    pm.check_examples(&ex).unwrap();
    let b = pm.encode(&ex).unwrap();
    assert_eq!(b.ids.size()[1], 200);
    // a --max-len above the context is named as the problem
    pm.max_len = Some(5000);
    let m = pm.check_examples(&ex).unwrap_err().to_string();
    assert!(m.contains("--max-len 5000 is above it"), "{m}");
}

#[test]
fn a_batch_over_the_memory_budget_is_refused_before_it_is_built() {
    let mut pm = LlavaPreference::tiny(0).unwrap();
    let ex = examples(None, "A bird.");
    pm.encode(&ex).unwrap();
    let need = mllm::bounds::activation_bytes(&pm.model.cfg, 4, 4, 60, false);
    assert!(need > 0);
    pm.memory_budget = Some(1024);
    let e = pm.encode(&ex).unwrap_err();
    let m = e.to_string();
    assert!(matches!(e, MllmError::SequenceTooLong { .. }) && m.contains("memory budget") && m.contains("--max-len"), "{m}");
    // the estimate grows with the square of the length (attention scores) and with the rows
    let cfg = &pm.model.cfg;
    let (a, b) = (mllm::bounds::activation_bytes(cfg, 4, 1, 1000, false), mllm::bounds::activation_bytes(cfg, 4, 1, 2000, false));
    assert!(b > 3 * a, "{a} {b}");
    assert_eq!(mllm::bounds::activation_bytes(cfg, 4, 3, 1000, false), 3 * a);
    assert!(mllm::bounds::activation_bytes(cfg, 4, 1, 1000, true) < a, "checkpointing keeps less");
}

/// The tiny model with a vocabulary smaller than the byte-level tokenizer's ids (a tokenizer
/// that does not belong to the model).
fn small_vocab() -> LlavaPreference {
    let mut cfg = LlavaConfig::tiny();
    cfg.text.vocab_size = 100;
    let model = Llava::random(&cfg, LoadOptions::default(), 0);
    let tok = mllm::conversation::ChatTokenizer::byte_level(cfg.image_tokens() as usize).unwrap();
    LlavaPreference::new(model, tok, ImageProcessor::clip(cfg.vision.image_size as u32, cfg.image_aspect_ratio))
}

#[test]
fn token_ids_outside_the_vocabulary_are_refused_not_a_libtorch_panic() {
    let pm = small_vocab();
    let ex = examples(None, "A bird.");
    for e in [pm.check_examples(&ex).unwrap_err(), pm.encode(&ex).unwrap_err()] {
        assert!(matches!(e, MllmError::TokenOutOfVocab { vocab: 100, .. }), "{e}");
        assert!(e.to_string().contains("example e0: response 0") && e.to_string().contains("vocabulary 0..100"), "{e}");
    }
    // the model's own entry points: forward, embed, generate
    let m = &pm.model;
    for bad in [150i64, -3] {
        let ids = Tensor::from_slice(&[1i64, 5, bad]).view([1, 3]);
        let e = m.forward(&ids, None, None).unwrap_err();
        assert!(matches!(e, MllmError::TokenOutOfVocab { id, .. } if id == bad), "{e}");
        let e = generate(m, &[vec![1, 5, bad]], None, &GenerationConfig::default(), None).unwrap_err();
        assert!(e.to_string().contains("prompt 0") && e.to_string().contains(&format!("token id {bad}")), "{e}");
    }
    assert!(m.forward(&Tensor::from_slice(&[1i64, 5, 99]).view([1, 3]), None, None).is_ok());
    let e = m.embed(&Tensor::from_slice(&[1i64, 5]), None).unwrap_err();
    assert!(e.to_string().contains("expected [B, T]"), "{e}");
}

#[test]
fn a_prompt_longer_than_the_context_is_refused_by_generate() {
    let pm = short_context();
    let e = generate(&pm.model, &[vec![1, 5], vec![5; 300]], None, &GenerationConfig::default(), None).unwrap_err();
    assert!(matches!(e, MllmError::SequenceTooLong { tokens: 300, .. }) && e.to_string().contains("prompt 1"), "{e}");
}

#[test]
fn pixel_values_of_the_wrong_size_are_refused_not_a_libtorch_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("img.png");
    image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([(x * 6) as u8, (y * 8) as u8, 77])).save(&img).unwrap();
    let mut pm = LlavaPreference::tiny(0).unwrap();
    let s = pm.model.cfg.vision.image_size;
    let ids = Tensor::from_slice(&vec![pm.model.cfg.image_token_id; pm.model.cfg.image_tokens() as usize]).view([1, -1]);
    assert!(pm.model.forward(&ids, Some(&Tensor::zeros([1, 3, s, s], tch::kind::FLOAT_CPU)), None).is_ok());
    for shape in [vec![1, 3, s - 8, s - 8], vec![1, 1, s, s], vec![3, s, s]] {
        let e = pm.model.forward(&ids, Some(&Tensor::zeros(&shape[..], tch::kind::FLOAT_CPU)), None).unwrap_err();
        assert!(matches!(&e, MllmError::PixelShape { actual, .. } if *actual == shape), "{e}");
    }
    // a preprocessor whose crop does not fit the vision tower: the example and image are named
    pm.images = ImageProcessor::clip(s as u32 - 8, pm.model.cfg.image_aspect_ratio);
    let e = pm.encode(&examples(Some(&img), "A bird.")).unwrap_err();
    assert!(matches!(e, MllmError::PixelShape { .. }), "{e}");
    assert!(e.to_string().contains("example e0: image") && e.to_string().contains("img.png"), "{e}");
    // an unreadable image fails the up-front check, naming the example
    std::fs::write(&img, b"not an image").unwrap();
    let e = pm.check_examples(&examples(Some(&img), "A bird.")).unwrap_err();
    assert!(e.to_string().contains("example e0: image") && e.to_string().contains("img.png"), "{e}");
}

#[test]
fn images_whose_preprocessing_would_build_a_huge_image_are_refused_before_allocating() {
    use mllm::config::AspectRatio;
    for ar in [AspectRatio::Pad, AspectRatio::Square] {
        let p = ImageProcessor::clip(336, ar);
        p.check_dimensions(|| "ok".into(), 640, 480).unwrap();
        // 1 x 30000: padded to a 30000² square, or resized to 336 x 10,080,000
        let e = p.check_dimensions(|| "example x: image a.png".into(), 1, 30_000).unwrap_err().to_string();
        assert!(e.contains("example x: image a.png: 1x30000 pixels"), "{e}");
        assert!(p.check_dimensions(|| "zero".into(), 0, 4).is_err());
    }
}
