//! Peak anonymous memory of one LoRA training step (forward + backward of an MDPO-style
//! surrogate over K = 2 responses of 1,183 tokens (≥ 1,024), 8 decoder layers, hidden 512) with and
//! without gradient checkpointing. Each mode runs in its own child process so the peaks do not
//! mix; a sampling thread reads `RssAnon` from /proc/self/status every millisecond.
//!
//! ```text
//! cargo run --release -p mllm --example grad_checkpoint_memory
//! ```
use mdpo::{PreferenceExample, PreferenceModel, Turn};
use mllm::config::LlavaConfig;
use mllm::lora::LoraConfig;
use mllm::preference::LlavaPreference;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

fn rss_anon_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn step(checkpoint: bool) {
    tch::set_num_threads(1);
    let cfg = LlavaConfig::small(512, 8, 260, 28);
    let mut pm = LlavaPreference::tiny_with(&cfg, 0, Device::Cpu).expect("model");
    pm.model.add_lora(&LoraConfig { r: 16, alpha: 16., dropout: 0., ..Default::default() }, 0).expect("lora");
    pm.grad_checkpoint = checkpoint;
    let turn = |f: &str, v: String| Turn { from: f.into(), value: v };
    let body = |k: usize| (0..1000).map(|i| (b'a' + ((i * (k + 3)) % 26) as u8) as char).collect::<String>();
    let ex = vec![PreferenceExample {
        id: "0".into(),
        image: None,
        responses: (0..2).map(|k| vec![turn("human", "Tell me.".into()), turn("gpt", body(k))]).collect(),
    }];
    let batch = pm.encode(&ex).expect("encode");
    let tokens = batch.ids.size()[1];
    let g = Tensor::from_slice(&[1.0f32, -1.0]).view([2, 1]);
    // the step's own peak: RssAnon above what the model and batch already hold
    let base = rss_anon_kib();
    let peak = Arc::new(AtomicU64::new(base));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_anon_kib(), Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        })
    };
    let t0 = std::time::Instant::now();
    pm.backward_logps(&batch, 0..2, true, &g).expect("step");
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    let gnorm: f64 = pm.trainable_vars().variables().values().map(|v| v.grad().square().sum(Kind::Double).double_value(&[])).sum();
    println!(
        "{} {} {:.1} {:.2} {:.6e}",
        if checkpoint { "checkpointed" } else { "plain" },
        tokens,
        (peak.load(Ordering::Relaxed) - base) as f64 / 1024.0,
        secs,
        gnorm.sqrt()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(mode) = args.get(1) {
        step(mode == "on");
        return;
    }
    let exe = std::env::current_exe().expect("exe");
    let mut rows = Vec::new();
    for mode in ["off", "on"] {
        let out = std::process::Command::new(&exe).arg(mode).output().expect("child");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        rows.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    println!("mode tokens step_peak_rss_anon_mib step_s grad_norm");
    for r in &rows {
        println!("{r}");
    }
    let mib = |r: &str| r.split_whitespace().nth(2).and_then(|x| x.parse::<f64>().ok()).unwrap_or(f64::NAN);
    let (off, on) = (mib(&rows[0]), mib(&rows[1]));
    println!("checkpointing lowers the step's peak anonymous memory by {:.1}% ({off:.0} → {on:.0} MiB)", 100.0 * (1.0 - on / off));
}
