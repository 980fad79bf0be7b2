//! Config validation: impossible sizes in a `config.json` are errors naming the file and the field,
//! never a division by zero, a panic or a libtorch allocation abort.
use mllm::config::LlavaConfig;
use mllm::llava::{LoadOptions, Llava};
use mllm::{BertConfig, ClipTextConfig, MllmError};
use serde_json::{json, Value};
use std::path::Path;

/// A llava-hf `config.json` of LLaVA-1.5-7B's shape (sizes from the defaults).
fn llava_hf() -> Value {
    json!({
        "architectures": ["LlavaForConditionalGeneration"],
        "image_token_index": 32000,
        "text_config": {"vocab_size": 32064, "num_key_value_heads": 32},
        "vision_config": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                          "num_attention_heads": 16, "image_size": 336, "patch_size": 14}
    })
}

fn write(dir: &Path, v: &Value) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), serde_json::to_string(v).unwrap()).unwrap();
}

/// `from_dir` and `load` both fail with a `Config` error naming `config.json` and `field`.
fn assert_rejected(v: &Value, field: &str) {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), v);
    for e in [LlavaConfig::from_dir(tmp.path()).unwrap_err(), Llava::load(tmp.path(), LoadOptions::default()).unwrap_err()] {
        match &e {
            MllmError::Config { path, message } => {
                assert!(path.ends_with("config.json"), "{e}");
                assert!(message.contains(field), "{field} not named: {e}");
            }
            other => panic!("expected a config error naming {field}, got {other}"),
        }
    }
}

#[test]
fn the_7b_shape_is_valid() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), &llava_hf());
    let c = LlavaConfig::from_dir(tmp.path()).unwrap();
    assert_eq!((c.text.hidden_size, c.image_tokens()), (4096, 576));
}

#[test]
fn zero_attention_heads_is_an_error() {
    let mut v = llava_hf();
    v["text_config"]["num_attention_heads"] = json!(0);
    assert_rejected(&v, "text_config.num_attention_heads");
    let mut v = llava_hf();
    v["vision_config"]["num_attention_heads"] = json!(0);
    assert_rejected(&v, "vision_config.num_attention_heads");
}

#[test]
fn zero_kv_heads_is_an_error() {
    let mut v = llava_hf();
    v["text_config"]["num_key_value_heads"] = json!(0);
    assert_rejected(&v, "text_config.num_key_value_heads");
    let mut v = llava_hf();
    v["text_config"]["num_key_value_heads"] = json!(5);
    assert_rejected(&v, "text_config.num_key_value_heads");
}

#[test]
fn zero_or_non_dividing_patch_size_is_an_error() {
    let mut v = llava_hf();
    v["vision_config"]["patch_size"] = json!(0);
    assert_rejected(&v, "vision_config.patch_size");
    let mut v = llava_hf();
    v["vision_config"]["patch_size"] = json!(13);
    assert_rejected(&v, "vision_config.patch_size");
}

#[test]
fn huge_vocab_is_an_error() {
    let mut v = llava_hf();
    v["text_config"]["vocab_size"] = json!(4_000_000_000i64);
    assert_rejected(&v, "text_config.vocab_size");
    // `4e9` is a float in JSON: rejected by the parser, which names the section.
    let tmp = tempfile::tempdir().unwrap();
    let text = serde_json::to_string(&llava_hf()).unwrap().replace("32064", "4e9");
    std::fs::write(tmp.path().join("config.json"), text).unwrap();
    let e = LlavaConfig::from_dir(tmp.path()).unwrap_err();
    assert!(matches!(&e, MllmError::Config { message, .. } if message.contains("text_config")), "{e}");
}

#[test]
fn other_sizes_are_checked() {
    for (section, field, value) in [
        ("text_config", "hidden_size", json!(-4096)),
        ("text_config", "num_hidden_layers", json!(0)),
        ("text_config", "rms_norm_eps", json!(0.0)),
        ("vision_config", "image_size", json!(0)),
        ("vision_config", "hidden_size", json!(1000)),
    ] {
        let mut v = llava_hf();
        v[section][field] = value;
        let name = if field == "hidden_size" && section == "vision_config" { "num_attention_heads" } else { field };
        assert_rejected(&v, &format!("{section}.{name}"));
    }
    let mut v = llava_hf();
    v["image_token_index"] = json!(40000);
    assert_rejected(&v, "image_token_index");
    let mut v = llava_hf();
    v["vision_feature_layer"] = json!(-30);
    assert_rejected(&v, "vision_feature_layer");
}

#[test]
fn original_layout_clip_dir_is_checked() {
    let tmp = tempfile::tempdir().unwrap();
    write(&tmp.path().join("clip"), &json!({"vision_config": {"patch_size": 0}}));
    write(tmp.path(), &json!({"mm_vision_tower": "clip", "mm_projector_type": "mlp2x_gelu"}));
    let e = LlavaConfig::from_dir(tmp.path()).unwrap_err();
    assert!(
        matches!(&e, MllmError::Config { path, message }
            if path.ends_with("clip/config.json") && message.contains("vision_config.patch_size")),
        "{e}"
    );
    write(&tmp.path().join("clip"), &json!({"vision_config": {}}));
    write(tmp.path(), &json!({"mm_vision_tower": "clip", "num_attention_heads": 0}));
    let e = LlavaConfig::from_dir(tmp.path()).unwrap_err();
    assert!(e.to_string().contains("`num_attention_heads`"), "{e}");
}

#[test]
fn text_encoder_configs_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("config.json");
    let bert = |v: Value| {
        std::fs::write(&p, v.to_string()).unwrap();
        BertConfig::from_file(&p)
    };
    let base = json!({"vocab_size": 30, "hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2,
                      "intermediate_size": 16});
    assert!(bert(base.clone()).is_ok());
    for (field, value) in [("num_attention_heads", 0i64), ("vocab_size", 4_000_000_000), ("intermediate_size", 0)] {
        let mut v = base.clone();
        v[field] = json!(value);
        let e = bert(v).unwrap_err();
        assert!(matches!(&e, MllmError::Config { message, .. } if message.contains(field)), "{e}");
    }
    let clip = |v: Value| {
        std::fs::write(&p, v.to_string()).unwrap();
        ClipTextConfig::from_file(&p)
    };
    assert!(clip(json!({})).is_ok());
    let e = clip(json!({"text_config": {"num_attention_heads": 0}})).unwrap_err();
    assert!(matches!(&e, MllmError::Config { message, .. } if message.contains("text_config.num_attention_heads")), "{e}");
    let e = clip(json!({"vocab_size": 4_000_000_000i64})).unwrap_err();
    assert!(matches!(&e, MllmError::Config { message, .. } if message.contains("vocab_size")), "{e}");
}
