//! Who the other ranks are (host and process id, exchanged through the store at rendezvous), so
//! that a failed collective can name the rank that died rather than only a socket address.
/// One rank's process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub host: String,
    pub pid: u32,
}

impl Peer {
    /// This process.
    pub fn this_process() -> Self {
        Self { host: hostname(), pid: std::process::id() }
    }

    pub(crate) fn encode(&self) -> String {
        format!("{} {}", self.pid, self.host)
    }

    pub(crate) fn decode(s: &str) -> Self {
        let (pid, host) = s.split_once(' ').unwrap_or(("0", s));
        Self { host: host.to_string(), pid: pid.parse().unwrap_or(0) }
    }

    /// True when this peer runs on this machine and its process is gone (or a zombie). A peer
    /// on another machine is never reported dead from here.
    pub fn is_dead_local_process(&self) -> bool {
        if self.pid == 0 || self.host != hostname() {
            return false;
        }
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            // The state is the first field after the parenthesised command name.
            Ok(stat) => stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state == "Z" || state == "X"),
            Err(_) => true,
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_and_decodes() {
        let p = Peer { host: "node-1".into(), pid: 4242 };
        assert_eq!(Peer::decode(&p.encode()), p);
    }

    #[test]
    fn this_process_is_alive_and_a_reaped_child_is_dead() {
        assert!(!Peer::this_process().is_dead_local_process());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(Peer { host: Peer::this_process().host, pid }.is_dead_local_process());
        // Another machine's process is never judged from here.
        assert!(!Peer { host: "elsewhere.invalid".into(), pid }.is_dead_local_process());
    }
}
