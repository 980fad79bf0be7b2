//! Text generation with a KV cache: greedy, temperature/top-p sampling (seeded), beam search
//! (transformers' algorithm: `2·num_beams` candidates per step, finished hypotheses scored by
//! `sum log p / len^length_penalty`), repetition penalty, `no_repeat_ngram_size`,
//! `max_new_tokens`, EOS ids and stop strings; batched prompts are left-padded (beam search too:
//! one forward of `B·num_beams` rows per token); [`Chat`] keeps a multi-turn history.
//!
//! Built for an accelerator: the KV cache is allocated once per call
//! ([`KvCache::with_capacity`]), the logits processors run on the device and only the chosen ids
//! (or the top-p nucleus, or the beam candidates) reach the host, and stop strings are found by
//! decoding a short window of recent tokens rather than the whole continuation every step.
use crate::conversation::ChatTokenizer;
use crate::error::{MllmError, Result};
use crate::llama::KvCache;
use crate::llava::Llava;
use amp_io::rng::Rng;
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

/// Repetition penalty and no-repeat n-gram over `scores` `[N, V]` on the model's device (row `i`
/// has history `hist[i]`: its prompt without padding and what it generated). The penalty is
/// transformers' (gather the history's scores, `s < 0 ? s·p : s/p`, scatter back); the n-gram
/// bans are found on the host (they need only the ids) and set to −∞ on the device.
fn process(scores: &Tensor, hist: &[Vec<i64>], cfg: &GenerationConfig) -> Tensor {
    let (n, v) = scores.size2().expect("[N, V]");
    let dev = scores.device();
    let mut s = scores.shallow_clone();
    if cfg.repetition_penalty != 1. {
        let rows: Vec<Vec<i64>> = hist.iter().map(|h| h.iter().copied().filter(|&t| t >= 0 && t < v).collect()).collect();
        let h = rows.iter().map(Vec::len).max().unwrap_or(0);
        if h > 0 {
            // pad each row with its own first id (a duplicate writes the same value); a row with
            // no history points at id 0 and writes back the unchanged score
            let (mut idx, mut real) = (Vec::with_capacity(n as usize * h), Vec::with_capacity(n as usize * h));
            for r in &rows {
                let fill = r.first().copied().unwrap_or(0);
                idx.extend(r.iter().copied().chain(std::iter::repeat_n(fill, h - r.len())));
                real.extend(std::iter::repeat_n(!r.is_empty(), h));
            }
            let idx = Tensor::from_slice(&idx).view([n, h as i64]).to_device(dev);
            let real = Tensor::from_slice(&real).view([n, h as i64]).to_device(dev);
            let g = s.gather(1, &idx, false);
            let p = cfg.repetition_penalty;
            let pen = (&g * p).where_self(&g.lt(0.), &(&g / p));
            s = s.scatter(1, &idx, &pen.where_self(&real, &g));
        }
    }
    let k = cfg.no_repeat_ngram_size;
    if k > 0 {
        let (mut rows, mut toks) = (vec![], vec![]);
        for (r, h) in hist.iter().enumerate() {
            if h.len() + 1 < k {
                continue;
            }
            let prefix = &h[h.len() + 1 - k..];
            for i in 0..=(h.len() + 1 - k) {
                if i + k > h.len() {
                    break;
                }
                let t = h[i + k - 1];
                if &h[i..i + k - 1] == prefix && t >= 0 && t < v {
                    rows.push(r as i64);
                    toks.push(t);
                }
            }
        }
        if !rows.is_empty() {
            let r = Tensor::from_slice(&rows).to_device(dev);
            let t = Tensor::from_slice(&toks).to_device(dev);
            let ninf = Tensor::from(f32::NEG_INFINITY).to_kind(s.kind()).to_device(dev);
            s = s.index_put(&[Some(r), Some(t)], &ninf, false);
        }
    }
    s
}

