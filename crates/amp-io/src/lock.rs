//! One writer per output (docs/reliability.md, "One writer per output").
//!
//! Every command that writes a run or output directory takes an exclusive advisory lock
//! (`flock(2)`, `LOCK_EX | LOCK_NB`) on a lock file in it and holds it until it exits. The file
//! holds the holder's pid and command line, so a second process fails at once with a message
//! naming the holder. The lock belongs to the open file, so the kernel releases it when the holder
//! exits for any reason, `kill -9` included: a stale lock file never blocks a rerun (its old
//! contents are simply overwritten).
//!
//! Why `libc::flock` and not `fs4`/`fs2` or `std::fs::File::try_lock`: `libc` is already in the
//! dependency tree (no new code to audit), the call is three lines, and `File::try_lock` needs
//! Rust 1.89 while the workspace promises 1.85. `flock` (not `fcntl` record locks) is what we
//! want: its lock is per open file description, so two opens in one process also exclude each
//! other (that is what the tests use), and closing any other descriptor of the file does not
//! drop it. Advisory only: it stops other `amp` processes, not other programs. On non-Unix
//! targets the lock is not taken (the project builds libtorch for Linux only).
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside a locked directory.
pub const LOCK_FILE: &str = ".amp.lock";

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The lock file could not be created or locked.
    #[error("lock file {path}: {source}", path = path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Another process holds the lock.
    #[error(
        "{output} is being written by another process ({holder}); wait for it to finish or stop it \
         (lock file {path}; a lock left by a killed process is released automatically)",
        output = output.display(),
        path = path.display()
    )]
    Held {
        /// The locked output (directory or file).
        output: PathBuf,
        /// The lock file.
        path: PathBuf,
        /// The holder as recorded in the lock file (`pid N: command line`).
        holder: String,
    },
}

/// An exclusive lock on an output; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct OutputLock {
    file: File,
    path: PathBuf,
}

/// The command line of this process, for the lock file.
fn command_line() -> String {
    std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
}

#[cfg(unix)]
fn try_flock(file: &File) -> std::io::Result<bool> {
    use std::os::unix::io::AsRawFd;
    loop {
        // SAFETY: flock on a file descriptor we own; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(code) if code == libc::EWOULDBLOCK || code == libc::EAGAIN => return Ok(false),
            _ => return Err(e),
        }
    }
}

#[cfg(not(unix))]
fn try_flock(_file: &File) -> std::io::Result<bool> {
    Ok(true)
}

impl OutputLock {
    /// Locks the directory `dir` (created if needed) through `dir/.amp.lock`.
    pub fn dir(dir: &Path) -> Result<Self, LockError> {
        std::fs::create_dir_all(dir).map_err(|source| LockError::Io { path: dir.to_path_buf(), source })?;
        Self::at(&dir.join(LOCK_FILE), dir)
    }

    /// Locks the output file `out` through `out.lock` beside it (its directory is created).
    pub fn file(out: &Path) -> Result<Self, LockError> {
        if let Some(d) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d).map_err(|source| LockError::Io { path: d.to_path_buf(), source })?;
        }
        let mut name = out.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        name.push(".lock");
        Self::at(&out.with_file_name(name), out)
    }

    /// Takes the lock at `path` for `output` (named in the error).
    pub fn at(path: &Path, output: &Path) -> Result<Self, LockError> {
        let io = |source| LockError::Io { path: path.to_path_buf(), source };
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(io)?;
        if !try_flock(&file).map_err(io)? {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim().replace('\n', "; ");
            let holder = if holder.is_empty() { "holder unknown: it has not written the lock file yet".into() } else { holder };
            return Err(LockError::Held { output: output.to_path_buf(), path: path.to_path_buf(), holder });
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "pid {}: {}", std::process::id(), command_line()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(OutputLock { file, path: path.to_path_buf() })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Still holding the lock: clear the holder so a later reader never names a finished
        // process. The kernel releases the lock when the file is closed right after.
        let _ = self.file.set_len(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_fails_naming_the_holder_and_a_released_one_is_retaken() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let first = OutputLock::dir(&out).unwrap();
        let text = std::fs::read_to_string(out.join(LOCK_FILE)).unwrap();
        assert!(text.starts_with(&format!("pid {}: ", std::process::id())), "{text}");
        let e = OutputLock::dir(&out).unwrap_err().to_string();
        assert!(e.contains("being written by another process") && e.contains(&format!("pid {}", std::process::id())), "{e}");
        drop(first);
        let again = OutputLock::dir(&out).unwrap();
        drop(again);
        let f = dir.path().join("answers.jsonl");
        let l = OutputLock::file(&f).unwrap();
        assert_eq!(l.path(), dir.path().join("answers.jsonl.lock"));
        assert!(OutputLock::file(&f).is_err());
    }

    #[test]
    fn a_stale_lock_file_left_by_a_dead_process_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOCK_FILE), "pid 999999: amp train --output-dir x\n").unwrap();
        let l = OutputLock::dir(dir.path()).unwrap();
        let text = std::fs::read_to_string(l.path()).unwrap();
        assert!(!text.contains("999999"), "{text}");
    }
}
