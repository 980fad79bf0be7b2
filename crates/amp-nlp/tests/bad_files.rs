//! Bad model files give typed errors naming the file and field, never panics.
use amp_nlp::{NlpError, Pipeline};
use std::path::{Path, PathBuf};

fn model_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var("AMP_SPACY_MODEL").ok()?);
    dir.join("config.cfg").exists().then_some(dir)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

#[test]
fn missing_directory_names_the_file() {
    let err = Pipeline::load(Path::new("/nonexistent/en_core_web_sm")).unwrap_err();
    match &err {
        NlpError::Io { path, .. } => assert!(path.ends_with("tokenizer"), "{err}"),
        other => panic!("expected Io, got {other}"),
    }
}

#[test]
fn corrupt_files_are_typed_errors() {
    let Some(model) = model_dir() else {
        println!("skipped: AMP_SPACY_MODEL not set (source scripts/setup.sh)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    copy_dir(&model, &dir);
    assert!(Pipeline::load(&dir).is_ok());

    // truncated weights: a MessagePack error naming the file
    let t2v = dir.join("tok2vec/model");
    let bytes = std::fs::read(&t2v).unwrap();
    std::fs::write(&t2v, &bytes[..bytes.len() / 2]).unwrap();
    let err = Pipeline::load(&dir).unwrap_err();
    assert!(
        matches!(&err, NlpError::Decode { path, .. } if path.ends_with("tok2vec/model")),
        "{err}"
    );
    std::fs::write(&t2v, &bytes).unwrap();

    // tagger labels that do not fit the softmax layer: a field error
    let cfg = dir.join("tagger/cfg");
    std::fs::write(&cfg, r#"{"labels": ["NN", "VB"]}"#).unwrap();
    let err = Pipeline::load(&dir).unwrap_err();
    assert!(
        matches!(&err, NlpError::Field { path, field, .. } if path.ends_with("tagger/model") && field.contains("softmax")),
        "{err}"
    );
    std::fs::write(&cfg, "not json").unwrap();
    let err = Pipeline::load(&dir).unwrap_err();
    assert!(
        matches!(&err, NlpError::Decode { path, .. } if path.ends_with("tagger/cfg")),
        "{err}"
    );
    std::fs::copy(model.join("tagger/cfg"), &cfg).unwrap();

    // moves with an extra action: the upper layer no longer fits
    let moves = dir.join("parser/moves");
    let mut v = rmpv_value(&std::fs::read(&moves).unwrap());
    let json = v["moves"]
        .as_str()
        .unwrap()
        .replace("\"4\":{", "\"4\":{\"extra\":5,");
    set_moves(&mut v, json);
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &v).unwrap();
    std::fs::write(&moves, out).unwrap();
    let err = Pipeline::load(&dir).unwrap_err();
    assert!(err.to_string().contains("upper layer"), "{err}");
    std::fs::copy(model.join("parser/moves"), &moves).unwrap();

    // an attribute-ruler operator this port does not implement: Unsupported, naming it
    let pats = dir.join("attribute_ruler/patterns");
    let bytes = std::fs::read(&pats).unwrap();
    let needle = b"NOT_IN";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the model uses NOT_IN");
    let mut bad = bytes.clone();
    bad[at..at + needle.len()].copy_from_slice(b"NOT_XX");
    std::fs::write(&pats, bad).unwrap();
    let err = Pipeline::load(&dir).unwrap_err();
    assert!(
        matches!(&err, NlpError::Unsupported { what, .. } if what.contains("NOT_XX")),
        "{err}"
    );
}

fn rmpv_value(bytes: &[u8]) -> rmpv::Value {
    rmpv::decode::read_value(&mut &bytes[..]).unwrap()
}

fn set_moves(v: &mut rmpv::Value, json: String) {
    if let rmpv::Value::Map(m) = v {
        for (k, val) in m.iter_mut() {
            if k.as_str() == Some("moves") {
                *val = rmpv::Value::from(json.clone());
            }
        }
    }
}

#[test]
fn empty_and_blank_texts_parse() {
    let Some(model) = model_dir() else {
        println!("skipped: AMP_SPACY_MODEL not set (source scripts/setup.sh)");
        return;
    };
    let nlp = Pipeline::load(&model).unwrap();
    assert!(nlp.parse("").tokens.is_empty());
    let doc = nlp.parse("  \n ");
    assert!(!doc.tokens.is_empty());
    assert!(doc.noun_chunks().is_empty());
    let doc = nlp.parse("A dog.\n\nA cat on a mat.");
    assert_eq!(doc.sentences().len(), 2, "{:?}", doc.tokens);
    let chunks: Vec<String> = doc
        .longest_noun_chunks()
        .iter()
        .map(|&(s, e)| doc.span_text(s, e))
        .collect();
    assert_eq!(chunks, ["A dog", "A cat on a mat"]);
}
