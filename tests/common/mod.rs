//! Helpers shared by the root package's integration tests that run the `amp` binary on the tiny
//! llava-hf fixtures (`scripts/test.sh` writes them to `$AMP_FIXTURES`).
#![allow(dead_code)]
use std::path::{Path, PathBuf};

/// The tiny llava-hf fixture directory (`llava/`: `hf/`, `image.png`).
pub fn fixtures() -> PathBuf {
    let dir = std::env::var("AMP_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/oracle-fixtures")));
    let llava = dir.join("llava");
    assert!(
        llava.join("hf/config.json").exists(),
        "fixtures missing: run `bash scripts/test.sh` (or $AMP_PYTHON tests/oracles/gen_llava.py {})",
        llava.display()
    );
    llava
}

/// `image` copied next to the data file `data` (its data root: `amp train` and `amp sft` read
/// images only under it unless told otherwise); a path already there, or one that does not
/// exist, is returned as is.
pub fn in_data_root(data: &Path, image: &Path) -> PathBuf {
    let dir = data.parent().expect("a data file in a directory");
    if !image.is_file() || image.parent() == Some(dir) {
        return image.to_path_buf();
    }
    let to = dir.join(image.file_name().expect("an image file name"));
    std::fs::copy(image, &to).expect("copy the image into the data root");
    to
}

/// A two-round LLaVA conversation about the fixture image with answers `a1`, `a2`.
pub fn conv(a1: &str, a2: &str) -> serde_json::Value {
    serde_json::json!([
        {"from": "human", "value": "<image>\nWhat is in the picture?"}, {"from": "gpt", "value": a1},
        {"from": "human", "value": "What colour is it?"}, {"from": "gpt", "value": a2},
    ])
}

/// An AMP training file (K = 3, two rounds) of `n` examples on `image` (copied into the data
/// root, [`in_data_root`]).
pub fn write_amp_file(path: &Path, image: &Path, n: usize) {
    let image = &in_data_root(path, image);
    let rows: Vec<_> = (0..n)
        .map(|i| {
            serde_json::json!({"id": format!("ex{i}"), "image": image, "output_1": conv("a red cat", "red"),
                "output_2": conv("a cat and a dog", "blue"), "output_3": conv("three dogs on a car", "green")})
        })
        .collect();
    std::fs::write(path, serde_json::to_string(&rows).unwrap()).unwrap();
}

/// Copies a directory tree file by file (new modification times, as `cp -r` without `-p`).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}
