//! Generation parity with transformers' `generate` (greedy, beam 4, repetition penalty +
//! no_repeat_ngram, batched left-padded greedy) and KV-cache consistency.
mod common;
use common::*;
use mllm::generation::{generate, GenerationConfig, Strategy};
use mllm::llava::{LoadOptions, Llava};
use tch::Tensor;

fn model() -> Llava {
    Llava::load(&fixtures().join("hf"), LoadOptions::default()).unwrap()
}

fn cfg(strategy: Strategy) -> GenerationConfig {
    GenerationConfig { max_new_tokens: 12, strategy, ..Default::default() }
}

#[test]
fn greedy_beam_and_penalties_match_transformers() {
    let m = model();
    let o = oracle_json();
    let t = oracle_tensors();
    let px = &t["pixel_values_pad"];
    let prompt = ids(&o["gen_ids"]);
    let g = generate(&m, std::slice::from_ref(&prompt), Some(px), &cfg(Strategy::Greedy), None).unwrap();
    assert_eq!(g[0].ids, ids(&o["greedy"]), "greedy");
    let b = generate(&m, std::slice::from_ref(&prompt), Some(px), &cfg(Strategy::Beam { num_beams: 4, length_penalty: 1.0 }), None).unwrap();
    assert_eq!(b[0].ids, ids(&o["beam4"]), "beam 4");
    let mut c = cfg(Strategy::Greedy);
    c.repetition_penalty = 1.5;
    c.no_repeat_ngram_size = 2;
    let r = generate(&m, &[prompt], Some(px), &c, None).unwrap();
    assert_eq!(r[0].ids, ids(&o["greedy_rep1.5_ngram2"]), "repetition penalty + no_repeat_ngram");
}

#[test]
fn batched_left_padded_greedy_matches_transformers() {
    let m = model();
    let o = oracle_json();
    let t = oracle_tensors();
    let px = Tensor::cat(&[&t["pixel_values_pad"], &t["pixel_values2_pad"]], 0);
    let g = generate(&m, &[ids(&o["gen_ids"]), ids(&o["gen2_ids"])], Some(&px), &cfg(Strategy::Greedy), None).unwrap();
    let want = o["batch_greedy"].as_array().unwrap();
    assert_eq!(g[0].ids, ids(&want[0]));
    assert_eq!(g[1].ids, ids(&want[1]));
}

#[test]
fn kv_cache_decoding_equals_full_forward() {
    let m = model();
    let o = oracle_json();
    let t = oracle_tensors();
    let all = ids(&o["train_ids"]);
    let ids_t = Tensor::from_slice(&all).unsqueeze(0);
    tch::no_grad(|| {
        let full = m.forward(&ids_t, Some(&t["pixel_values_pad"]), None).unwrap();
        let feats = m.encode_images(&t["pixel_values_pad"], false).unwrap();
        let split = 40;
        let mut cache = m.new_cache();
        let e = m.embed(&ids_t.narrow(1, 0, split), Some(&feats)).unwrap();
        let a = m.logits_from_embeds(&e, None, Some(&mut cache), false);
        let mut parts = vec![a];
        for i in split..all.len() as i64 {
            let e = m.embed(&ids_t.narrow(1, i, 1), None).unwrap();
            parts.push(m.logits_from_embeds(&e, None, Some(&mut cache), false));
        }
        let inc = Tensor::cat(&parts, 1);
        assert!(max_abs_diff(&inc, &full) < 1e-4);
    });
}

#[test]
fn sampling_is_seeded_and_stop_strings_cut() {
    let m = model();
    let o = oracle_json();
    let t = oracle_tensors();
    let px = &t["pixel_values_pad"];
    let prompt = ids(&o["gen_ids"]);
    let s = |seed| cfg(Strategy::Sample { temperature: 1.5, top_p: 0.9, seed });
    let a = generate(&m, std::slice::from_ref(&prompt), Some(px), &s(7), None).unwrap();
    let b = generate(&m, std::slice::from_ref(&prompt), Some(px), &s(7), None).unwrap();
    assert_eq!(a, b);
    let outs: std::collections::HashSet<Vec<i64>> =
        (0..6).map(|k| generate(&m, std::slice::from_ref(&prompt), Some(px), &s(k), None).unwrap()[0].ids.clone()).collect();
    assert!(outs.len() > 1, "different seeds should give different samples");
    // top_p → 0 keeps only the most likely token: equals greedy.
    let g0 = generate(&m, std::slice::from_ref(&prompt), Some(px), &cfg(Strategy::Sample { temperature: 1.0, top_p: 0.0, seed: 1 }), None).unwrap();
    assert_eq!(g0[0].ids, ids(&o["greedy"]));
    // EOS: stop at the first greedy token if it is declared an EOS.
    let mut c = cfg(Strategy::Greedy);
    c.eos_ids = vec![ids(&o["greedy"])[1]];
    let e = generate(&m, std::slice::from_ref(&prompt), Some(px), &c, None).unwrap();
    assert_eq!(e[0].ids, ids(&o["greedy"])[..2].to_vec());
    // stop strings
    let tok = mllm::conversation::ChatTokenizer::from_model_dir(&fixtures().join("hf"), &m.cfg).unwrap();
    let full = generate(&m, std::slice::from_ref(&prompt), Some(px), &cfg(Strategy::Greedy), Some(&tok)).unwrap().remove(0);
    let text = full.text.unwrap();
    let word = text.split_whitespace().nth(1).expect("two words").to_string();
    let mut c = cfg(Strategy::Greedy);
    c.stop_strings = vec![word.clone()];
    let cut = generate(&m, &[prompt], Some(px), &c, Some(&tok)).unwrap().remove(0);
    let cut_text = cut.text.unwrap();
    assert!(!cut_text.contains(&word) && text.starts_with(&cut_text), "{text:?} / {cut_text:?}");
    assert!(cut.ids.len() < 12);
}