/// One token per row: argmax (greedy) or a draw from the top-p nucleus of
/// `softmax(scores / temperature)`. Only the chosen ids (greedy) or the nucleus (sampling) leave
/// the device; the draw uses the run's seeded generator.
fn choose(scores: &Tensor, strategy: &Strategy, rng: &mut Rng) -> Vec<i64> {
    match *strategy {
        Strategy::Sample { temperature, top_p, .. } => {
            let probs = (scores.to_kind(Kind::Float) / temperature.max(1e-6)).softmax(-1, Kind::Float);
            let (sorted, idx) = probs.sort_stable(true, -1, true);
            let before = sorted.cumsum(-1, Kind::Float) - &sorted;
            // keep every token whose preceding mass is below top_p (at least one)
            let keep: Vec<i64> = Vec::try_from(before.lt(top_p).sum_dim_intlist(&[-1i64][..], false, Kind::Int64).clamp_min(1).to_device(tch::Device::Cpu)).expect("i64");
            let k = keep.iter().copied().max().unwrap_or(1);
            let p = host_rows::<f32>(&sorted.narrow(1, 0, k));
            let ids = host_rows::<i64>(&idx.narrow(1, 0, k));
            p.iter()
                .zip(&ids)
                .zip(&keep)
                .map(|((p, ids), &keep)| {
                    let p = &p[..keep as usize];
                    let total: f64 = p.iter().map(|&x| x as f64).sum();
                    let mut u = rng.unit() * total;
                    for (j, &x) in p.iter().enumerate() {
                        u -= x as f64;
                        if u <= 0. {
                            return ids[j];
                        }
                    }
                    ids[p.len() - 1]
                })
                .collect()
        }
        _ => Vec::try_from(scores.argmax(-1, false).to_device(tch::Device::Cpu)).expect("i64"),
    }
}

fn host_rows<T: tch::kind::Element + Copy>(t: &Tensor) -> Vec<Vec<T>> {
    let (n, k) = t.size2().expect("[N, K]");
    let flat: Vec<T> = Vec::try_from(t.to_device(tch::Device::Cpu).contiguous().view([-1])).expect("element type");
    (0..n as usize).map(|i| flat[i * k as usize..(i + 1) * k as usize].to_vec()).collect()
}

/// Logits of the last position only (the lm_head is not run on the whole prompt).
fn last_logits(model: &Llava, head: &DecodeHead, embeds: &Tensor, key_valid: Option<&Tensor>, cache: &mut KvCache) -> Tensor {
    let h = model.hidden_from_embeds(embeds, key_valid, Some(cache), false);
    head.logits(model, &h.select(1, -1)).to_kind(Kind::Float)
}

/// The output projection used while decoding.
///
/// On CPU, `h · Wᵀ` against the checkpoint's `[vocab, hidden]` `lm_head` runs about 3× slower than
/// the same product against a contiguous `[hidden, vocab]` copy (one decode row is a GEMV whose
/// output dimension is then the contiguous one: 3.83 vs 1.25 ms at 32000 × 256 on one thread,
/// docs/benchmarks.md), and the head dominates a small model's step. So a decode transposes the
/// head once per call (one copy of the head's bytes, freed when the call returns). Not done on
/// accelerators (their GEMMs take either layout) nor under a LoRA adapter on `lm_head` (the
/// adapter's term would have to be added separately).
struct DecodeHead {
    transposed: Option<(Tensor, Option<Tensor>)>,
}

impl DecodeHead {
    fn new(model: &Llava) -> Self {
        if model.device() != tch::Device::Cpu {
            return Self { transposed: None };
        }
        let lm = &model.language_model;
        let transposed = match &lm.lm_head {
            Some(l) if l.lora().is_none() => Some((l.weight.detach().tr().contiguous(), l.bias.as_ref().map(|b| b.detach()))),
            Some(_) => None,
            None => Some((lm.embed_tokens.detach().tr().contiguous(), None)),
        };
        Self { transposed }
    }

    fn logits(&self, model: &Llava, h: &Tensor) -> Tensor {
        match &self.transposed {
            Some((wt, bias)) => {
                let y = h.matmul(wt);
                match bias {
                    Some(b) => y + b,
                    None => y,
                }
            }
            None => model.language_model.lm_head(h, false),
        }
    }
}

/// The decoded continuation (EOS removed), cut before the first stop string; and whether one was
/// found.
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

