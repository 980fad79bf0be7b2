//! The demo's models as standard llava-hf checkpoint directories, loadable as they are by
//! `amp train` / `amp eval answer-local` (through [`mllm::llava::Llava::load`]) and by
//! transformers' `LlavaForConditionalGeneration` / `AutoProcessor`:
//!
//! ```text
//! config.json               LlavaConfig (text_config: llama, vision_config: clip_vision_model)
//! model.safetensors         llava-hf key names (language_model.model.*, vision_tower.vision_model.*,
//!                           multi_modal_projector.linear_{1,2}.*, language_model.lm_head.*)
//! tokenizer.json            the world's BPE tokenizer (<s>=1, </s>=2, <image>=3)
//! tokenizer_config.json     the chat template's special tokens
//! preprocessor_config.json  CLIPImageProcessor at the world's image size
//! ```
use super::{write_json, DemoError, Result};
use mllm::config::LlavaConfig;
use mllm::image_processor::ImageProcessor;
use serde_json::{json, Value};
use std::path::Path;

/// `preprocessor_config.json` of a CLIP image processor at `image_size` px (the values
/// [`ImageProcessor::clip`] uses, so both sides preprocess alike).
pub fn preprocessor_config(image_size: u32) -> Value {
    let p = ImageProcessor::clip(image_size, mllm::config::AspectRatio::Pad);
    json!({
        "image_processor_type": "CLIPImageProcessor",
        "processor_class": "LlavaProcessor",
        "size": {"shortest_edge": p.shortest_edge},
        "crop_size": {"height": p.crop_height, "width": p.crop_width},
        "do_resize": p.do_resize,
        "do_center_crop": p.do_center_crop,
        "do_rescale": p.do_rescale,
        "rescale_factor": p.rescale_factor,
        "do_normalize": p.do_normalize,
        "do_convert_rgb": true,
        "image_mean": p.image_mean,
        "image_std": p.image_std,
        "resample": 3,
    })
}

fn to_value(path: &Path, v: impl serde::Serialize) -> Result<Value> {
    serde_json::to_value(v).map_err(|source| DemoError::Json { path: path.into(), source })
}

/// The llava-hf `config.json` of `cfg`.
pub fn llava_config_json(cfg: &LlavaConfig, path: &Path) -> Result<Value> {
    let mut text = to_value(path, &cfg.text)?;
    text["model_type"] = json!("llama");
    // Optional fields left unset serialise as null; transformers wants them absent.
    if let Some(o) = text.as_object_mut() {
        o.retain(|_, v| !v.is_null());
    }
    let mut vision = to_value(path, &cfg.vision)?;
    vision["model_type"] = json!("clip_vision_model");
    vision["projection_dim"] = json!(cfg.vision.hidden_size);
    Ok(json!({
        "architectures": ["LlavaForConditionalGeneration"],
        "model_type": "llava",
        "text_config": text,
        "vision_config": vision,
        "image_token_index": cfg.image_token_id,
        "image_seq_length": cfg.image_tokens(),
        "vision_feature_layer": cfg.select_layer,
        "vision_feature_select_strategy": match cfg.select_feature {
            mllm::config::SelectFeature::Patch => "default",
            mllm::config::SelectFeature::ClsPatch => "full",
        },
        "projector_hidden_act": "gelu",
        "multimodal_projector_bias": cfg.projector_bias,
        "tie_word_embeddings": cfg.text.tie_word_embeddings,
        "torch_dtype": "float32",
    }))
}

/// Write everything but the weights into `dir`: `config.json`, `preprocessor_config.json`, the
/// tokenizer files.
pub fn write_configs(cfg: &LlavaConfig, image_size: u32, tokenizer: &Path, dir: &Path) -> Result<()> {
    let path = dir.join("config.json");
    write_json(&path, &llava_config_json(cfg, &path)?)?;
    write_json(&dir.join("preprocessor_config.json"), &preprocessor_config(image_size))?;
    let tok = dir.join("tokenizer.json");
    std::fs::copy(tokenizer, &tok).map_err(super::io_err(&tok))?;
    write_json(
        &dir.join("tokenizer_config.json"),
        &json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": "<s>",
            "eos_token": "</s>",
            "unk_token": "<unk>",
            "pad_token": "<unk>",
            "image_token": amp_world::text::IMAGE_TOKEN,
            "extra_special_tokens": {"image_token": amp_world::text::IMAGE_TOKEN},
            "model_max_length": cfg.text.max_position_embeddings,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_json_round_trips_through_mllm() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = LlavaConfig::small(48, 1, 300, 48);
        cfg.vision.patch_size = 16;
        cfg.select_layer = -1;
        cfg.image_token_id = 3;
        let path = dir.path().join("config.json");
        write_json(&path, &llava_config_json(&cfg, &path).unwrap()).unwrap();
        let back = LlavaConfig::from_dir(dir.path()).unwrap();
        assert_eq!(back.text, cfg.text);
        assert_eq!(back.vision, cfg.vision);
        assert_eq!((back.select_layer, back.image_token_id, back.image_tokens()), (-1, 3, 9));
        cfg.select_feature = mllm::config::SelectFeature::ClsPatch;
        write_json(&path, &llava_config_json(&cfg, &path).unwrap()).unwrap();
        let back = LlavaConfig::from_dir(dir.path()).unwrap();
        assert_eq!((back.select_feature, back.image_tokens()), (mllm::config::SelectFeature::ClsPatch, 10));
        let p = ImageProcessor::from_dir(dir.path(), 48, mllm::config::AspectRatio::Pad).unwrap();
        assert_eq!(p, ImageProcessor::clip(48, mllm::config::AspectRatio::Pad));
        std::fs::write(dir.path().join("preprocessor_config.json"), preprocessor_config(48).to_string()).unwrap();
        let p = ImageProcessor::from_dir(dir.path(), 48, mllm::config::AspectRatio::Pad).unwrap();
        assert_eq!(p, ImageProcessor::clip(48, mllm::config::AspectRatio::Pad));
    }
}
