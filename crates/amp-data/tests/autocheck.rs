//! Auto-check behaviour: hallucinated objects rank below faithful descriptions; embeddings are
//! computed once per sample over de-duplicated texts.
mod common;

use amp_data::autocheck::{AutoCheckConfig, AutoChecker, SentenceEmbedder};
use amp_data::chunker::Chunker;
use amp_data::{BrillTagger, Result, TaggerMode};
use common::BagOfWords;
use std::sync::atomic::{AtomicUsize, Ordering};

pub const STANDARD: &str = "A brown dog is lying on a green sofa next to a wooden table. \
    A tall lamp stands in the corner of the living room.";
/// Initial order: hallucinating first, faithful last; the check must reverse it.
pub const GENERATED: [&str; 3] = [
    "A black cat is sitting on a red chair near the window. Two children are playing with a ball on the carpet.",
    "A brown dog is lying on a sofa. A large television hangs on the wall above a fireplace.",
    "A brown dog lies on a green sofa beside a wooden table. A tall lamp stands in the corner of the living room.",
];

fn one(s: &str) -> Vec<String> {
    vec![s.to_string()]
}

/// Counts calls and texts (to verify the per-sample cache).
struct Counting<E> {
    inner: E,
    calls: AtomicUsize,
    texts: AtomicUsize,
}

impl<E: SentenceEmbedder> SentenceEmbedder for Counting<E> {
    fn name(&self) -> String {
        self.inner.name()
    }
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.texts.fetch_add(texts.len(), Ordering::SeqCst);
        let mut uniq = texts.to_vec();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), texts.len(), "texts must be de-duplicated");
        self.inner.embed(texts)
    }
}

#[test]
fn hallucinations_rank_below_faithful_with_bag_of_words_double() {
    // TEST DOUBLE embedder (bag of words), not a real sentence encoder: see real_minilm.rs.
    let chunker = Chunker::new(BrillTagger::from_installed(TaggerMode::Brill).unwrap());
    let local = Counting {
        inner: BagOfWords,
        calls: AtomicUsize::new(0),
        texts: AtomicUsize::new(0),
    };
    let global = Counting {
        inner: BagOfWords,
        calls: AtomicUsize::new(0),
        texts: AtomicUsize::new(0),
    };
    let c = AutoChecker::new(chunker, &local, &global, AutoCheckConfig::default());
    let gens: Vec<Vec<String>> = GENERATED.iter().map(|g| one(g)).collect();
    let r = c.check(&one(STANDARD), &gens).unwrap();
    eprintln!("{r:#?}");
    assert_eq!(r.order, vec![2, 1, 0], "faithful > partial > hallucinating");
    assert!(r.changed);
    assert!(r.standard_chunks >= 2);
    assert!(r.responses[2].acc > r.responses[0].acc);
    // one embedding call per expert per sample; standard chunks shared by the 3 comparisons
    assert_eq!(local.calls.load(Ordering::SeqCst), 1);
    assert_eq!(global.calls.load(Ordering::SeqCst), 1);
    let n_chunks: usize = r.standard_chunks + r.responses.iter().map(|x| x.n_chunks).sum::<usize>();
    assert!(local.texts.load(Ordering::SeqCst) <= n_chunks);
    // identical response: Acc = 1, score = 1
    let same = c.check(&one(STANDARD), &[one(STANDARD)]).unwrap();
    assert!(
        (same.responses[0].acc - 1.0).abs() < 1e-6 && (same.responses[0].score - 1.0).abs() < 1e-5
    );
}

#[test]
fn standard_without_chunks_keeps_initial_order_and_empty_responses_score_zero() {
    let chunker = Chunker::new(BrillTagger::from_installed(TaggerMode::Brill).unwrap());
    let c = AutoChecker::new(chunker, BagOfWords, BagOfWords, AutoCheckConfig::default());
    let r = c
        .check(&one("Yes."), &[one("No."), one("A dog on a sofa.")])
        .unwrap();
    assert_eq!(r.standard_chunks, 0);
    assert_eq!(r.order, vec![0, 1]);
    assert!(!r.changed);
    let r = c
        .check(&one(STANDARD), &[one("Yes, it is."), one(GENERATED[2])])
        .unwrap();
    assert_eq!(r.responses[0].n_chunks, 0);
    assert_eq!((r.responses[0].acc, r.responses[0].score), (0.0, 0.0));
    assert_eq!(r.order, vec![1, 0]);
}

#[test]
fn chunk_batch_chunks_each_distinct_text_once_and_matches_chunk_turns() {
    let chunker = Chunker::new(BrillTagger::from_installed(TaggerMode::Brill).unwrap());
    let c = AutoChecker::new(chunker, BagOfWords, BagOfWords, AutoCheckConfig::default());
    // the standard recurs as a response and across samples; a response has two turns
    let samples: Vec<(Vec<String>, Vec<Vec<String>>)> = vec![
        (one(STANDARD), GENERATED.iter().map(|g| one(g)).collect()),
        (
            one(STANDARD),
            vec![
                one(STANDARD),
                vec![GENERATED[0].to_string(), GENERATED[1].to_string()],
                vec![],
            ],
        ),
    ];
    let got = c.chunk_batch(&samples);
    assert_eq!(got.len(), 2);
    for ((s, g), (cs, cg)) in samples.iter().zip(&got) {
        assert_eq!(&c.chunk_turns(s), cs);
        assert_eq!(g.len(), cg.len());
        for (r, cr) in g.iter().zip(cg) {
            assert_eq!(&c.chunk_turns(r), cr);
        }
    }
    // the two-turn response's second turn's chunks point at its own sentences
    let two = &got[1].1[1];
    assert!(two.chunks.iter().any(|ch| ch.sentence >= 2), "{two:?}");
}
