//! torchrun's environment variables → `DistConfig` (one test: the process environment is shared).
use std::time::Duration;

use mdpo_dist::{Backend, DistConfig, Rendezvous};

fn set(vars: &[(&str, Option<&str>)]) {
    for (k, v) in vars {
        // This test binary runs this one test: no other thread reads the environment.
        match v {
            Some(v) => std::env::set_var(k, v),
            None => std::env::remove_var(k),
        }
    }
}

#[test]
fn reads_torchrun_variables_and_names_the_bad_one() {
    let t = Duration::from_secs(7);
    set(&[("WORLD_SIZE", None), ("RANK", None), ("LOCAL_RANK", None), ("MASTER_ADDR", None), ("MASTER_PORT", None), ("AMP_DIST_STORE_FILE", None)]);
    assert_eq!(DistConfig::from_env(Backend::Gloo, t).unwrap(), None, "no WORLD_SIZE: a single process");

    set(&[("WORLD_SIZE", Some("4")), ("RANK", Some("2")), ("LOCAL_RANK", Some("0")), ("MASTER_ADDR", Some("127.0.0.1"))]);
    let c = DistConfig::from_env(Backend::Gloo, t).unwrap().unwrap();
    assert_eq!((c.rank, c.world_size, c.local_rank, c.timeout), (2, 4, 0, t));
    assert_eq!(c.rendezvous, Rendezvous::Tcp { addr: "127.0.0.1".into(), port: 29500 });
    assert_eq!(c.gloo_hostname.as_deref(), Some("127.0.0.1"), "loopback master: Gloo stays on loopback");

    set(&[("MASTER_ADDR", Some("node0.example")), ("MASTER_PORT", Some("1234"))]);
    let c = DistConfig::from_env(Backend::Nccl, t).unwrap().unwrap();
    assert_eq!(c.rendezvous, Rendezvous::Tcp { addr: "node0.example".into(), port: 1234 });
    assert_eq!((c.gloo_hostname, c.backend), (None, Backend::Nccl));

    set(&[("AMP_DIST_STORE_FILE", Some("/tmp/store"))]);
    let c = DistConfig::from_env(Backend::Gloo, t).unwrap().unwrap();
    assert_eq!(c.rendezvous, Rendezvous::File("/tmp/store".into()));
    set(&[("AMP_DIST_STORE_FILE", None)]);

    set(&[("RANK", Some("4"))]);
    let e = DistConfig::from_env(Backend::Gloo, t).unwrap_err().to_string();
    assert!(e.contains("RANK=\"4\"") && e.contains("below WORLD_SIZE=4"), "{e}");
    set(&[("RANK", Some("two"))]);
    let e = DistConfig::from_env(Backend::Gloo, t).unwrap_err().to_string();
    assert!(e.contains("RANK=\"two\": expected an integer"), "{e}");
    set(&[("RANK", Some("1")), ("MASTER_PORT", Some("99999"))]);
    let e = DistConfig::from_env(Backend::Gloo, t).unwrap_err().to_string();
    assert!(e.contains("MASTER_PORT=\"99999\""), "{e}");
    set(&[("MASTER_PORT", None), ("MASTER_ADDR", None)]);
    let e = DistConfig::from_env(Backend::Gloo, t).unwrap_err().to_string();
    assert!(e.contains("MASTER_ADDR"), "{e}");
}
