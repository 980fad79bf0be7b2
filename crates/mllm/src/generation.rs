//! Text generation with a KV cache: greedy, temperature/top-p sampling (seeded), beam search
//! (transformers' algorithm: `2·num_beams` candidates per step, finished hypotheses scored by
//! `sum log p / len^length_penalty`), repetition penalty, `no_repeat_ngram_size`,
//! `max_new_tokens`, EOS ids and stop strings; batched prompts are left-padded; [`Chat`] keeps a
//! multi-turn history.
use crate::conversation::ChatTokenizer;
use crate::error::{MllmError, Result};
use crate::llava::Llava;
use tch::{Kind, Tensor};

/// How the next token is chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    /// Argmax.
    Greedy,
    /// Sample from `softmax(logits / temperature)` restricted to the top-p nucleus.
    Sample { temperature: f64, top_p: f64, seed: u64 },
    /// Beam search.
    Beam { num_beams: usize, length_penalty: f64 },
}

/// Generation settings (the transformers `GenerationConfig` subset LLaVA uses).
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    pub max_new_tokens: usize,
    pub strategy: Strategy,
    /// > 1 discourages repeats (CTRL's penalty, as in transformers). 1 = off.
    pub repetition_penalty: f64,
    /// Forbid repeating any n-gram of this size (0 = off).
    pub no_repeat_ngram_size: usize,
    /// Stop ids (empty: the model config's EOS).
    pub eos_ids: Vec<i64>,
    /// Stop when the decoded continuation contains one of these (needs a tokenizer); the text is
    /// cut before it.
    pub stop_strings: Vec<String>,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 128,
            strategy: Strategy::Greedy,
            repetition_penalty: 1.,
            no_repeat_ngram_size: 0,
            eos_ids: vec![],
            stop_strings: vec![],
        }
    }
}

/// One generated continuation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// New token ids (including a final EOS if one was produced).
    pub ids: Vec<i64>,
    /// Decoded text (without EOS, cut at a stop string), when a tokenizer was given.
    pub text: Option<String>,
}

fn process_row(scores: &mut [f32], hist: &[i64], cfg: &GenerationConfig) {
    let v = scores.len() as i64;
    if cfg.repetition_penalty != 1. {
        let p = cfg.repetition_penalty as f32;
        let mut seen = std::collections::HashSet::new();
        for &t in hist {
            if t >= 0 && t < v && seen.insert(t) {
                let s = &mut scores[t as usize];
                *s = if *s < 0. { *s * p } else { *s / p };
            }
        }
    }
    let n = cfg.no_repeat_ngram_size;
    if n > 0 && hist.len() + 1 >= n {
        let prefix = &hist[hist.len() + 1 - n..];
        for i in 0..=(hist.len() + 1 - n) {
            if i + n > hist.len() {
                break;
            }
            if &hist[i..i + n - 1] == prefix {
                let t = hist[i + n - 1];
                if t >= 0 && t < v {
                    scores[t as usize] = f32::NEG_INFINITY;
                }
            }
        }
    }
}

struct SplitMix(u64);
impl SplitMix {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn sample_row(scores: &[f32], temperature: f64, top_p: f64, rng: &mut SplitMix) -> i64 {
    let t = temperature.max(1e-6);
    let mx = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut p: Vec<(usize, f64)> = scores.iter().enumerate().map(|(i, &s)| (i, ((s as f64 - mx) / t).exp())).collect();
    let z: f64 = p.iter().map(|x| x.1).sum();
    p.iter_mut().for_each(|x| x.1 /= z);
    p.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));
    let mut keep = 0;
    let mut acc = 0.;
    for x in &p {
        keep += 1;
        acc += x.1;
        if acc >= top_p {
            break;
        }
    }
    let p = &p[..keep.max(1)];
    let total: f64 = p.iter().map(|x| x.1).sum();
    let mut u = rng.next_f64() * total;
    for x in p {
        u -= x.1;
        if u <= 0. {
            return x.0 as i64;
        }
    }
    p[p.len() - 1].0 as i64
}

