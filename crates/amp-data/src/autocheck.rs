//! The auto-check: re-ranking generated responses against the standard response (AMP §3.1.3).
//!
//! For a standard response S and a generated response G:
//!
//! * **local metric** — the maximal noun chunks of S (`f_S1..f_SM`) and of G (`f_G1..f_GN`) are
//!   embedded by the *noun-chunk expert*; `S[m,n] = cos(f_Sm, f_Gn)` (Eq. 1), `s[m] = max_n S[m,n]`,
//!   `p[m] = 1[s[m] > τ]`, `Acc = Σp / M` (Eq. 2) and `score = mean(s)`;
//! * **global metric** — the same on the sentences that contain the chunks (one entry per chunk),
//!   embedded by the *sentence expert*;
//! * **final** — `Acc = (Acc_local + Acc_global) / 2`, `score = (score_local + score_global) / 2`.
//!
//! Generated responses are re-ranked by Acc, ties broken by score (a full tie keeps the initial
//! order); the standard response stays on top. Multi-round conversations pool the chunks of all
//! their gpt turns. If S has no chunk the check cannot judge the sample and the initial ranking is
//! kept (reported in the diagnostics); a G with no chunk gets Acc = score = 0.
//!
//! Embeddings are computed once per batch of samples ([`AutoChecker::check_batch`]; [`check`]
//! is a batch of one): all chunk texts (resp. sentences) of every standard and generated response
//! of the batch are de-duplicated across the batch (a standard's chunks recur in its K − 1
//! comparisons, and a world's or data set's phrases across samples), sorted by token length
//! ([`SentenceEmbedder::token_lens`]) and embedded in calls of about [`EMBED_TOKENS`] padded
//! tokens ([`embedding_batches`]), so texts from
//! many samples share a call with texts of nearly the same length: the padding of one call per
//! sample (every text padded to the sample's longest) all but vanishes (measured in
//! `benches/autocheck.rs`, docs/benchmarks.md). The calls go to the expert together
//! ([`SentenceEmbedder::embed_calls`]); the `mllm` experts run them data-parallel on the CPU, one
//! single-threaded worker per libtorch intra-op thread (`minilm` module, feature `mllm`). The
//! vectors depend on the batch only through the encoder's float rounding. Chunking comes first
//! ([`AutoChecker::chunk_batch`]): each distinct turn text of the batch is chunked once, the
//! texts spread over the rayon pool (the spaCy chunker's pipeline is shared read-only across
//! threads).
//!
//! [`check`]: AutoChecker::check
use crate::chunker::ChunkedText;
use crate::error::Result;
use crate::spacy_chunker::NounChunker;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Texts → L2-normalised vectors (the paper's "noun chunk expert" and "sentence expert").
pub trait SentenceEmbedder: Send + Sync {
    /// A name for logs and metadata.
    fn name(&self) -> String;
    /// Embeds a batch of texts; every returned vector has unit L2 norm. A failure is
    /// [`crate::AmpDataError::embedding`] with the encoder's own error as the source.
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>>;
    /// Each text's length in the encoder's tokens, when the embedder can tell: the auto-check
    /// then buckets texts by it (see [`embedding_batches`]); otherwise by characters.
    fn token_lens(&self, _texts: &[String]) -> Option<Vec<usize>> {
        None
    }
    /// Embeds the texts of several calls (the auto-check's length buckets,
    /// [`embedding_batches`]): one result per call, in call order, each as [`embed`](Self::embed)
    /// would give it. The default runs [`embed`](Self::embed) on each call in turn; an embedder may
    /// run the calls concurrently (the `mllm` experts do on the CPU: `minilm::Embedder`, feature
    /// `mllm`), provided a call's vectors do not depend on which thread runs it or when.
    fn embed_calls(&self, calls: &[Vec<String>]) -> Result<Vec<Vec<Vec<f32>>>> {
        calls.iter().map(|c| self.embed(c)).collect()
    }
}

impl<T: SentenceEmbedder + ?Sized> SentenceEmbedder for &T {
    fn name(&self) -> String {
        (**self).name()
    }
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        (**self).embed(texts)
    }
    fn token_lens(&self, texts: &[String]) -> Option<Vec<usize>> {
        (**self).token_lens(texts)
    }
    fn embed_calls(&self, calls: &[Vec<String>]) -> Result<Vec<Vec<Vec<f32>>>> {
        (**self).embed_calls(calls)
    }
}