/// Incremental stop-string detection: a stop string that was not in the text before the last
/// token ends inside it, so decoding a window of recent tokens that spans the longest stop string
/// (at most 4 byte tokens a character, plus slack) finds it. Cost per token: one short decode,
/// not a decode of the whole continuation.
struct StopCheck<'a> {
    tok: Option<&'a ChatTokenizer>,
    stops: &'a [String],
    window: usize,
}

impl<'a> StopCheck<'a> {
    fn new(tok: Option<&'a ChatTokenizer>, stops: &'a [String]) -> Self {
        let longest = stops.iter().map(|s| s.chars().count()).max().unwrap_or(0);
        Self { tok, stops, window: 4 * longest + 8 }
    }

    fn hit(&self, gen: &[i64], eos: &[i64]) -> Result<bool> {
        let Some(tok) = self.tok.filter(|_| !self.stops.is_empty()) else { return Ok(false) };
        let body: Vec<i64> = gen.iter().copied().filter(|i| !eos.contains(i)).collect();
        let text = tok.decode(&body[body.len().saturating_sub(self.window)..])?;
        Ok(self.stops.iter().any(|s| text.contains(s.as_str())))
    }
}

/// The KV-cache positions to preallocate: the prompt plus `max_new_tokens`, the latter at most the
/// model's context (a huge `max_new_tokens` must not allocate up front; the cache still grows).
fn cache_capacity(model: &Llava, ids: &Tensor, cfg: &GenerationConfig) -> i64 {
    ids.size()[1] + cfg.max_new_tokens.min(crate::bounds::context(&model.cfg)) as i64
}

/// Left-pad `prompts` into `[B, L]` ids and the `[B, L]` key-validity mask (1 = real token).
fn left_pad(model: &Llava, prompts: &[Vec<i64>]) -> (Tensor, Tensor, bool) {
    let dev = model.device();
    let (b, l) = (prompts.len(), prompts.iter().map(Vec::len).max().expect("non-empty"));
    let pad = model.cfg.text.pad_token_id.unwrap_or(0).max(0);
    let mut ids = Vec::with_capacity(b * l);
    let mut valid = Vec::with_capacity(b * l);
    for p in prompts {
        ids.extend(std::iter::repeat_n(pad, l - p.len()));
        ids.extend(p);
        valid.extend(std::iter::repeat_n(0i64, l - p.len()));
        valid.extend(std::iter::repeat_n(1i64, p.len()));
    }
    let padded = valid.contains(&0);
    let ids = Tensor::from_slice(&ids).view([b as i64, l as i64]).to_device(dev);
    let valid = Tensor::from_slice(&valid).view([b as i64, l as i64]).to_device(dev);
    (ids, valid, padded)
}

