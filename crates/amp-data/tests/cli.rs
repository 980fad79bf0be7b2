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

#[test]
fn server_experts_carry_extra_decoding_fields_into_the_request_body_and_the_metadata() {
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let b2 = bodies.clone();
    let server = MockServer::start(move |req| {
        let v = req.json();
        b2.lock().unwrap().push(v.clone());
        MockReply::completion(v["model"].as_str().unwrap_or(""), "a red car near a tree.")
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = common::write_llava(&d.join("data"), 2);
    let url = server.base_url();
    let beam = format!(
        r#"big=llava-13b@{url}{{"use_beam_search": true, "best_of": 4, "length_penalty": 1.0}}"#
    );
    let plain = format!("small=llava-7b@{url}");
    let gen = d.join("gen.jsonl");
    let (input_s, gen_s) = (input.to_str().unwrap(), gen.to_str().unwrap());
    // `generate --input ... --out ...` with the given extra flags.
    let generate = |flags: &[&str]| {
        let mut args = vec!["generate", "--input", input_s, "--out", gen_s];
        args.extend(flags);
        let Cmd::Generate(a) = parse(&args) else {
            unreachable!()
        };
        cli::run_generate(&a)
    };
    let flags = ["--server-expert", &beam, "--server-expert", &plain];
    generate(&[&flags[..], &["--temperature", "0", "--jobs", "1"]].concat()).unwrap();
    let bodies = bodies.lock().unwrap();
    assert_eq!(
        bodies.len(),
        2 * 3,
        "2 records, one of them 2-round, 2 experts"
    );
    for b in bodies.iter() {
        let o = b.as_object().unwrap();
        if b["model"] == "llava-13b" {
            assert_eq!(b["use_beam_search"], true);
            assert_eq!(b["best_of"], 4);
            assert_eq!(b["length_penalty"], 1.0);
        } else {
            assert_eq!(b["model"], "llava-7b");
            assert!(
                !o.contains_key("use_beam_search") && !o.contains_key("best_of"),
                "{b}"
            );
        }
        assert_eq!(b["temperature"], 0.0);
        assert_eq!(b["max_tokens"], 512);
        assert!(b["messages"].is_array());
    }
    // Recorded with every generated response ...
    let rows: Vec<amp_data::GeneratedRow> = amp_data::pipeline::load_rows(&gen).unwrap();
    for r in &rows {
        let big = &r.candidates[0].decoding;
        assert_eq!(big["model"], "llava-13b");
        assert_eq!(
            big["extra"],
            serde_json::json!({"use_beam_search": true, "best_of": 4, "length_penalty": 1.0})
        );
        assert_eq!(r.candidates[1].decoding["model"], "llava-7b");
        assert!(r.candidates[1].decoding.get("extra").is_none());
    }
    // ... and in the data set's meta.jsonl.
    let out = d.join("ck");
    let Cmd::Check(c) = parse(&[
        "check",
        "--generated",
        gen_s,
        "--out-dir",
        out.to_str().unwrap(),
        "--skip-check",
    ]) else {
        unreachable!()
    };
    let o = cli::run_check(&c).unwrap().outputs.unwrap();
    let meta = std::fs::read_to_string(o.meta_jsonl).unwrap();
    let big: Vec<serde_json::Value> = meta
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|m| m["source"] == "big")
        .collect();
    assert_eq!(big.len(), 2);
    assert!(big
        .iter()
        .all(|m| m["decoding"]["extra"]["use_beam_search"] == true));

    // Not a JSON object, or a standard field in disguise: named config errors.
    for (spec, needle) in [
        (format!("big=m@{url}{{\"best_of\": }}"), "not a JSON object"),
        (
            format!("big=m@{url}{{\"temperature\": 1.0}}"),
            "standard chat-completions field",
        ),
    ] {
        let e = generate(&["--server-expert", &spec])
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{spec}: {e}");
    }
}
