//! `--nproc N` on one machine: this process re-runs its own command line N times as ranks
//! 0..N with torchrun's variables (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR=127.0.0.1`,
//! `MASTER_PORT` = a free port) and waits for them. A rank that fails ends the job: the others
//! get `timeout` (plus a grace period) to fail on their own, then are killed.
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// Set in the ranks a launcher starts, so they do not launch again.
pub const LAUNCHED_ENV: &str = "AMP_DIST_LAUNCHED";

/// What can go wrong launching local ranks.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("--nproc {0}: expected at least 1")]
    NoRanks(usize),
    #[error("cannot start rank {rank}: {source}")]
    Spawn {
        rank: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("no free local port for the rendezvous: {0}")]
    Port(#[source] std::io::Error),
    #[error("rank {rank} of {world} failed ({status}); the job was stopped")]
    RankFailed { rank: usize, world: usize, status: String },
}

/// True in a rank started by [`launch_local`].
pub fn is_launched_rank() -> bool {
    std::env::var_os(LAUNCHED_ENV).is_some()
}

/// Run this program's own command line as `nproc` local ranks and wait for all of them.
pub fn launch_local(nproc: usize, timeout: Duration) -> Result<(), LaunchError> {
    if nproc == 0 {
        return Err(LaunchError::NoRanks(nproc));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(LaunchError::Port)?
        .port();
    let exe = std::env::current_exe().map_err(|source| LaunchError::Spawn { rank: 0, source })?;
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let mut ranks = Ranks(Vec::with_capacity(nproc));
    for rank in 0..nproc {
        let child = Command::new(&exe)
            .args(&args)
            .env(LAUNCHED_ENV, "1")
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", nproc.to_string())
            .env("LOCAL_WORLD_SIZE", nproc.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .spawn()
            .map_err(|source| LaunchError::Spawn { rank, source })?;
        ranks.0.push(Some(child));
    }
    ranks.wait(timeout + Duration::from_secs(10))
}

/// The children; any still running when this is dropped are killed.
struct Ranks(Vec<Option<Child>>);

impl Ranks {
    fn wait(&mut self, grace: Duration) -> Result<(), LaunchError> {
        let world = self.0.len();
        let mut failed: Option<(usize, ExitStatus, Instant)> = None;
        loop {
            let mut running = 0;
            for (rank, slot) in self.0.iter_mut().enumerate() {
                let Some(child) = slot else { continue };
                match child.try_wait() {
                    Ok(Some(status)) => {
                        *slot = None;
                        if !status.success() && failed.is_none() {
                            failed = Some((rank, status, Instant::now()));
                        }
                    }
                    Ok(None) => running += 1,
                    Err(_) => *slot = None,
                }
            }
            if running == 0 {
                break;
            }
            if failed.as_ref().is_some_and(|(_, _, at)| at.elapsed() > grace) {
                self.kill_all();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        match failed {
            None => Ok(()),
            Some((rank, status, _)) => {
                Err(LaunchError::RankFailed { rank, world, status: status.to_string() })
            }
        }
    }

    fn kill_all(&mut self) {
        for child in self.0.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.0.iter_mut().for_each(|c| *c = None);
    }
}

impl Drop for Ranks {
    fn drop(&mut self) {
        self.kill_all();
    }
}