/// Logits of the last position only (the lm_head is not run on the whole prompt).
fn last_logits(model: &Llava, embeds: &Tensor, key_valid: Option<&Tensor>, cache: &mut crate::llama::KvCache) -> Tensor {
    let h = model.hidden_from_embeds(embeds, key_valid, Some(cache), false);
    model.language_model.lm_head(&h.select(1, -1), false).to_kind(Kind::Float)
}

fn to_rows(t: &Tensor) -> Vec<Vec<f32>> {
    let (n, v) = t.size2().expect("[N, V]");
    let flat: Vec<f32> = Vec::<f32>::try_from(t.to_kind(Kind::Float).to_device(tch::Device::Cpu).contiguous().view([-1])).expect("f32");
    (0..n as usize).map(|i| flat[i * v as usize..(i + 1) * v as usize].to_vec()).collect()
}

fn stop_text(tok: Option<&ChatTokenizer>, ids: &[i64], eos: &[i64], stops: &[String]) -> Result<(Option<String>, bool)> {
    let Some(tok) = tok else { return Ok((None, false)) };
    let body: Vec<i64> = ids.iter().copied().filter(|i| !eos.contains(i)).collect();
    let text = tok.decode(&body)?;
    for s in stops {
        if let Some(p) = text.find(s.as_str()) {
            return Ok((Some(text[..p].to_string()), true));
        }
    }
    Ok((Some(text), false))
}

/// Generate continuations for `prompts` (token ids with image positions marked by the image
/// token id), `pixel_values` `[N, 3, H, W]` holding the images of all prompts in order.
pub fn generate(
    model: &Llava,
    prompts: &[Vec<i64>],
    pixel_values: Option<&Tensor>,
    cfg: &GenerationConfig,
    tokenizer: Option<&ChatTokenizer>,
) -> Result<Vec<Generation>> {
    if prompts.is_empty() || prompts.iter().any(|p| p.is_empty()) {
        return Err(MllmError::Input("generate: empty prompt".into()));
    }
    if !cfg.stop_strings.is_empty() && tokenizer.is_none() {
        return Err(MllmError::Input("stop strings need a tokenizer".into()));
    }
    let eos = if cfg.eos_ids.is_empty() { model.cfg.text.eos_ids() } else { cfg.eos_ids.clone() };
    tch::no_grad(|| match cfg.strategy {
        Strategy::Beam { num_beams, length_penalty } => {
            let feats = pixel_values.map(|p| model.encode_images(p, false));
            let n_img = model.cfg.image_tokens();
            let mut offset = 0;
            let mut out = Vec::new();
            for p in prompts {
                let k = p.iter().filter(|&&i| i == model.cfg.image_token_id).count() as i64 / n_img.max(1);
                let f = feats.as_ref().filter(|_| k > 0).map(|f| f.narrow(0, offset, k));
                offset += k;
                out.push(beam_search(model, p, f.as_ref(), cfg, num_beams, length_penalty, &eos, tokenizer)?);
            }
            Ok(out)
        }
        _ => sample_batch(model, prompts, pixel_values, cfg, &eos, tokenizer),
    })
}

