//! Write a world dataset: `cargo run -p amp-world --example gen_world -- <tiny|small|large> <dir> [seed]`.
use amp_world::{World, WorldConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let preset = args.get(1).map(String::as_str).unwrap_or("tiny");
    let dir = args.get(2).map(String::as_str).unwrap_or("target/world");
    let mut cfg = WorldConfig::preset(preset)?;
    if let Some(s) = args.get(3) {
        cfg.seed = s.parse()?;
    }
    let t = std::time::Instant::now();
    let m = World::new(cfg)?.write(std::path::Path::new(dir))?;
    eprintln!(
        "wrote {dir} in {:.1}s: {:?}, vocab {}",
        t.elapsed().as_secs_f64(),
        m.counts,
        m.vocab_size
    );
    Ok(())
}