impl<T: SentenceEmbedder + ?Sized> SentenceEmbedder for Box<T> {
    fn name(&self) -> String {
        (**self).name()
    }
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        (**self).embed(texts)
    }
    fn token_lens(&self, texts: &[String]) -> Option<Vec<usize>> {
        (**self).token_lens(texts)
    }
    fn embed_calls(&self, calls: &[Vec<String>]) -> Result<Vec<Vec<Vec<f32>>>> {
        (**self).embed_calls(calls)
    }
}

impl<T: SentenceEmbedder + ?Sized> SentenceEmbedder for std::sync::Arc<T> {
    fn name(&self) -> String {
        (**self).name()
    }
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        (**self).embed(texts)
    }
    fn token_lens(&self, texts: &[String]) -> Option<Vec<usize>> {
        (**self).token_lens(texts)
    }
    fn embed_calls(&self, calls: &[Vec<String>]) -> Result<Vec<Vec<Vec<f32>>>> {
        (**self).embed_calls(calls)
    }
}

/// Padded tokens per embedding call (texts × longest text): large enough to keep the GEMMs
/// efficient, small enough that a call's texts, sorted by token length, have nearly equal
/// lengths (little padding). Short noun chunks thus go in calls of many texts, long sentences
/// in calls of few.
pub const EMBED_TOKENS: usize = 4096;
/// At most this many texts per embedding call (the encoders' own batch size).
pub const EMBED_BATCH: usize = 128;
/// A call that already holds this many texts ends where the length changes, so that it is not
/// padded (below it, a few padded tokens cost less than a narrower GEMM).
pub const EMBED_MIN_CALL: usize = 32;

/// The auto-check's embedding calls for texts of the given lengths: indices sorted by length,
/// longest first, cut whenever a call would exceed [`EMBED_TOKENS`] padded tokens or
/// [`EMBED_BATCH`] texts, or at a change of length once it holds [`EMBED_MIN_CALL`] texts. Each
/// call is padded to its longest text, so the executed tokens are `Σ len(call) × max(call)` (the
/// benchmark reports that over the real ones).
pub fn embedding_batches(lens: &[usize]) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lens.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lens[i]));
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut cur: Vec<usize> = Vec::new();
    for i in order {
        let longest = cur.first().map_or(lens[i], |&f| lens[f]).max(1);
        let full = (cur.len() + 1) * longest > EMBED_TOKENS || cur.len() >= EMBED_BATCH;
        let length_changes = cur.len() >= EMBED_MIN_CALL && lens[i] < longest;
        if !cur.is_empty() && (full || length_changes) {
            out.push(std::mem::take(&mut cur));
        }
        cur.push(i);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Texts per task of [`AutoChecker::chunk_batch`], parsed as one batch.
const CHUNK_TASK: usize = 8;

/// Auto-check settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AutoCheckConfig {
    /// Match threshold τ (paper: 0.85).
    pub tau: f32,
}

impl Default for AutoCheckConfig {
    fn default() -> Self {
        Self { tau: 0.85 }
    }
}

/// Acc and score of one metric (Eq. 1–2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricPart {
    /// Fraction of the standard's entries matched above τ.
    pub acc: f32,
    /// Mean best cosine similarity.
    pub score: f32,
}

/// The auto-check result of one generated response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponseCheck {
    /// Final Acc = mean of local and global Acc.
    pub acc: f32,
    /// Final score = mean of local and global score.
    pub score: f32,
    /// Noun-chunk metric.
    pub local: MetricPart,
    /// Sentence metric.
    pub global: MetricPart,
    /// Number of noun chunks found in the response.
    pub n_chunks: usize,
}