fn sample_batch(
    model: &Llava,
    prompts: &[Vec<i64>],
    pixel_values: Option<&Tensor>,
    cfg: &GenerationConfig,
    eos: &[i64],
    tokenizer: Option<&ChatTokenizer>,
) -> Result<Vec<Generation>> {
    let dev = model.device();
    let b = prompts.len();
    let l = prompts.iter().map(|p| p.len()).max().expect("non-empty");
    let pad = model.cfg.text.pad_token_id.unwrap_or(0).max(0);
    let mut ids = Vec::with_capacity(b * l);
    let mut valid = Vec::with_capacity(b * l);
    for p in prompts {
        ids.extend(std::iter::repeat_n(pad, l - p.len()));
        ids.extend(p);
        valid.extend(std::iter::repeat_n(0i64, l - p.len()));
        valid.extend(std::iter::repeat_n(1i64, p.len()));
    }
    let ids = Tensor::from_slice(&ids).view([b as i64, l as i64]).to_device(dev);
    let mut key_valid = Tensor::from_slice(&valid).view([b as i64, l as i64]).to_device(dev);
    let padded = valid.contains(&0);
    let feats = pixel_values.map(|p| model.encode_images(p, false));
    let embeds = model.embed(&ids, feats.as_ref())?;
    let mut cache = model.new_cache();
    let mut logits = last_logits(model, &embeds, padded.then_some(&key_valid), &mut cache);
    let mut hist: Vec<Vec<i64>> = prompts.to_vec();
    let mut gen: Vec<Vec<i64>> = vec![vec![]; b];
    let mut done = vec![false; b];
    let mut texts: Vec<Option<String>> = vec![None; b];
    let mut rng = match cfg.strategy {
        Strategy::Sample { seed, .. } => SplitMix(seed),
        _ => SplitMix(0),
    };
    for _step in 0..cfg.max_new_tokens {
        let rows = to_rows(&logits);
        let mut next = vec![pad; b];
        for i in 0..b {
            if done[i] {
                continue;
            }
            let mut s = rows[i].clone();
            process_row(&mut s, &hist[i], cfg);
            let t = match cfg.strategy {
                Strategy::Sample { temperature, top_p, .. } => sample_row(&s, temperature, top_p, &mut rng),
                _ => {
                    let mut best = 0;
                    for (j, &v) in s.iter().enumerate() {
                        if v > s[best] {
                            best = j;
                        }
                    }
                    best as i64
                }
            };
            next[i] = t;
            hist[i].push(t);
            gen[i].push(t);
            if eos.contains(&t) {
                done[i] = true;
            }
            if !cfg.stop_strings.is_empty() || tokenizer.is_some() {
                let (text, stop) = stop_text(tokenizer, &gen[i], eos, &cfg.stop_strings)?;
                texts[i] = text;
                if stop {
                    done[i] = true;
                }
            }
        }
        if done.iter().all(|&d| d) || _step + 1 == cfg.max_new_tokens {
            break;
        }
        let nt = Tensor::from_slice(&next).view([b as i64, 1]).to_device(dev);
        key_valid = Tensor::cat(&[key_valid, Tensor::ones([b as i64, 1], (Kind::Int64, dev))], 1);
        let e = model.embed_generated(&nt);
        logits = last_logits(model, &e, padded.then_some(&key_valid), &mut cache);
    }
    Ok(gen.into_iter().zip(texts).map(|(ids, text)| Generation { ids, text }).collect())
}

