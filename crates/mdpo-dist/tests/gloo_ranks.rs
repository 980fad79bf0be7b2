//! Two real processes on CPU over c10d's Gloo (127.0.0.1 only): all-reduce and broadcast give the
//! right numbers; a killed rank ends the other with an error naming it within the timeout; a
//! rank whose peer never shows up fails the rendezvous within the timeout.
//!
//! The test binary re-runs itself as the ranks: `rank_main` is an ignored test that does the
//! rank's work when `AMP_DIST_TEST_ROLE` is set.
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mdpo::{Collective, CollectiveError};
use mdpo_dist::{Backend, DistConfig, ProcessGroup, Rendezvous};
use tch::{Device, Kind, Tensor};

const ROLE: &str = "AMP_DIST_TEST_ROLE";

fn spawn_rank(role: &str, rank: usize, world: usize, store: &str, timeout_ms: u64) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["rank_main", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("AMP_TEST_STORE", store)
        .env("AMP_TEST_TIMEOUT_MS", timeout_ms.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn config_from_test_env() -> DistConfig {
    let get = |k: &str| std::env::var(k).unwrap();
    let store = get("AMP_TEST_STORE");
    let rendezvous = match store.strip_prefix("tcp:") {
        Some(port) => Rendezvous::Tcp { addr: "127.0.0.1".into(), port: port.parse().unwrap() },
        None => Rendezvous::File(store.into()),
    };
    DistConfig {
        rank: get("RANK").parse().unwrap(),
        world_size: get("WORLD_SIZE").parse().unwrap(),
        local_rank: 0,
        rendezvous,
        backend: Backend::Gloo,
        timeout: Duration::from_millis(get("AMP_TEST_TIMEOUT_MS").parse().unwrap()),
        gloo_hostname: Some("127.0.0.1".into()),
    }
}

/// What a rank does; prints `RESULT <text>` lines for the parent to check.
#[test]
#[ignore = "a rank process started by the other tests"]
fn rank_main() {
    let Ok(role) = std::env::var(ROLE) else { return };
    let config = config_from_test_env();
    let group = match ProcessGroup::new(&config) {
        Ok(g) => g,
        Err(e) => {
            println!("RESULT error {e}");
            return;
        }
    };
    let r = group.rank() as f32;
    match role.as_str() {
        "math" => {
            // A bucket of two shapes, reduced as one collective.
            let mut ts = vec![
                Tensor::from_slice(&[1.0f32 + r, 2.0 * (r + 1.0)]),
                Tensor::from_slice(&[10.0f32 * r, -1.0, 0.5, r]).view([2, 2]),
            ];
            group.all_reduce_sum(&mut ts).unwrap();
            println!("RESULT sum {:?} {:?}", vec_f32(&ts[0]), vec_f32(&ts[1]));
            // A non-contiguous single tensor takes the bucket path and is written back.
            let mut t = vec![Tensor::from_slice(&[r, 2.0 * r, 3.0 * r, 4.0 * r]).view([2, 2]).tr()];
            group.all_reduce_mean(&mut t).unwrap();
            println!("RESULT mean {:?}", vec_f32(&t[0].contiguous()));
            let mut b = [
                Tensor::full([3], 7.0 + r as f64, (Kind::Double, Device::Cpu)),
                Tensor::from_slice(&[r as i64 * 100]),
            ];
            // Mixed dtypes are two buckets.
            group.broadcast(&mut b[..1], 1).unwrap();
            group.broadcast(&mut b[1..], 1).unwrap();
            println!(
                "RESULT bcast {:?} {:?}",
                Vec::<f64>::try_from(&b[0]).unwrap(),
                Vec::<i64>::try_from(&b[1]).unwrap()
            );
            let me = format!("r{}", group.rank()).repeat(group.rank() + 1);
            let all = mdpo::collective::all_gather_bytes(&group, me.as_bytes()).unwrap();
            println!("RESULT gather {:?}", all.iter().map(|b| String::from_utf8_lossy(b)).collect::<Vec<_>>());
            let mut grads: Vec<Tensor> = (0..3).map(|i| Tensor::full([4], (i as f64 + 1.0) * (r as f64 + 1.0), (Kind::Float, Device::Cpu))).collect();
            let n = mdpo::collective::all_reduce_buckets(&group, &mut grads, 32).unwrap();
            println!("RESULT buckets {n} {:?}", grads.iter().map(|g| vec_f32(g)[0]).collect::<Vec<_>>());
            group.barrier().unwrap();
            println!("RESULT done");
        }
        "victim" => {
            group.barrier().unwrap();
            println!("RESULT ready");
            // Loop all-reduces until the parent kills one of us.
            let start = Instant::now();
            loop {
                let mut t = vec![Tensor::ones([1024], (Kind::Float, Device::Cpu))];
                if let Err(e) = group.all_reduce_sum(&mut t) {
                    let ms = start.elapsed().as_millis();
                    println!("RESULT error-after-ms {ms}");
                    let typed = matches!(e, CollectiveError::PeerFailed { .. });
                    println!("RESULT typed {typed}");
                    println!("RESULT error {e}");
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        other => panic!("unknown role {other}"),
    }
}

fn vec_f32(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&t.reshape([-1])).unwrap()
}

fn results(child: &mut Child) -> Vec<String> {
    let out = child.stdout.take().unwrap();
    BufReader::new(out)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| result_of(&l))
        .collect()
}

/// libtest prints `test rank_main ... ` before the test runs, so a result may share its line.
fn result_of(line: &str) -> Option<String> {
    line.find("RESULT ").map(|i| line[i + "RESULT ".len()..].to_string())
}

/// Kills a rank left running when a test fails, so no process outlives the test.
struct Reaper(Vec<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn run_math(store: &str) {
    let mut ranks = Reaper((0..2).map(|r| spawn_rank("math", r, 2, store, 30_000)).collect());
    let outs: Vec<Vec<String>> = ranks.0.iter_mut().map(results).collect();
    for (r, c) in ranks.0.iter_mut().enumerate() {
        assert!(c.wait().unwrap().success(), "rank {r} failed: {:?}", outs[r]);
    }
    for out in &outs {
        assert_eq!(
            out,
            &vec![
                "sum [3.0, 6.0] [10.0, -2.0, 1.0, 1.0]".to_string(),
                // mean of [[0,0],[0,0]]ᵀ and [[1,2],[3,4]]ᵀ = [[0.5,1.5],[1,2]]
                "mean [0.5, 1.5, 1.0, 2.0]".to_string(),
                "bcast [8.0, 8.0, 8.0] [100]".to_string(),
                r#"gather ["r0", "r1r1"]"#.to_string(),
                // 16-byte tensors, 32-byte buckets: {0, 1} and {2}; sums (i+1)·(1+2).
                "buckets 2 [3.0, 6.0, 9.0]".to_string(),
                "done".to_string(),
            ]
        );
    }
}

#[test]
fn two_ranks_reduce_and_broadcast_over_a_file_store() {
    let dir = tempfile::tempdir().unwrap();
    run_math(dir.path().join("store").to_str().unwrap());
}

#[test]
fn two_ranks_reduce_and_broadcast_over_a_tcp_store() {
    run_math(&format!("tcp:{}", free_port()));
}

#[test]
fn a_killed_rank_ends_the_other_with_an_error_naming_it() {
    let timeout_ms = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let store = store.to_str().unwrap();
    let mut ranks = Reaper(vec![
        spawn_rank("victim", 0, 2, store, timeout_ms),
        spawn_rank("victim", 1, 2, store, timeout_ms),
    ]);
    let lines = BufReader::new(ranks.0[1].stdout.take().unwrap()).lines();
    let ready = lines.map_while(Result::ok).find_map(|l| result_of(&l));
    assert_eq!(ready.as_deref(), Some("ready"));
    std::thread::sleep(Duration::from_millis(200));
    let killed_at = Instant::now();
    ranks.0[1].kill().unwrap();
    let out = results(&mut ranks.0[0]);
    let elapsed = killed_at.elapsed();
    let status = ranks.0[0].wait().unwrap();
    assert!(status.success(), "the survivor reports the error and exits: {status:?}");
    assert!(out.contains(&"typed true".to_string()), "{out:?}");
    let err = out.iter().find(|l| l.starts_with("error ")).expect("an error line");
    assert!(err.contains("rank 0 of 2: all-reduce failed (rank 1 gone)"), "{err}");
    assert!(elapsed < Duration::from_millis(timeout_ms), "took {elapsed:?}");
}

#[test]
fn a_missing_rank_fails_the_rendezvous_within_the_timeout() {
    let timeout_ms = 3_000;
    let start = Instant::now();
    let mut lonely = Reaper(vec![spawn_rank("math", 0, 2, &format!("tcp:{}", free_port()), timeout_ms)]);
    let out = results(&mut lonely.0[0]);
    lonely.0[0].wait().unwrap();
    let elapsed = start.elapsed();
    let err = out.first().expect("an error line");
    assert!(err.starts_with("error rank 0 of 2: rendezvous failed after 3000 ms"), "{err}");
    // The timeout plus process start-up, not a hang.
    assert!(elapsed < Duration::from_millis(timeout_ms + 20_000), "took {elapsed:?}");
}

#[test]
fn a_world_of_one_needs_no_store() {
    let config = DistConfig {
        rank: 0,
        world_size: 1,
        local_rank: 0,
        rendezvous: Rendezvous::File(Path::new("/nonexistent/dir/store").into()),
        backend: Backend::Gloo,
        timeout: Duration::from_secs(1),
        gloo_hostname: None,
    };
    let group = mdpo_dist::connect(&config).unwrap();
    assert_eq!((group.rank(), group.world_size()), (0, 1));
}