/// The best match of every standard entry in one response: `local[m]` for the standard's chunk
/// m among the response's chunks, `global[m]` for the sentence of chunk m among the sentences of
/// the response's chunks (index n = the response's chunk n).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponseMatches {
    pub local: Vec<EntryMatch>,
    pub global: Vec<EntryMatch>,
}

/// The auto-check of one sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleCheck {
    /// Per generated response, in input (initial-rank) order.
    pub responses: Vec<ResponseCheck>,
    /// Number of chunks of the standard response (0: the sample could not be checked).
    pub standard_chunks: usize,
    /// The standard response's maximal noun chunks (diagnostics).
    pub standard_chunk_texts: Vec<String>,
    /// Each generated response's maximal noun chunks, in input order (diagnostics).
    pub response_chunk_texts: Vec<Vec<String>>,
    /// The sentence of each standard chunk (the global metric's entries; diagnostics).
    pub standard_sentence_texts: Vec<String>,
    /// The sentence of each chunk of each generated response, in input order (diagnostics).
    pub response_sentence_texts: Vec<Vec<String>>,
    /// Per generated response (input order), each standard entry's best match (diagnostics;
    /// empty when the standard has no chunk).
    pub matches: Vec<ResponseMatches>,
    /// Final order of the generated responses: `order[r]` = input index of the response at
    /// generated rank r (0 = best generated, i.e. overall level 1).
    pub order: Vec<usize>,
    /// Whether the order differs from the initial one.
    pub changed: bool,
    /// Number of adjacent pairs in the final order with equal (Acc, score) (kept in initial order).
    pub ties: usize,
}

/// How one entry of the standard response (a noun chunk, or the sentence of a chunk) fares
/// against a response: `s[m] = max_n S[m,n]` of Eq. 1 and `p[m]` of Eq. 2.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct EntryMatch {
    /// Index n of the response's entry with the highest cosine (`None`: the response has none).
    pub best: Option<usize>,
    /// That cosine similarity (0 when the response has no entry).
    pub similarity: f32,
    /// `similarity > τ`.
    pub matched: bool,
}

/// Eq. 1 per entry: `std` are the standard's M vectors, `gen` the response's N vectors.
pub fn match_entries(std: &[&[f32]], gen: &[&[f32]], tau: f32) -> Vec<EntryMatch> {
    std.iter()
        .map(|s| {
            let (best, similarity) = gen.iter().enumerate().map(|(n, g)| (n, dot(s, g))).fold(
                (None, f32::NEG_INFINITY),
                |acc, (n, c)| if c > acc.1 { (Some(n), c) } else { acc },
            );
            let similarity = if gen.is_empty() { 0.0 } else { similarity };
            EntryMatch {
                best,
                similarity,
                matched: similarity > tau,
            }
        })
        .collect()
}

/// Eq. 2 over the entries of [`match_entries`]: Acc = Σp / M, score = mean(s).
pub fn summarize(entries: &[EntryMatch]) -> MetricPart {
    if entries.is_empty() {
        return MetricPart::default();
    }
    let matched = entries.iter().filter(|e| e.matched).count();
    let total: f64 = entries.iter().map(|e| e.similarity as f64).sum();
    MetricPart {
        acc: matched as f32 / entries.len() as f32,
        score: (total / entries.len() as f64) as f32,
    }
}

