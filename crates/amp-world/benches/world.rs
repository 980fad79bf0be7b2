//! Throughput of world generation, claim extraction and judging (`cargo bench -p amp-world`).
use amp_world::judge::judge_round;
use amp_world::{Split, World, WorldConfig};
use std::time::Instant;

fn main() {
    let world = World::new(WorldConfig::small()).expect("valid");
    let t = Instant::now();
    let scenes = world.scenes(Split::Bench);
    let recs: Vec<_> = (0..2000)
        .map(|i| world.bench_record(&world.scene(Split::Train, i)))
        .collect();
    let dt = t.elapsed().as_secs_f64();
    println!(
        "scenes+dialogues: {:.0}/s ({} bench scenes)",
        2000.0 / dt,
        scenes.len()
    );
    let t = Instant::now();
    let mut n = 0;
    for (i, r) in recs.iter().enumerate() {
        let s = world.scene(Split::Train, i);
        for k in 0..r.revised.len() / 2 {
            let a = &r.revised[2 * k + 1].value;
            let _ = judge_round(&s, &r.revised[2 * k].value, a, Some(a));
            n += 1;
        }
    }
    println!(
        "judge_round: {:.0} rounds/s",
        n as f64 / t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let mut px = 0usize;
    for i in 0..2000 {
        px += amp_world::render::render(&world.scene(Split::Train, i), true).len();
    }
    println!(
        "render 48x48 AA: {:.0} images/s ({px} bytes)",
        2000.0 / t.elapsed().as_secs_f64()
    );
}
