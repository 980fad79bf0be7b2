//! Same seed, same adapter bytes — also across a `kill -9` (docs/reliability.md): an `amp train`
//! killed after 1, 2 and 4 seconds and then rerun in the same directory ends with the adapter of
//! an uninterrupted run, byte for byte (the first checkpoint is written before step 1, every
//! later one atomically, the data order and every random draw follow the run's seed, and the
//! killed process's lock does not block the rerun).
mod common;
use common::{fixtures, write_amp_file};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn train_args(data: &Path, run: &Path) -> Vec<String> {
    let model = fixtures().join("hf");
    [
        "train", "--model", model.to_str().unwrap(), "--data", data.to_str().unwrap(), "--levels", "3",
        "--max-steps", "400", "--batch-size", "1", "--grad-accum", "2", "--lora-r", "4", "--lora-dropout", "0.1",
        "--lr", "0.01", "--warmup-steps", "2", "--seed", "11", "--save-every", "7", "--output-dir", run.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec()
}

fn amp(args: &[String]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_amp")).args(args).output().expect("run amp")
}

fn adapter(run: &Path) -> Vec<u8> {
    std::fs::read(run.join("adapter/adapter_model.safetensors")).expect("adapter written")
}

#[test]
fn a_kill_at_1_2_and_4_seconds_then_a_rerun_gives_the_uninterrupted_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("amp.json");
    write_amp_file(&data, &fixtures().join("image.png"), 6);
    let reference = dir.path().join("reference");
    let o = amp(&train_args(&data, &reference));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want = adapter(&reference);
    // Same seed, a second uninterrupted run: the same bytes.
    let again = dir.path().join("again");
    assert!(amp(&train_args(&data, &again)).status.success());
    assert_eq!(adapter(&again), want, "two runs with --seed 11");
    let mut interrupted = 0;
    for secs in [1u64, 2, 4] {
        let run = dir.path().join(format!("killed-{secs}s"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_amp"))
            .args(train_args(&data, &run))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_secs(secs));
        if child.try_wait().unwrap().is_none() {
            interrupted += 1;
        }
        child.kill().ok(); // SIGKILL
        child.wait().unwrap();
        let o = amp(&train_args(&data, &run));
        assert!(o.status.success(), "rerun after a kill at {secs} s: {}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(adapter(&run), want, "killed at {secs} s, then rerun");
    }
    eprintln!("{interrupted} of 3 runs were killed mid-training");
    assert!(interrupted >= 1, "the runs finished before their kills: the test no longer tests resuming");
}