/// Eq. 1–2 for one pair: `std` are the standard's M vectors, `gen` the response's N vectors.
pub fn match_metric(std: &[&[f32]], gen: &[&[f32]], tau: f32) -> MetricPart {
    summarize(&match_entries(std, gen, tau))
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn normalize(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
    v
}

/// The auto-check: chunker, the two experts and τ.
pub struct AutoChecker<L, G> {
    pub chunker: NounChunker,
    /// Noun-chunk expert (paper: CLIP text encoder).
    pub local: L,
    /// Sentence expert (unspecified in the paper).
    pub global: G,
    pub config: AutoCheckConfig,
}

/// De-duplicating embedding cache for one batch of samples.
struct Cache {
    index: HashMap<String, usize>,
    texts: Vec<String>,
    vecs: Vec<Vec<f32>>,
}

impl Cache {
    fn new() -> Self {
        Self {
            index: HashMap::new(),
            texts: Vec::new(),
            vecs: Vec::new(),
        }
    }
    fn add(&mut self, t: &str) -> usize {
        if let Some(&i) = self.index.get(t) {
            return i;
        }
        let i = self.texts.len();
        self.index.insert(t.to_string(), i);
        self.texts.push(t.to_string());
        i
    }
    /// Embeds the texts in length buckets ([`embedding_batches`]) and stores the vectors in
    /// insertion order.
    fn fill(&mut self, e: &dyn SentenceEmbedder) -> Result<()> {
        if self.texts.is_empty() {
            return Ok(());
        }
        let lens = e
            .token_lens(&self.texts)
            .filter(|l| l.len() == self.texts.len())
            .unwrap_or_else(|| self.texts.iter().map(|t| t.chars().count()).collect());
        let batches = embedding_batches(&lens);
        let calls: Vec<Vec<String>> = batches
            .iter()
            .map(|b| b.iter().map(|&i| self.texts[i].clone()).collect())
            .collect();
        let rows = e.embed_calls(&calls)?;
        let mut vecs = vec![Vec::new(); self.texts.len()];
        if rows.len() != calls.len() {
            return Err(crate::AmpDataError::EmbeddingCount {
                embedder: e.name(),
                got: rows.iter().map(Vec::len).sum(),
                want: self.texts.len(),
            });
        }
        for ((v, texts), batch) in rows.into_iter().zip(&calls).zip(&batches) {
            if v.len() != texts.len() {
                return Err(crate::AmpDataError::EmbeddingCount {
                    embedder: e.name(),
                    got: v.len(),
                    want: texts.len(),
                });
            }
            for (row, &i) in v.into_iter().zip(batch) {
                vecs[i] = normalize(row);
            }
        }
        self.vecs = vecs;
        Ok(())
    }
}

impl<L: SentenceEmbedder, G: SentenceEmbedder> AutoChecker<L, G> {
    /// Builds a checker.
    pub fn new(
        chunker: impl Into<NounChunker>,
        local: L,
        global: G,
        config: AutoCheckConfig,
    ) -> Self {
        Self {
            chunker: chunker.into(),
            local,
            global,
            config,
        }
    }

    /// Chunks of a response given as its gpt turns (pooled over turns).
    pub fn chunk_turns(&self, turns: &[String]) -> ChunkedText {
        let mut out = ChunkedText::default();
        for t in turns {
            out.append(&self.chunker.chunk(t));
        }
        out
    }

    /// The chunks of every sample's standard and generated responses ([`chunk_turns`](Self::chunk_turns)
    /// of each), each distinct turn text chunked once (identical responses and standards recur
    /// across experts, samples and shards) and the distinct texts spread over the rayon pool.
    pub fn chunk_batch<S, R>(&self, samples: &[(S, R)]) -> Vec<(ChunkedText, Vec<ChunkedText>)>
    where
        S: AsRef<[String]> + Sync,
        R: AsRef<[Vec<String>]> + Sync,
    {
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut texts: Vec<&str> = Vec::new();
        for (s, g) in samples {
            for t in s.as_ref().iter().chain(g.as_ref().iter().flatten()) {
                index.entry(t.as_str()).or_insert_with(|| {
                    texts.push(t.as_str());
                    texts.len() - 1
                });
            }
        }
        // a few texts per task, parsed as one batch (the spaCy port's GEMMs pack their weights
        // once per batch); a parse is milliseconds, so the pool still balances well
        let done: Vec<ChunkedText> = texts
            .par_chunks(CHUNK_TASK)
            .flat_map_iter(|t| self.chunker.chunk_many(t))
            .collect();
        let turns = |turns: &[String]| -> ChunkedText {
            let mut out = ChunkedText::default();
            for t in turns {
                out.append(&done[index[t.as_str()]]);
            }
            out
        };
        samples
            .iter()
            .map(|(s, g)| (turns(s.as_ref()), g.as_ref().iter().map(|r| turns(r)).collect()))
            .collect()
    }

    /// Checks one sample: `standard` and each generated response are given by their gpt turns;
    /// the generated ones in initial-rank order (best first).
    pub fn check(&self, standard: &[String], generated: &[Vec<String>]) -> Result<SampleCheck> {
        let mut out = self.check_batch(&[(standard, generated)])?;
        Ok(out.pop().expect("one sample in, one out"))
    }

    /// Checks several samples with one embedding call per expert over their de-duplicated texts
    /// (module docs). Each sample is `(standard turns, generated responses' turns)`; the result is
    /// the same as [`check`](Self::check) on each, up to the experts' float rounding.
    pub fn check_batch<S, R>(&self, samples: &[(S, R)]) -> Result<Vec<SampleCheck>>
    where
        S: AsRef<[String]> + Sync,
        R: AsRef<[Vec<String>]> + Sync,
    {
        let chunked = self.chunk_batch(samples);
        let (mut lc, mut gc) = (Cache::new(), Cache::new());
        let ids = |c: &ChunkedText, lc: &mut Cache, gc: &mut Cache| -> (Vec<usize>, Vec<usize>) {
            let l = c.chunks.iter().map(|ch| lc.add(&ch.text)).collect();
            let g = (0..c.chunks.len())
                .map(|i| gc.add(c.sentence_of(i)))
                .collect();
            (l, g)
        };
        // samples whose standard has no chunk cannot be judged: their texts are not embedded
        let all_ids: Vec<Option<(Ids, Vec<Ids>)>> = chunked
            .iter()
            .map(|(s, gs)| {
                (!s.chunks.is_empty()).then(|| {
                    let s_ids = ids(s, &mut lc, &mut gc);
                    let g_ids = gs.iter().map(|g| ids(g, &mut lc, &mut gc)).collect();
                    (s_ids, g_ids)
                })
            })
            .collect();
        lc.fill(&self.local)?;
        gc.fill(&self.global)?;
        // samples are scored independently, over the rayon pool (collected in sample order)
        Ok(chunked
            .par_iter()
            .zip(&all_ids)
            .map(|((s, gs), ids)| self.score(s, gs, ids.as_ref(), &lc, &gc))
            .collect())
    }

    /// Eq. 1–2 and the re-ranking of one sample from the batch's embeddings.
    fn score(
        &self,
        s: &ChunkedText,
        gs: &[ChunkedText],
        ids: Option<&(Ids, Vec<Ids>)>,
        lc: &Cache,
        gc: &Cache,
    ) -> SampleCheck {
        let m = s.chunks.len();
        let tau = self.config.tau;
        fn pick<'a>(c: &'a Cache, ids: &[usize]) -> Vec<&'a [f32]> {
            ids.iter().map(|&i| c.vecs[i].as_slice()).collect()
        }
        let (responses, matches): (Vec<ResponseCheck>, Vec<ResponseMatches>) = match ids {
            None => (
                gs.iter()
                    .map(|g| ResponseCheck {
                        n_chunks: g.chunks.len(),
                        ..Default::default()
                    })
                    .collect(),
                Vec::new(),
            ),
            Some((s_ids, g_ids)) => g_ids
                .iter()
                .zip(gs)
                .map(|((gl, gg), g)| {
                    let lm = match_entries(&pick(lc, &s_ids.0), &pick(lc, gl), tau);
                    let gm = match_entries(&pick(gc, &s_ids.1), &pick(gc, gg), tau);
                    let (local, global) = (summarize(&lm), summarize(&gm));
                    let check = ResponseCheck {
                        acc: (local.acc + global.acc) / 2.0,
                        score: (local.score + global.score) / 2.0,
                        local,
                        global,
                        n_chunks: g.chunks.len(),
                    };
                    (check, ResponseMatches { local: lm, global: gm })
                })
                .unzip(),
        };
        let (order, ties) = if m == 0 {
            ((0..gs.len()).collect(), 0)
        } else {
            rank(&responses)
        };
        let changed = order.iter().enumerate().any(|(r, &i)| r != i);
        let texts = |c: &ChunkedText| {
            c.chunks
                .iter()
                .map(|ch| ch.text.clone())
                .collect::<Vec<_>>()
        };
        let sentences = |c: &ChunkedText| {
            (0..c.chunks.len())
                .map(|i| c.sentence_of(i).to_string())
                .collect::<Vec<_>>()
        };
        SampleCheck {
            responses,
            standard_chunks: m,
            standard_chunk_texts: texts(s),
            response_chunk_texts: gs.iter().map(texts).collect(),
            standard_sentence_texts: sentences(s),
            response_sentence_texts: gs.iter().map(sentences).collect(),
            matches,
            order,
            changed,
            ties,
        }
    }
}

