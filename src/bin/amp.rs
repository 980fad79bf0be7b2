//! The `amp` command-line interface.
use clap::Parser;

/// amp: Automated Multi-level Preference for MLLMs.
#[derive(Parser)]
#[command(version, about)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
    eprintln!("amp: no subcommands yet; see README.md");
}
