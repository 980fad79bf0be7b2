//! `is_causal` attention (no mask tensor) where the mask is plainly causal equals the explicit
//! boolean / additive mask path (f32, 1e-5), for LLaMA layers, the whole LLaVA forward, and the
//! CLIP text encoder.
mod common;
use common::*;
use mllm::clip::{ClipActivation, ClipEncoder, ClipEncoderConfig};
use mllm::llama::{attention_mask, AttnMask};
use mllm::llava::{LoadOptions, Llava};
use tch::{nn, Device, Kind, Tensor};

#[test]
fn is_causal_equals_the_explicit_mask_in_every_llama_layer() {
    let m = Llava::load(&fixtures().join("hf"), LoadOptions::default()).unwrap();
    let lm = &m.language_model;
    let (b, t, d) = (2, 11, lm.cfg.hidden_size);
    tch::manual_seed(0);
    let x = Tensor::randn([b, t, d], (Kind::Float, Device::Cpu));
    let pos = Tensor::arange(t, (Kind::Int64, Device::Cpu)).unsqueeze(0).expand([b, t], false);
    let (cos, sin) = lm.rope(&pos, Kind::Float);
    // with no padding and no cache the mask is plainly causal
    let chosen = AttnMask::for_keys(Some(&Tensor::ones([b, t], (Kind::Int64, Device::Cpu))), b, t, 0, Device::Cpu);
    assert!(matches!(chosen, AttnMask::Causal));
    let explicit = AttnMask::Mask(attention_mask(None, b, t, 0, Device::Cpu));
    for (i, l) in lm.layers.iter().enumerate() {
        let a = tch::no_grad(|| l.forward(&x, &cos, &sin, &AttnMask::Causal, None, false));
        let e = tch::no_grad(|| l.forward(&x, &cos, &sin, &explicit, None, false));
        let diff = max_abs_diff(&a, &e);
        assert!(diff <= 1e-5, "layer {i}: {diff}");
    }
    // padding or a cache keeps the explicit mask
    let kv = Tensor::ones([b, t], (Kind::Int64, Device::Cpu));
    let _ = kv.get(1).narrow(0, t - 3, 3).fill_(0);
    assert!(matches!(AttnMask::for_keys(Some(&kv), b, t, 0, Device::Cpu), AttnMask::Mask(_)));
    assert!(matches!(AttnMask::for_keys(None, b, 3, 5, Device::Cpu), AttnMask::Mask(_)));
    assert!(matches!(AttnMask::for_keys(None, b, 1, 5, Device::Cpu), AttnMask::None));
}

#[test]
fn unpadded_rows_of_a_padded_batch_match_their_causal_forward() {
    let m = Llava::load(&fixtures().join("hf"), LoadOptions::default()).unwrap();
    let o = oracle_json();
    let px = &oracle_tensors()["pixel_values_pad"];
    let ids = ids(&o["train_ids"]);
    let n = ids.len() as i64;
    let one = Tensor::from_slice(&ids).unsqueeze(0);
    // all-ones validity: the is_causal path; the reference logits of the fixtures were checked
    // against transformers through the explicit-mask path before this change
    let causal = tch::no_grad(|| m.forward(&one, Some(px), Some(&Tensor::ones([1, n], (Kind::Int64, Device::Cpu))))).unwrap();
    let d = max_abs_diff(&causal, &oracle_tensors()["logits"]);
    assert!(d <= 1e-4, "is_causal forward vs transformers: {d}");
    // the same row beside a shorter, right-padded one: explicit mask
    let pad = Tensor::cat(&[one.narrow(1, 0, n - 4), Tensor::zeros([1, 4], (Kind::Int64, Device::Cpu))], 1);
    let two = Tensor::cat(&[one.shallow_clone(), pad], 0);
    let valid = Tensor::ones([2, n], (Kind::Int64, Device::Cpu));
    let _ = valid.get(1).narrow(0, n - 4, 4).fill_(0);
    let px2 = Tensor::cat(&[px, px], 0);
    let masked = tch::no_grad(|| m.forward(&two, Some(&px2), Some(&valid))).unwrap();
    let d = max_abs_diff(&causal.get(0), &masked.get(0));
    assert!(d <= 1e-5, "is_causal vs explicit mask: {d}");
}

#[test]
fn clip_text_causal_equals_the_additive_mask() {
    let vs = nn::VarStore::new(Device::Cpu);
    tch::manual_seed(1);
    let cfg = ClipEncoderConfig { hidden_size: 32, intermediate_size: 64, num_attention_heads: 4, num_hidden_layers: 2, layer_norm_eps: 1e-5, hidden_act: ClipActivation::QuickGelu };
    let weights = mllm::checkpoint::Weights::random();
    let enc = ClipEncoder::new(&mllm::checkpoint::VarBuilder::new(&vs, &weights), &cfg);
    let t = 9;
    let x = Tensor::randn([3, t, 32], (Kind::Float, Device::Cpu));
    let additive = Tensor::full([t, t], f64::NEG_INFINITY, (Kind::Float, Device::Cpu)).triu(1).view([1, 1, t, t]);
    let a = tch::no_grad(|| enc.forward(&x, Some(&additive)));
    let c = tch::no_grad(|| enc.forward_causal(&x));
    let d = max_abs_diff(&a, &c);
    assert!(d <= 1e-5, "{d}");
    assert!(max_abs_diff(&a, &tch::no_grad(|| enc.forward(&x, None))) > 1e-3, "the mask matters");
}
