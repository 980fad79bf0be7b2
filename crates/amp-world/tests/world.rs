//! Determinism, formats, POPE balance, tokenizer coverage and self-consistency of the world.
use amp_world::claims::conversation_claims;
use amp_world::dataset::{read_json, read_pope};
use amp_world::judge::judge_round;
use amp_world::pope::POPE_SPLITS;
use amp_world::render::{render, BACKGROUND};
use amp_world::rng::Rng;
use amp_world::text::dialogue;
use amp_world::tokenizer::{load_tokenizer, SPECIAL_TOKENS, UNK_ID};
use amp_world::{
    BenchRecord, InstructionRecord, Scene, SceneIndex, Split, World, WorldConfig, WorldError,
};
use std::path::Path;

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((
                    p.strip_prefix(dir).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn same_seed_gives_byte_identical_files_and_another_seed_does_not() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let c = tempfile::tempdir().unwrap();
    World::new(WorldConfig::tiny())
        .unwrap()
        .write(a.path())
        .unwrap();
    World::new(WorldConfig::tiny())
        .unwrap()
        .write(b.path())
        .unwrap();
    let fa = files(a.path());
    let fb = files(b.path());
    let n_files = 44 + 6 + 3; // images + json files + pope splits
    assert_eq!(
        fa.len(),
        n_files,
        "{:?}",
        fa.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    for (x, y) in fa.iter().zip(&fb) {
        assert_eq!(x.0, y.0);
        assert!(
            x.1 == y.1,
            "{} differs between two runs with the same seed",
            x.0
        );
    }
    let cfg = WorldConfig {
        seed: 1,
        ..WorldConfig::tiny()
    };
    World::new(cfg).unwrap().write(c.path()).unwrap();
    let fc = files(c.path());
    let same = fa.iter().zip(&fc).filter(|(x, y)| x.1 == y.1).count();
    assert!(same < 3, "{same} files identical across seeds");

    // Resuming into the same directory is allowed and changes nothing; another config is refused.
    World::new(WorldConfig::tiny())
        .unwrap()
        .write(a.path())
        .unwrap();
    assert!(files(a.path()) == fa);
    let err = World::new(WorldConfig {
        seed: 7,
        ..WorldConfig::tiny()
    })
    .unwrap()
    .write(a.path())
    .unwrap_err();
    assert!(matches!(err, WorldError::ConfigMismatch { .. }), "{err}");
}

#[test]
fn written_files_have_the_llava_mrhal_and_pope_formats() {
    let d = tempfile::tempdir().unwrap();
    let cfg = WorldConfig::tiny();
    let m = World::new(cfg.clone()).unwrap().write(d.path()).unwrap();
    let train: Vec<InstructionRecord> = read_json(&d.path().join(&m.files.train)).unwrap();
    assert_eq!(train.len(), cfg.n_train);
    let raw: serde_json::Value = read_json(&d.path().join("train.json")).unwrap();
    let first = &raw[0];
    assert!(first["id"].is_string() && first["image"].is_string());
    assert_eq!(first["conversations"][0]["from"], "human");
    for r in &train {
        let conv = &r.conversations;
        assert!(conv.len() >= 2 && conv.len() % 2 == 0);
        assert!(conv[0].value.starts_with("<image>\n"));
        assert_eq!(
            conv.iter().filter(|t| t.value.contains("<image>")).count(),
            1
        );
        for (i, t) in conv.iter().enumerate() {
            assert_eq!(t.from, if i % 2 == 0 { "human" } else { "gpt" });
        }
        assert!(d.path().join("images").join(&r.image).exists());
    }
    let bench: Vec<BenchRecord> = read_json(&d.path().join("eval_gt.json")).unwrap();
    assert_eq!(bench.len(), cfg.n_bench);
    for b in &bench {
        let rounds = b.revised.len() / 2;
        assert!((cfg.min_rounds..=cfg.max_rounds).contains(&rounds));
        assert_eq!(b.label.len(), rounds);
        assert!(!b.image_content.is_empty());
    }
    let img = image::open(d.path().join("images").join(&bench[0].image)).unwrap();
    assert_eq!(
        (img.width(), img.height()),
        (cfg.image_size, cfg.image_size)
    );
    assert!(matches!(img, image::DynamicImage::ImageRgb8(_)));
    let idx = SceneIndex::open(d.path()).unwrap();
    assert_eq!(
        idx.scenes.len(),
        cfg.n_train + cfg.n_pref + cfg.n_bench + cfg.n_pope
    );
    assert_eq!(idx.get(&bench[0].image).unwrap().id, bench[0].id);
    assert_eq!(
        idx.get(&format!("/x/images/{}", bench[0].image))
            .unwrap()
            .id,
        bench[0].id
    );
    // Errors name the file.
    std::fs::write(d.path().join("bad.json"), "[{").unwrap();
    let e = read_json::<Vec<InstructionRecord>>(&d.path().join("bad.json")).unwrap_err();
    assert!(e.to_string().contains("bad.json"), "{e}");
}

#[test]
fn pope_splits_are_balanced_and_labels_are_true() {
    let cfg = WorldConfig {
        n_pope: 60,
        ..WorldConfig::small()
    };
    let world = World::new(cfg).unwrap();
    let scenes = world.scenes(Split::Pope);
    let idx = SceneIndex::new(scenes.clone());
    let splits = world.pope(&scenes);
    assert_eq!(
        splits.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(),
        POPE_SPLITS
    );
    let positives: Vec<Vec<String>> = splits
        .iter()
        .map(|(_, r)| {
            r.iter()
                .filter(|x| x.label == "yes")
                .map(|x| format!("{}{}", x.image, x.text))
                .collect()
        })
        .collect();
    for (name, recs) in &splits {
        let yes = recs.iter().filter(|r| r.label == "yes").count();
        assert_eq!(yes * 2, recs.len(), "{name} unbalanced");
        assert!(recs.len() >= 60 * 4, "{name}: {}", recs.len());
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(r.question_id, i as u64 + 1);
            let scene = idx.get(&r.image).unwrap();
            let truth = amp_world::claims::question_truth(scene, &r.text).unwrap();
            assert_eq!(truth, r.label == "yes", "{name}: {r:?}");
        }
    }
    // Positives are shared; negatives differ by split; adversarial negatives share an attribute.
    assert_eq!(positives[0], positives[1]);
    assert_eq!(positives[1], positives[2]);
    let neg = |k: usize| {
        splits[k]
            .1
            .iter()
            .filter(|r| r.label == "no")
            .map(|r| r.text.clone())
            .collect::<Vec<_>>()
    };
    assert_ne!(neg(0), neg(2));
    for r in splits[0].1.iter().filter(|r| r.label == "no") {
        let scene = idx.get(&r.image).unwrap();
        let shares = scene
            .objects
            .iter()
            .any(|o| r.text.contains(o.colour.name()) || r.text.contains(o.shape.name()));
        assert!(shares, "adversarial negative unrelated to the image: {r:?}");
    }
    // JSON lines round trip.
    let d = tempfile::tempdir().unwrap();
    let m = World::new(WorldConfig::tiny())
        .unwrap()
        .write(d.path())
        .unwrap();
    let recs = read_pope(&d.path().join(&m.files.pope[0])).unwrap();
    assert!(!recs.is_empty());
    let line = std::fs::read_to_string(d.path().join(&m.files.pope[0])).unwrap();
    let v: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(v.as_object().unwrap().len(), 4);
}

#[test]
fn tokenizer_round_trips_world_text_without_unk() {
    let d = tempfile::tempdir().unwrap();
    let m = World::new(WorldConfig::tiny())
        .unwrap()
        .write(d.path())
        .unwrap();
    let tok = load_tokenizer(&d.path().join("tokenizer.json")).unwrap();
    for (i, t) in SPECIAL_TOKENS.iter().enumerate() {
        assert_eq!(tok.token_to_id(t), Some(i as u32));
    }
    assert_eq!(tok.get_vocab_size(true), m.vocab_size);
    // Text of a *different* world (other seed, larger preset) tokenizes without <unk> too.
    let world = World::new(WorldConfig {
        seed: 99,
        ..WorldConfig::small()
    })
    .unwrap();
    let mut texts: Vec<String> = amp_world::tokenizer::template_corpus();
    for i in 0..200 {
        let s = world.scene(Split::Bench, i);
        texts.extend(world.bench_record(&s).revised.into_iter().map(|t| t.value));
    }
    let (mut words, mut tokens) = (0usize, 0usize);
    for t in &texts {
        let e = tok.encode(t.as_str(), false).unwrap();
        assert!(!e.get_ids().contains(&UNK_ID), "<unk> in {t:?}");
        assert_eq!(tok.decode(e.get_ids(), false).unwrap(), *t);
        words += t.split_whitespace().count();
        tokens += e.get_ids().len();
    }
    // Words of the world are (nearly) single tokens.
    assert!(
        (tokens as f64) < 1.5 * words as f64,
        "{tokens} tokens for {words} words"
    );
    // <image> is one token; add_special_tokens prepends <s>.
    let e = tok.encode("<image>\nIs there a red circle?", true).unwrap();
    assert_eq!(&e.get_ids()[..2], &[1, 3]);
    // Training is deterministic.
    let corpus: Vec<String> = texts.clone();
    let t1 = amp_world::tokenizer::train_tokenizer(&corpus, 800).unwrap();
    let t2 = amp_world::tokenizer::train_tokenizer(&corpus, 800).unwrap();
    assert_eq!(
        amp_world::tokenizer::tokenizer_json(&t1).unwrap(),
        amp_world::tokenizer::tokenizer_json(&t2).unwrap()
    );
}

#[test]
fn every_generated_standard_answer_is_true_and_rated_5_or_6() {
    for cfg in [WorldConfig::small(), WorldConfig::large()] {
        let spec = cfg.scene_spec();
        let vocab = cfg.vocab();
        let mut n_claims = 0;
        for i in 0..400u64 {
            let mut rng = Rng::keyed(&[cfg.n_sizes as u64, i]);
            let scene = Scene::sample(format!("s{i}"), &spec, &mut rng);
            let (turns, cats) = dialogue(&scene, 4, &vocab, &mut rng);
            assert_eq!(cats.len() * 2, turns.len());
            for (k, claims) in conversation_claims(&scene, &turns).iter().enumerate() {
                let (q, a) = (&turns[2 * k].value, &turns[2 * k + 1].value);
                assert!(!claims.is_empty(), "no claim parsed from {a:?}");
                assert!(
                    claims.iter().all(|c| c.truth == Some(true)),
                    "{q:?} {a:?} {claims:?} {:?}",
                    scene.image_content()
                );
                n_claims += claims.len();
                let j = judge_round(&scene, q, a, Some(a));
                assert!(j.rating >= 5, "{q:?} {a:?} {j:?}");
            }
        }
        assert!(n_claims > 400 * 4);
    }
}

#[test]
fn rendering_draws_each_object_in_its_colour_on_the_background() {
    let world = World::new(WorldConfig::small()).unwrap();
    for i in 0..20 {
        let s = world.scene(Split::Train, i);
        let img = render(&s, true);
        for o in &s.objects {
            // The centre pixel of every shape except the ring is filled.
            if o.shape != amp_world::Shape::Ring {
                let p = img.get_pixel(o.cx as u32, o.cy as u32).0;
                assert_eq!(p, o.colour.rgb(), "{s:?}");
            }
        }
        let free: Vec<_> = (0..9u8)
            .map(|k| amp_world::Cell {
                row: k / 3,
                col: k % 3,
            })
            .filter(|c| s.at(*c).is_none())
            .collect();
        for c in free {
            let (x, y) = (16 * c.col as u32 + 8, 16 * c.row as u32 + 8);
            assert_eq!(img.get_pixel(x, y).0, BACKGROUND);
        }
    }
}

#[test]
fn config_presets_validate_and_bad_values_name_the_field() {
    for p in ["tiny", "small", "large"] {
        WorldConfig::preset(p).unwrap().validate().unwrap();
    }
    let e = WorldConfig {
        max_objects: 12,
        ..WorldConfig::small()
    }
    .validate()
    .unwrap_err();
    assert!(e.to_string().contains("max_objects"), "{e}");
    let e = WorldConfig {
        n_colours: 0,
        ..WorldConfig::small()
    }
    .validate()
    .unwrap_err();
    assert!(e.to_string().contains("n_colours"), "{e}");
    assert!(WorldConfig::preset("huge").is_err());
    // Serde round trip.
    let s = serde_json::to_string(&WorldConfig::large()).unwrap();
    assert_eq!(
        serde_json::from_str::<WorldConfig>(&s).unwrap(),
        WorldConfig::large()
    );
}

#[test]
fn pope_by_shape_asks_about_shapes_and_labels_are_true() {
    let cfg = WorldConfig {
        n_pope: 60,
        pope_objects: amp_world::PopeObjects::Shape,
        ..WorldConfig::small()
    };
    let world = World::new(cfg).unwrap();
    let scenes = world.scenes(Split::Pope);
    let idx = SceneIndex::new(scenes.clone());
    for (name, recs) in world.pope(&scenes) {
        let yes = recs.iter().filter(|r| r.label == "yes").count();
        assert_eq!(yes * 2, recs.len(), "{name} unbalanced");
        // Four shapes: an image has at most min(present, absent) of each, so fewer than 3.
        assert!(recs.len() >= 60, "{name}: {}", recs.len());
        for r in &recs {
            let words: Vec<&str> = r.text.split_whitespace().collect();
            assert_eq!(words.len(), 7, "{name}: {}", r.text); // Is there a <shape> in the image?
            let scene = idx.get(&r.image).unwrap();
            let truth = amp_world::claims::question_truth(scene, &r.text).unwrap();
            assert_eq!(truth, r.label == "yes", "{name}: {r:?}");
        }
    }
    // The field is left out of the JSON by default, so older worlds keep their bytes.
    let json = serde_json::to_string(&WorldConfig::small()).unwrap();
    assert!(!json.contains("pope_objects"), "{json}");
}
