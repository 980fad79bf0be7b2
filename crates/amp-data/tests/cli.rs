//! The `generate` / `check` / `merge` entry points end to end, with a mock OpenAI-compatible
//! server as the experts.
mod common;

use amp_chat::mock::{MockReply, MockServer};
use amp_data::cli::{self, CheckArgs, GenerateArgs, MergeArgs};
use clap::Parser;

#[derive(Parser)]
enum Cmd {
    Generate(GenerateArgs),
    Check(CheckArgs),
    Merge(MergeArgs),
}

fn parse(args: &[&str]) -> Cmd {
    Cmd::try_parse_from(std::iter::once("amp-data").chain(args.iter().copied())).unwrap()
}

#[test]
fn generate_check_merge_from_the_command_line() {
    let server = MockServer::start(|req| {
        let model = req.json()["model"].as_str().unwrap_or("").to_string();
        MockReply::completion(&model, &format!("{model} says: a red car near a tree."))
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = common::write_llava(&d.join("data"), 6);
    let url = server.base_url();
    let (input_s, d_s) = (
        input.to_str().unwrap().to_string(),
        d.to_str().unwrap().to_string(),
    );
    let e1 = format!("large=llava-13b@{url}");
    let e2 = format!("small=llava-7b@{url}");
    let mut gens = Vec::new();
    for shard in ["0/2", "1/2"] {
        let out = format!("{d_s}/gen-{}.jsonl", &shard[..1]);
        let Cmd::Generate(a) = parse(&[
            "generate",
            "--input",
            &input_s,
            "--out",
            &out,
            "--server-expert",
            &e1,
            "--server-expert",
            &e2,
            "--levels",
            "3",
            "--shard",
            shard,
            "--jobs",
            "2",
        ]) else {
            unreachable!()
        };
        assert_eq!(a.decoding.params(), amp_data::GenParams::default());
        cli::run_generate(&a).unwrap();
        gens.push(out);
    }
    assert_eq!(
        server.requests(),
        2 * 9,
        "6 records, 3 of them 2-round, 2 experts"
    );
    // bad expert spec and wrong K are config errors
    let Cmd::Generate(a) = parse(&[
        "generate",
        "--input",
        &input_s,
        "--out",
        "x",
        "--server-expert",
        "nope",
    ]) else {
        unreachable!()
    };
    assert!(cli::run_generate(&a)
        .unwrap_err()
        .to_string()
        .contains("NAME=MODEL@BASE_URL"));

    // check --skip-check (the "Initial" ranking) needs no embedder; sharded checks then merge
    let mut checked = Vec::new();
    for shard in ["0/2", "1/2"] {
        let mut args = vec!["check", "--generated"];
        args.extend(gens.iter().map(String::as_str));
        let out_dir = format!("{d_s}/ck");
        args.extend(["--out-dir", &out_dir, "--skip-check", "--shard", shard]);
        let Cmd::Check(a) = parse(&args) else {
            unreachable!()
        };
        let o = cli::run_check(&a).unwrap();
        assert!(o.outputs.is_none(), "sharded check writes rows only");
        checked.push(a.rows_path().to_str().unwrap().to_string());
    }
    let out_dir = format!("{d_s}/final");
    let mut args = vec!["merge", "--inputs"];
    args.extend(checked.iter().map(String::as_str));
    args.extend(["--out-dir", &out_dir, "--expect-input", &input_s]);
    let Cmd::Merge(a) = parse(&args) else {
        unreachable!()
    };
    let o = cli::run_merge(&a).unwrap();
    assert_eq!(
        (o.stats.samples, o.stats.levels, o.stats.checked),
        (6, 3, 0)
    );
    let amp: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&o.amp_json).unwrap()).unwrap();
    assert_eq!(
        amp[0]["output_2"][1]["value"],
        "llava-13b says: a red car near a tree."
    );
    assert_eq!(
        amp[0]["output_3"][1]["value"],
        "llava-7b says: a red car near a tree."
    );

    // merge with a shard missing is an error naming the count
    let mut args = vec!["merge", "--inputs", checked[0].as_str()];
    args.extend(["--out-dir", &out_dir, "--expect-input", &input_s]);
    let Cmd::Merge(a) = parse(&args) else {
        unreachable!()
    };
    let e = cli::run_merge(&a).unwrap_err().to_string();
    assert!(e.contains("missing from the merged shards"), "{e}");

    // Without embedders (no `mllm` feature) the auto-check says how to get them; with the feature
    // (as in a workspace build, where the root package enables it) it runs with MiniLM.
    let Cmd::Check(a) = parse(&["check", "--generated", &gens[0], "--out-dir", &out_dir]) else {
        unreachable!()
    };
    if cfg!(feature = "mllm") {
        let o = cli::run_check(&a).unwrap();
        assert_eq!(o.outputs.unwrap().stats.checked, 3);
    } else {
        assert!(cli::run_check(&a)
            .unwrap_err()
            .to_string()
            .contains("run_check_with"));
    }
}
