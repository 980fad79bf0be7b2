//! `mdpo`'s public API is enough to train a model of one's own, and errors keep their type.
use mdpo::{MdpoConfig, MdpoError, PreferenceExample, Reference, Trainer, Turn};
use mdpo_downstream::{Bigram, BigramError};

/// Level 0 answers with `ab…`, level 1 with `cd…`, level 2 with `ef…`.
fn data(n: usize) -> Vec<PreferenceExample> {
    (0..n)
        .map(|i| {
            let responses = ["ab", "cd", "ef"]
                .iter()
                .map(|p| {
                    vec![
                        Turn { from: "human".into(), value: format!("question {i}") },
                        Turn { from: "gpt".into(), value: p.repeat(3 + i % 3) },
                    ]
                })
                .collect();
            PreferenceExample { id: format!("q{i}"), image: None, responses }
        })
        .collect()
}

fn config(dir: &std::path::Path) -> MdpoConfig {
    MdpoConfig { levels: 3, lr: 0.05, warmup_steps: 0, batch_size: 4, grad_accum: 2, max_steps: Some(12), plots: false, output_dir: dir.into(), ..MdpoConfig::default() }
}

#[test]
fn mdpo_trains_a_downstream_model() {
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = Trainer::new(Bigram::new(1), Reference::Model(Bigram::new(1)), data(16), config(dir.path())).unwrap();
    let first = trainer.step().unwrap();
    let summary = trainer.train().unwrap();
    assert_eq!(summary.steps, 12);
    let last = summary.last.unwrap();
    assert!(last.loss < first.loss, "{} -> {}", first.loss, last.loss);
    assert!(last.reward_accuracy.unwrap() > 0.99, "{:?}", last.reward_accuracy);
    assert!(dir.path().join("checkpoints/step-00000012/trainable.safetensors").is_file());
}

#[test]
fn the_models_own_error_comes_back_as_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let mut bad = data(8);
    bad[0].responses[1][1].value.clear();
    let mut c = config(dir.path());
    c.precompute_reference = false;
    c.batch_size = 8;
    c.grad_accum = 1;
    let mut trainer = Trainer::new(Bigram::new(1), Reference::Model(Bigram::new(1)), bad, c).unwrap();
    let e = trainer.step().unwrap_err();
    assert!(matches!(e, MdpoError::Model(_)), "{e:?}");
    let source = std::error::Error::source(&e).unwrap().downcast_ref::<BigramError>();
    assert_eq!(source, Some(&BigramError::EmptyAnswer { id: "q0".into(), level: 1 }));
}