/// Generate continuations for `prompts` (token ids with image positions marked by the image
/// token id), `pixel_values` `[N, 3, H, W]` holding the images of all prompts in order. Prompts
/// are decoded together (left-padded), beam search included.
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
    for (i, p) in prompts.iter().enumerate() {
        let what = || format!("generate: prompt {i}");
        crate::bounds::check_length(&model.cfg, what, p.len(), None)?;
        crate::bounds::check_ids(&model.cfg, what, p)?;
    }
    let eos = if cfg.eos_ids.is_empty() { model.cfg.text.eos_ids() } else { cfg.eos_ids.clone() };
    tch::no_grad(|| match cfg.strategy {
        Strategy::Beam { num_beams, length_penalty } => beam_search(model, prompts, pixel_values, cfg, num_beams, length_penalty, &eos, tokenizer),
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
    let pad = model.cfg.text.pad_token_id.unwrap_or(0).max(0);
    let (ids, mut key_valid, padded) = left_pad(model, prompts);
    let feats = pixel_values.map(|p| model.encode_images(p, false)).transpose()?;
    let embeds = model.embed(&ids, feats.as_ref())?;
    let head = DecodeHead::new(model);
    let mut cache = KvCache::with_capacity(model.cfg.text.num_hidden_layers, cache_capacity(model, &ids, cfg));
    let mut logits = last_logits(model, &head, &embeds, padded.then_some(&key_valid), &mut cache);
    let mut hist: Vec<Vec<i64>> = prompts.to_vec();
    let mut gen: Vec<Vec<i64>> = vec![vec![]; b];
    let mut done = vec![false; b];
    let stop = StopCheck::new(tokenizer, &cfg.stop_strings);
    let mut rng = match cfg.strategy {
        Strategy::Sample { seed, .. } => Rng::new(seed),
        _ => Rng::new(0),
    };
    for step in 0..cfg.max_new_tokens {
        let mut next = choose(&process(&logits, &hist, cfg), &cfg.strategy, &mut rng);
        for i in 0..b {
            if done[i] {
                next[i] = pad;
                continue;
            }
            let t = next[i];
            hist[i].push(t);
            gen[i].push(t);
            if eos.contains(&t) || stop.hit(&gen[i], eos)? {
                done[i] = true;
            }
        }
        if done.iter().all(|&d| d) || step + 1 == cfg.max_new_tokens {
            break;
        }
        let nt = Tensor::from_slice(&next).view([b as i64, 1]).to_device(dev);
        if padded {
            key_valid = Tensor::cat(&[key_valid, Tensor::ones([b as i64, 1], (Kind::Int64, dev))], 1);
        }
        let e = model.embed_generated(&nt);
        logits = last_logits(model, &head, &e, padded.then_some(&key_valid), &mut cache);
    }
    gen.into_iter()
        .map(|ids| Ok(Generation { text: stop_text(tokenizer, &ids, eos, &cfg.stop_strings)?.0, ids }))
        .collect()
}

/// One prompt's beam state: the running beams (rows `bi·nb .. bi·nb + nb` of the batch) and the
/// finished hypotheses.
struct Beams {
    seq: Vec<Vec<i64>>,
    score: Vec<f64>,
    finished: Vec<(f64, Vec<i64>)>,
    done: bool,
}

/// Beam search over all prompts at once (transformers' algorithm: `2·num_beams` candidates per
/// step, finished hypotheses scored by `sum log p / len^length_penalty`, `early_stopping =
/// false`): one forward of `B·num_beams` rows per token; the candidates are chosen with `topk` on
/// the device, so only `B · 2·num_beams` scores reach the host.
#[allow(clippy::too_many_arguments)]
fn beam_search(
    model: &Llava,
    prompts: &[Vec<i64>],
    pixel_values: Option<&Tensor>,
    cfg: &GenerationConfig,
    num_beams: usize,
    length_penalty: f64,
    eos: &[i64],
    tokenizer: Option<&ChatTokenizer>,
) -> Result<Vec<Generation>> {
    let dev = model.device();
    let (b, nb) = (prompts.len(), num_beams.max(1));
    let keep = 2.max(1 + eos.len()) * nb;
    let (ids, key_valid, padded) = left_pad(model, prompts);
    let feats = pixel_values.map(|p| model.encode_images(p, false)).transpose()?;
    let embeds = model.embed(&ids, feats.as_ref())?;
    let head = DecodeHead::new(model);
    let mut cache = KvCache::with_capacity(model.cfg.text.num_hidden_layers, cache_capacity(model, &ids, cfg));
    let logits = last_logits(model, &head, &embeds, padded.then_some(&key_valid), &mut cache);
    // every prompt's row repeated for its beams: rows bi·nb + j
    let expand = Tensor::arange(b as i64, (Kind::Int64, dev)).repeat_interleave_self_int(nb as i64, Some(0), None);
    cache.index_select(&expand);
    let mut key_valid = key_valid.index_select(0, &expand);
    let mut logits = logits.index_select(0, &expand);
    let mut beams: Vec<Beams> = (0..b)
        .map(|_| Beams { seq: vec![vec![]; nb], score: (0..nb).map(|i| if i == 0 { 0. } else { -1e9 }).collect(), finished: vec![], done: false })
        .collect();
    let stop = StopCheck::new(tokenizer, &cfg.stop_strings);
    for step in 0..cfg.max_new_tokens {
        // the histories (prompt + beam) only feed the penalties: not built when both are off
        let penalised = cfg.repetition_penalty != 1. || cfg.no_repeat_ngram_size > 0;
        let hist: Vec<Vec<i64>> = if penalised {
            (0..b * nb).map(|r| [&prompts[r / nb][..], &beams[r / nb].seq[r % nb][..]].concat()).collect()
        } else {
            Vec::new()
        };
        let lp = process(&logits.log_softmax(-1, Kind::Float), &hist, cfg);
        let v = lp.size()[1];
        let run: Vec<f32> = beams.iter().flat_map(|bm| bm.score.iter().map(|&s| s as f32)).collect();
        let total = lp + Tensor::from_slice(&run).to_device(dev).unsqueeze(1);
        let (top_s, top_i) = total.view([b as i64, nb as i64 * v]).topk(keep as i64, 1, true, true);
        let (top_s, top_i) = (host_rows::<f32>(&top_s), host_rows::<i64>(&top_i));
        let gen_len = step + 1;
        let last = gen_len == cfg.max_new_tokens;
        let mut parents: Vec<i64> = (0..(b * nb) as i64).collect();
        for (bi, bm) in beams.iter_mut().enumerate() {
            if bm.done {
                continue;
            }
            // (score, sequence, hit a stop, parent beam)
            let mut top: Vec<(f64, Vec<i64>, bool, usize)> = Vec::with_capacity(keep);
            for (&s, &i) in top_s[bi].iter().zip(&top_i[bi]) {
                let (parent, t) = ((i / v) as usize, i % v);
                let mut seq = bm.seq[parent].clone();
                seq.push(t);
                let hit = last || eos.contains(&t) || stop.hit(&seq, eos)?;
                top.push((s as f64, seq, hit, parent));
            }
            if top.iter().take(nb).any(|x| x.2) {
                for (s, seq, hit, _) in top.iter().take(nb) {
                    if *hit {
                        bm.finished.push((*s / (gen_len as f64).powf(length_penalty), seq.clone()));
                    }
                }
                bm.finished.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal));
                bm.finished.truncate(nb);
            }
            if top.iter().all(|x| x.2) {
                bm.done = true;
                continue;
            }
            // running: the best nb that did not hit a stop
            let mut order: Vec<usize> = (0..top.len()).collect();
            let live = |x: &(f64, Vec<i64>, bool, usize)| x.0 - if x.2 { 1e9 } else { 0. };
            order.sort_by(|&a, &c| live(&top[c]).partial_cmp(&live(&top[a])).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(&c)));
            order.truncate(nb);
            for (j, &o) in order.iter().enumerate() {
                parents[bi * nb + j] = (bi * nb + top[o].3) as i64;
            }
            bm.seq = order.iter().map(|&o| top[o].1.clone()).collect();
            bm.score = order.iter().map(|&o| live(&top[o])).collect();
            // early-stop heuristic (early_stopping = false)
            if bm.finished.len() == nb {
                let best_possible = bm.score[0] / (gen_len as f64).powf(length_penalty);
                let worst = bm.finished.iter().map(|f| f.0).fold(f64::INFINITY, f64::min);
                bm.done = best_possible <= worst;
            }
        }
        if beams.iter().all(|bm| bm.done) {
            break;
        }
        if parents.iter().enumerate().any(|(r, &p)| p != r as i64) {
            cache.index_select(&Tensor::from_slice(&parents).to_device(dev));
        }
        let next: Vec<i64> = beams.iter().flat_map(|bm| bm.seq.iter().map(|s| s.last().copied().unwrap_or(0))).collect();
        if padded {
            key_valid = Tensor::cat(&[key_valid, Tensor::ones([(b * nb) as i64, 1], (Kind::Int64, dev))], 1);
        }
        let e = model.embed_generated(&Tensor::from_slice(&next).view([(b * nb) as i64, 1]).to_device(dev));
        logits = last_logits(model, &head, &e, padded.then_some(&key_valid), &mut cache);
    }
    beams
        .into_iter()
        .map(|bm| {
            let ids = bm.finished.into_iter().next().map(|f| f.1).unwrap_or_else(|| bm.seq[0].clone());
            Ok(Generation { text: stop_text(tokenizer, &ids, eos, &cfg.stop_strings)?.0, ids })
        })
        .collect()
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
