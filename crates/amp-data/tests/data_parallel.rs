//! The MiniLM expert's data-parallel embedding calls (`amp_data::minilm`): the same bytes as one
//! call after another on one thread, in call order, whatever the thread count, and libtorch's
//! thread count is set back afterwards. Its own test binary: it changes the process-wide count.
mod common;

use amp_data::SentenceEmbedder;
use common::minilm::MiniLm;

#[test]
fn data_parallel_calls_match_sequential_single_thread_bytes() {
    let emb = MiniLm::load().unwrap_or_else(|e| {
        panic!("real MiniLM expert unavailable: {e} (run `source scripts/setup.sh`)")
    });
    let words = [
        "dog",
        "sofa",
        "lamp",
        "street",
        "motorhome",
        "window",
        "children",
        "bicycle",
        "table",
        "lake",
    ];
    // calls of different sizes and lengths, as the auto-check's length buckets are
    let calls: Vec<Vec<String>> = (0..7)
        .map(|c| {
            (0..5 + 9 * c)
                .map(|i| {
                    let n = 1 + (c * 3 + i) % 11;
                    (0..n)
                        .map(|j| words[(i + j + c) % words.len()])
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect()
        })
        .collect();
    let before = tch::get_num_threads();
    tch::set_num_threads(1);
    let one: Vec<Vec<Vec<f32>>> = calls.iter().map(|c| emb.embed(c).unwrap()).collect();
    assert_eq!(
        emb.embed_calls(&calls).unwrap(),
        one,
        "1 thread: the calls one after another"
    );
    for threads in [2, 3] {
        tch::set_num_threads(threads);
        let got = emb.embed_calls(&calls).unwrap();
        assert_eq!(got.len(), calls.len());
        for (c, (g, o)) in got.iter().zip(&one).enumerate() {
            assert_eq!(g.len(), calls[c].len());
            assert!(
                g == o,
                "call {c}: {threads} data-parallel workers differ from one thread"
            );
        }
        assert_eq!(
            tch::get_num_threads(),
            threads,
            "the caller's thread count is set back"
        );
    }
    tch::set_num_threads(before);
}