/// Rows of a response's chunks (local) and of their sentences (global) in the batch caches.
type Ids = (Vec<usize>, Vec<usize>);

/// Sorts responses by (Acc desc, score desc), stable (ties keep the initial order). Returns the
/// order and the number of adjacent exact ties.
pub fn rank(r: &[ResponseCheck]) -> (Vec<usize>, usize) {
    let mut order: Vec<usize> = (0..r.len()).collect();
    order.sort_by(|&a, &b| {
        r[b].acc
            .total_cmp(&r[a].acc)
            .then(r[b].score.total_cmp(&r[a].score))
    });
    let ties = order
        .windows(2)
        .filter(|w| r[w[0]].acc == r[w[1]].acc && r[w[0]].score == r[w[1]].score)
        .count();
    (order, ties)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_metric_by_hand() {
        // standard: e1, e2 ; generated: e1, (e2+e3)/sqrt2
        let s1 = [1.0f32, 0.0, 0.0];
        let s2 = [0.0f32, 1.0, 0.0];
        let h = std::f32::consts::FRAC_1_SQRT_2;
        let g1 = [1.0f32, 0.0, 0.0];
        let g2 = [0.0f32, h, h];
        let m = match_metric(&[&s1, &s2], &[&g1, &g2], 0.85);
        assert_eq!(m.acc, 0.5);
        assert!((m.score - (1.0 + h) / 2.0).abs() < 1e-6);
        let empty = match_metric(&[&s1], &[], 0.85);
        assert_eq!((empty.acc, empty.score), (0.0, 0.0));
    }

    #[test]
    fn embedding_batches_are_length_sorted_within_the_token_budget() {
        let lens: Vec<usize> = (0..1000).map(|i| 3 + (i * 7919) % 40).collect();
        let b = embedding_batches(&lens);
        let mut seen: Vec<usize> = b.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
        let mut prev = usize::MAX;
        for call in &b {
            let max = lens[call[0]];
            assert!(call.len() * max <= EMBED_TOKENS && call.len() <= EMBED_BATCH);
            for &i in call {
                assert!(lens[i] <= max && lens[i] <= prev);
                prev = lens[i];
            }
        }
    }

    #[test]
    fn rank_is_by_acc_then_score_and_stable() {
        let mk = |acc, score| ResponseCheck {
            acc,
            score,
            ..Default::default()
        };
        let r = [mk(0.5, 0.7), mk(0.75, 0.1), mk(0.5, 0.9), mk(0.5, 0.7)];
        let (order, ties) = rank(&r);
        assert_eq!(order, vec![1, 2, 0, 3]);
        assert_eq!(ties, 1);
    }
}
