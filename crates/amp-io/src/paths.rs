//! Data-root containment (docs/reliability.md, "Files outside the data root").
//!
//! An image path found in a data file resolves under the data root: the directory the user named
//! (`--image-root` / `--image-folder` / `--images`), or the data file's own directory. A path that
//! leaves it (`../x`, or an absolute path elsewhere) is refused unless the user passed
//! `--allow-outside-root`, so a hostile data file cannot make a command read `/etc/passwd` and
//! upload it. The check is lexical (after making both paths absolute and folding `.`/`..`):
//! symbolic links *inside* the root are followed, as the user placed them there.
use std::path::{Component, Path, PathBuf};

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is empty.
    #[error("empty path")]
    Empty,
    /// The path leaves the data root.
    #[error(
        "{raw:?} resolves to {resolved}, outside the data root {root}; refused (pass --allow-outside-root \
         to read files outside it)",
        resolved = resolved.display(),
        root = root.display()
    )]
    Outside {
        /// The path as written in the data.
        raw: String,
        /// Where it leads.
        resolved: PathBuf,
        /// The data root.
        root: PathBuf,
    },
}

/// The directory data files may reference files under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRoot {
    root: PathBuf,
    allow_outside: bool,
}

/// `p` made absolute (against the current directory) with `.` and `..` folded lexically.
pub fn normalize(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

impl DataRoot {
    /// A root at `root`; `allow_outside` turns the containment check off.
    pub fn new(root: impl Into<PathBuf>, allow_outside: bool) -> Self {
        DataRoot { root: root.into(), allow_outside }
    }

    /// The root for a data file: `explicit` when given, else the file's directory.
    pub fn for_data_file(data_file: &Path, explicit: Option<&Path>, allow_outside: bool) -> Self {
        let root = explicit
            .map(Path::to_path_buf)
            .unwrap_or_else(|| data_file.parent().map(Path::to_path_buf).unwrap_or_default());
        Self::new(root, allow_outside)
    }

    /// The root as given.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether paths outside the root are allowed.
    pub fn allows_outside(&self) -> bool {
        self.allow_outside
    }

    /// Resolves `raw` (relative paths against the root) and checks containment. The returned
    /// path is `root.join(raw)` (or `raw` when absolute), unnormalised, as before this check.
    pub fn resolve(&self, raw: &str) -> Result<PathBuf, PathError> {
        if raw.trim().is_empty() {
            return Err(PathError::Empty);
        }
        let p = Path::new(raw);
        let joined = if p.is_absolute() { p.to_path_buf() } else { self.root.join(p) };
        if !self.allow_outside {
            let (resolved, root) = (normalize(&joined), normalize(&self.root));
            if !resolved.starts_with(&root) || resolved == root {
                return Err(PathError::Outside { raw: raw.to_string(), resolved, root });
            }
        }
        Ok(joined)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_refused_unless_allowed() {
        let r = DataRoot::new("/data/set", false);
        assert_eq!(r.resolve("images/a.png").unwrap(), PathBuf::from("/data/set/images/a.png"));
        assert_eq!(r.resolve("./images/../b.png").unwrap(), PathBuf::from("/data/set/./images/../b.png"));
        assert!(r.resolve("/data/set/c.png").is_ok());
        for bad in ["../x.png", "images/../../x.png", "/etc/passwd", "/data/setx/a.png", ".", ""] {
            assert!(r.resolve(bad).is_err(), "{bad}");
        }
        let e = r.resolve("../../etc/passwd").unwrap_err().to_string();
        assert!(e.contains("/etc/passwd") && e.contains("outside the data root /data/set") && e.contains("--allow-outside-root"), "{e}");
        let open = DataRoot::new("/data/set", true);
        assert_eq!(open.resolve("/etc/passwd").unwrap(), PathBuf::from("/etc/passwd"));
    }

    #[test]
    fn relative_roots_are_compared_as_absolute_paths() {
        let r = DataRoot::for_data_file(Path::new("data/llava.json"), None, false);
        assert_eq!(r.root(), Path::new("data"));
        assert!(r.resolve("img/1.jpg").is_ok());
        assert!(r.resolve("../img/1.jpg").is_err());
        let cwd = std::env::current_dir().unwrap();
        assert!(r.resolve(cwd.join("data/img/1.jpg").to_str().unwrap()).is_ok());
    }
}
