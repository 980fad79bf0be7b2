//! Does a demo model look at the image? Mean negative log-likelihood per response token of a
//! world's dialogues with the true images and with the images shuffled across records. A model
//! that ignores the image scores the same on both; the gap is how much the image tells it.
//!
//! ```text
//! cargo run --example ground_probe -- runs/demo/models/d64/model runs/demo/world pref.json [N]
//! ```
use amp::pipeline::engine::{DemoModel, Init, Trainable};
use mdpo::PreferenceModel;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err("usage: ground_probe MODEL_DIR WORLD_DIR FILE.json [N]".into());
    }
    let (model, world) = (PathBuf::from(&args[1]), PathBuf::from(&args[2]));
    let n: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(256);
    let opts = mdpo::data::LoadOptions { image_root: Some(world.join("images")), check_images: true, ..Default::default() };
    let truth: Vec<_> = mdpo::data::load_sft_file(&world.join(&args[3]), &opts)?.into_iter().take(n).collect();
    // A derangement: every record gets another record's image.
    let mut shuffled = truth.clone();
    for (i, ex) in shuffled.iter_mut().enumerate() {
        ex.image = truth[(i + 7) % truth.len()].image.clone();
    }
    let (_, policy) = DemoModel::open(&Init::From(model), &world.join("tokenizer.json"), Trainable::Nothing)?.into_policy();
    for (name, set) in [("true images", &truth), ("shuffled images", &shuffled)] {
        let (mut logp, mut tokens) = (0.0, 0.0);
        for chunk in set.chunks(32) {
            let batch = policy.encode(chunk)?;
            let r = tch::no_grad(|| policy.response_logps(&batch, 0..1, false))?;
            logp += r.sum.sum(tch::Kind::Double).double_value(&[]);
            tokens += r.tokens.sum(tch::Kind::Double).double_value(&[]);
        }
        println!("{name}: NLL/token {:.4} over {tokens} response tokens", -logp / tokens);
    }
    Ok(())
}