#[test]
fn chat_feeds_back_the_history() {
    let m = model();
    let o = oracle_json();
    let t = oracle_tensors();
    let tok = mllm::conversation::ChatTokenizer::from_model_dir(&fixtures().join("hf"), &m.cfg).unwrap();
    let turns: Vec<String> = o["gen_turns"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect();
    let mut chat = mllm::generation::Chat::new(Some(t["pixel_values_pad"].shallow_clone()));
    chat.turns = turns[..2].to_vec();
    let answer = chat.ask(&m, &tok, &turns[2], &cfg(Strategy::Greedy)).unwrap();
    assert_eq!(answer, tok.decode(&ids(&o["greedy"])).unwrap().trim());
    assert_eq!(chat.turns.len(), 4);
    assert_eq!(chat.turns[3], answer);
    // the next question is asked with the whole history (5 turns → a longer prompt)
    let again = chat.ask(&m, &tok, "What color is the circle?", &cfg(Strategy::Greedy)).unwrap();
    assert_eq!(chat.turns.len(), 6);
    assert_eq!(chat.turns[5], again);
}

#[test]
fn bfloat16_runs_through_the_same_code() {
    let m = Llava::load(&fixtures().join("hf"), LoadOptions { device: tch::Device::Cpu, kind: tch::Kind::BFloat16 }).unwrap();
    assert_eq!(m.kind(), tch::Kind::BFloat16);
    let o = oracle_json();
    let t = oracle_tensors();
    let ids_t = Tensor::from_slice(&ids(&o["train_ids"])).unsqueeze(0);
    let logits = tch::no_grad(|| m.forward(&ids_t, Some(&t["pixel_values_pad"]), None)).unwrap();
    assert_eq!(logits.kind(), tch::Kind::Float, "logits come back in f32");
    let want = &t["logits"];
    let d = max_abs_diff(&logits, want);
    let scale = want.abs().max().double_value(&[]);
    assert!(d < 0.1 * scale, "bf16 logits too far from f32: {d} (scale {scale})");
    let agree = logits.argmax(-1, false).eq_tensor(&want.argmax(-1, false)).to_kind(tch::Kind::Float).mean(tch::Kind::Float).double_value(&[]);
    assert!(agree > 0.8, "argmax agreement {agree}");
}

#[test]
fn batched_beam_equals_one_prompt_at_a_time() {
    // Beam search runs all prompts in one batch (left-padded, B·num_beams rows); each prompt's
    // result must be what it gets alone, and the first is transformers' beam-4 output.
    let m = model();
    let o = oracle_json();
    let t = oracle_tensors();
    let (p1, p2) = (ids(&o["gen_ids"]), ids(&o["gen2_ids"]));
    assert_ne!(p1.len(), p2.len(), "the test needs padding");
    let px = Tensor::cat(&[&t["pixel_values_pad"], &t["pixel_values2_pad"]], 0);
    for (rep, ngram) in [(1.0, 0), (1.3, 3)] {
        let mut c = cfg(Strategy::Beam { num_beams: 4, length_penalty: 1.0 });
        c.repetition_penalty = rep;
        c.no_repeat_ngram_size = ngram;
        let both = generate(&m, &[p1.clone(), p2.clone()], Some(&px), &c, None).unwrap();
        let one = generate(&m, std::slice::from_ref(&p1), Some(&t["pixel_values_pad"]), &c, None).unwrap();
        let two = generate(&m, std::slice::from_ref(&p2), Some(&t["pixel_values2_pad"]), &c, None).unwrap();
        assert_eq!(both[0].ids, one[0].ids, "prompt 1, penalty {rep}, ngram {ngram}");
        assert_eq!(both[1].ids, two[0].ids, "prompt 2, penalty {rep}, ngram {ngram}");
        if rep == 1.0 {
            assert_eq!(both[0].ids, ids(&o["beam4"]), "beam 4 vs transformers");
        }
    }
}

#[test]
fn preallocated_cache_equals_growing_cache() {
    // KvCache::with_capacity writes keys/values in place (and grows past its capacity by
    // doubling); KvCache::new concatenates. Same logits, also after a beam-style row reorder.
    let m = model();
    let o = oracle_json();
    let t = oracle_tensors();
    let all = ids(&o["train_ids"]);
    let ids_t = Tensor::from_slice(&all).unsqueeze(0).repeat([2, 1]);
    let n_layers = m.cfg.text.num_hidden_layers;
    tch::no_grad(|| {
        let feats = m.encode_images(&Tensor::cat(&[&t["pixel_values_pad"], &t["pixel_values_pad"]], 0), false).unwrap();
        let split = 40;
        let run = |mut cache: mllm::llama::KvCache| {
            let e = m.embed(&ids_t.narrow(1, 0, split), Some(&feats)).unwrap();
            let mut parts = vec![m.logits_from_embeds(&e, None, Some(&mut cache), false)];
            for i in split..all.len() as i64 {
                if i == split + 3 {
                    cache.index_select(&Tensor::from_slice(&[1i64, 0]));
                }
                let e = m.embed(&ids_t.narrow(1, i, 1), None).unwrap();
                parts.push(m.logits_from_embeds(&e, None, Some(&mut cache), false));
            }
            assert_eq!(cache.len(), all.len() as i64);
            Tensor::cat(&parts, 1)
        };
        let grow = run(mllm::llama::KvCache::new(n_layers));
        let pre = run(mllm::llama::KvCache::with_capacity(n_layers, split + 4));
        assert!(max_abs_diff(&grow, &pre) < 1e-5, "{}", max_abs_diff(&grow, &pre));
    });
}