#[allow(clippy::too_many_arguments)]
fn beam_search(
    model: &Llava,
    prompt: &[i64],
    feats: Option<&Tensor>,
    cfg: &GenerationConfig,
    num_beams: usize,
    length_penalty: f64,
    eos: &[i64],
    tokenizer: Option<&ChatTokenizer>,
) -> Result<Generation> {
    let dev = model.device();
    let nb = num_beams.max(1);
    let keep = 2.max(1 + eos.len()) * nb;
    let ids = Tensor::from_slice(prompt).unsqueeze(0).to_device(dev);
    let embeds = model.embed(&ids, feats)?;
    let mut cache = model.new_cache();
    let logits = last_logits(model, &embeds, None, &mut cache);
    cache.index_select(&Tensor::zeros([nb as i64], (Kind::Int64, dev)));
    let mut logits = logits.expand([nb as i64, -1], false);
    // running beams
    let mut run_seq: Vec<Vec<i64>> = vec![vec![]; nb];
    let mut run_score: Vec<f64> = (0..nb).map(|i| if i == 0 { 0. } else { -1e9 }).collect();
    // finished hypotheses (score, ids), at most nb
    let mut finished: Vec<(f64, Vec<i64>)> = vec![];
    let mut improving = true;
    for step in 0..cfg.max_new_tokens {
        let lp = logits.log_softmax(-1, Kind::Float);
        let rows = to_rows(&lp);
        let v = rows[0].len();
        let mut cands: Vec<(f64, usize, i64)> = Vec::with_capacity(nb * v);
        for (bi, row) in rows.iter().enumerate() {
            let mut s = row.clone();
            let mut hist = prompt.to_vec();
            hist.extend(&run_seq[bi]);
            process_row(&mut s, &hist, cfg);
            for (t, &x) in s.iter().enumerate() {
                cands.push(((x as f64 + run_score[bi]) as f32 as f64, bi, t as i64));
            }
        }
        // top `keep` by accumulated log-prob (stable: earlier index wins ties, like torch.topk on CPU)
        let mut idx: Vec<usize> = (0..cands.len()).collect();
        idx.sort_by(|&a, &b| cands[b].0.partial_cmp(&cands[a].0).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(&b)));
        idx.truncate(keep);
        let gen_len = step + 1;
        let last = gen_len == cfg.max_new_tokens;
        let mut top: Vec<(f64, Vec<i64>, bool)> = Vec::with_capacity(keep);
        for &i in &idx {
            let (s, bi, t) = cands[i];
            let mut seq = run_seq[bi].clone();
            seq.push(t);
            let mut hit = last || eos.contains(&t);
            if !cfg.stop_strings.is_empty() {
                hit |= stop_text(tokenizer, &seq, eos, &cfg.stop_strings)?.1;
            }
            top.push((s, seq, hit));
        }
        // finished: among the first nb candidates
        if improving {
            for (j, (s, seq, hit)) in top.iter().enumerate() {
                if j < nb && *hit {
                    finished.push((*s / (gen_len as f64).powf(length_penalty), seq.clone()));
                }
            }
            finished.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal));
            finished.truncate(nb);
        }
        if top.iter().all(|x| x.2) {
            break;
        }
        // running: best nb that did not hit a stop
        let mut order: Vec<usize> = (0..top.len()).collect();
        order.sort_by(|&a, &b| {
            let sa = top[a].0 - if top[a].2 { 1e9 } else { 0. };
            let sb = top[b].0 - if top[b].2 { 1e9 } else { 0. };
            sb.partial_cmp(&sa).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(&b))
        });
        order.truncate(nb);
        let parents: Vec<i64> = order
            .iter()
            .map(|&j| {
                let seq = &top[j].1;
                run_seq.iter().position(|r| r.len() + 1 == seq.len() && r[..] == seq[..seq.len() - 1]).unwrap_or(0) as i64
            })
            .collect();
        run_seq = order.iter().map(|&j| top[j].1.clone()).collect();
        run_score = order.iter().map(|&j| top[j].0 - if top[j].2 { 1e9 } else { 0. }).collect();
        // early-stop heuristic (early_stopping = false)
        if finished.len() == nb {
            let best_possible = run_score[0] / (gen_len as f64).powf(length_penalty);
            let worst = finished.iter().map(|f| f.0).fold(f64::INFINITY, f64::min);
            if best_possible <= worst {
                improving = false;
            }
        }
        if !improving {
            break;
        }
        cache.index_select(&Tensor::from_slice(&parents).to_device(dev));
        let nt = Tensor::from_slice(&run_seq.iter().map(|s| *s.last().expect("non-empty")).collect::<Vec<_>>()).view([nb as i64, 1]).to_device(dev);
        let e = model.embed_generated(&nt);
        logits = last_logits(model, &e, None, &mut cache);
    }
    let ids = finished.into_iter().next().map(|f| f.1).unwrap_or_else(|| run_seq[0].clone());
    let (text, _) = stop_text(tokenizer, &ids, eos, &cfg.stop_strings)?;
    Ok(Generation { ids, text })
}

/// A multi-turn chat: the history (and image) is fed back on every turn.
#[derive(Debug)]
pub struct Chat {
    /// Alternating human/gpt turns.
    pub turns: Vec<String>,
    /// Pixel values `[1, 3, H, W]` of the conversation's image, if any.
    pub image: Option<Tensor>,
}

impl Chat {
    /// Start a chat, optionally about an image (the first question should contain `<image>`).
    pub fn new(image: Option<Tensor>) -> Self {
        Self { turns: vec![], image }
    }

    /// Ask a question; the answer is appended to the history and returned.
    pub fn ask(&mut self, model: &Llava, tok: &ChatTokenizer, question: &str, cfg: &GenerationConfig) -> Result<String> {
        let mut turns = self.turns.clone();
        turns.push(question.to_string());
        let enc = tok.encode(&turns, None)?;
        let px = if enc.images > 0 {
            Some(self.image.as_ref().ok_or_else(|| MllmError::Input("the conversation has <image> but no image".into()))?)
        } else {
            None
        };
        let g = generate(model, &[enc.ids], px, cfg, Some(tok))?.remove(0);
        let text = g.text.unwrap_or_default().trim().to_string();
        turns.push(text.clone());
        self.turns = turns;
        Ok(text)
    }
}
