//! The demo report: `report.md`, `report.json`, `curves.png` (training loss and reward accuracy
//! per variant, mean over seeds) and `bars.png` (benchmark numbers per variant, mean ± std).
use super::stats::Spread;
use super::{io_err, write_json, DemoError, DemoReport, EvalResult, Result};
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// The MRHal-style metrics in the report, with their labels.
pub const MRHAL_METRICS: [(&str, &str); 4] = [
    ("cumulative_score", "score (cum.) ↑"),
    ("mean_score", "score (mean) ↑"),
    ("cumulative_hallucination_rate", "hal. rate (cum.) ↓"),
    ("mean_hallucination_rate_refcode", "hal. rate (mean) ↓"),
];

/// POPE metrics per split.
pub const POPE_METRICS: [&str; 3] = ["accuracy", "f1", "yes_ratio"];

fn spread_of<'a>(runs: impl Iterator<Item = &'a EvalResult>, get: impl Fn(&EvalResult) -> Option<f64>) -> Option<Spread> {
    let v: Vec<f64> = runs.filter_map(get).collect();
    Spread::of(&v)
}

fn cell(s: Option<Spread>, digits: usize) -> String {
    s.map(|s| s.fmt(digits)).unwrap_or_else(|| "–".into())
}

fn fmt_iv(iv: &super::stats::Interval) -> String {
    format!("{:+.3} [{:+.3}, {:+.3}]", iv.diff, iv.lo, iv.hi)
}

/// Whether an interval of a "lower is better" difference (a − b) supports a < b.
fn verdict(iv: &super::stats::Interval) -> &'static str {
    if iv.hi < 0.0 {
        "supports it"
    } else if iv.lo > 0.0 {
        "contradicts it (significantly worse)"
    } else {
        "does not support it (the interval includes 0)"
    }
}

/// Section 3: the headline table with intervals, per-category rates, the anchor's share and
/// one sentence per paper claim.
fn results_with_intervals(s: &mut String, r: &DemoReport) {
    use super::stats::{paired_bootstrap, rate, Count};
    let _ = writeln!(s, "\n## 3. Preference training against the SFT control\n");
    let n_items = r.results.get(super::BASE_ROW).and_then(|m| m.values().next()).map(|e| e.items.len()).unwrap_or(0);
    let se = r
        .results
        .get(super::BASE_ROW)
        .and_then(|m| m.values().next())
        .map(|e| super::stats::binomial_se(&e.counts(super::round_counts)))
        .unwrap_or(f64::NAN);
    let _ = writeln!(
        s,
        "{} benchmark dialogues (standard error of the base's round hallucination rate {:.4}). Δ = variant − SFT control, items pooled over the {} seeds, \
         with a paired-bootstrap 95% interval ({} resamples over the benchmark dialogues, seeded); negative Δ = fewer hallucinations than the control. \
         The SFT control fine-tunes the base on the standard responses of the same preference prompts for the same steps (MDPO's anchor alone).\n",
        n_items,
        se,
        r.seeds.len(),
        r.config.bootstrap
    );
    let _ = writeln!(s, "| variant | K | levels | MRHal hal. rate ↓ | Δ vs control [95% CI] | claim hal. rate ↓ | Δ vs control [95% CI] | POPE rand acc / F1 / yes |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
    for v in variant_order(r) {
        let runs = &r.results[&v];
        let var = r.config.variants.iter().find(|x| x.name == v);
        let k = var.map(|x| x.levels.to_string()).unwrap_or_else(|| "–".into());
        let levels = var.map(|x| if x.pool.is_empty() { "–".to_string() } else { format!("std > {}", x.pool.join(" > ")) }).unwrap_or_else(|| "–".into());
        let mr = cell(spread_of(runs.values(), |e| e.mrhal.get("cumulative_hallucination_rate").copied()), 3);
        let cl = cell(spread_of(runs.values(), |e| Some(e.claim_hallucination_rate())), 3);
        let (d1, d2) = r.intervals.get(&v).map(|(a, b)| (fmt_iv(a), fmt_iv(b))).unwrap_or(("–".into(), "–".into()));
        let p = |m: &str| cell(spread_of(runs.values(), |e| e.pope.get(&format!("random/{m}")).copied()), 3);
        let _ = writeln!(s, "| {v} | {k} | {levels} | {mr} | {d1} | {cl} | {d2} | {} / {} / {} |", p("accuracy"), p("f1"), p("yes_ratio"));
    }
    // Per-category round hallucination rates (pooled over seeds).
    let mut cats: Vec<String> = Vec::new();
    for runs in r.results.values() {
        for e in runs.values() {
            for it in &e.items {
                for rd in &it.rounds {
                    if !cats.contains(&rd.category) {
                        cats.push(rd.category.clone());
                    }
                }
            }
        }
    }
    cats.sort();
    if !cats.is_empty() {
        let _ = writeln!(s, "\nRound hallucination rate per MRHal category (pooled over seeds):\n");
        let _ = writeln!(s, "| variant | {} |", cats.join(" | "));
        let _ = writeln!(s, "|---|{}", "---|".repeat(cats.len()));
        for v in variant_order(r) {
            let mut row = format!("| {v} |");
            for c in &cats {
                let items: Vec<Count> = r.results[&v]
                    .values()
                    .flat_map(|e| e.counts(|rd| if &rd.category == c { super::round_counts(rd) } else { (0.0, 0.0) }))
                    .collect();
                let _ = write!(row, " {:.3} |", rate(&items));
            }
            let _ = writeln!(s, "{row}");
        }
    }
    if !r.anchor_gradients.is_empty() {
        let _ = writeln!(s, "\nGradient norms at the base on the first batch (unclipped): the anchor's share of the update.\n");
        let _ = writeln!(s, "| variant | ‖∇ anchor‖ | ‖∇ pair terms‖ | ‖∇ loss‖ | anchor / (anchor + pairs) |");
        let _ = writeln!(s, "|---|---|---|---|---|");
        for (v, (a, p, t)) in &r.anchor_gradients {
            let _ = writeln!(s, "| {v} | {a:.3} | {p:.3} | {t:.3} | {:.3} |", a / (a + p));
        }
    }
    // One sentence per claim of the paper, from the intervals (MRHal round hallucination rate).
    let pooled = |name: &str| -> Option<Vec<Count>> { Some(super::results::pooled_counts(r.results.get(name)?.values(), super::round_counts)) };
    let diff = |a: &str, b: &str| -> Option<super::stats::Interval> { paired_bootstrap(&pooled(a)?, &pooled(b)?, r.config.bootstrap, 0.95, r.config.world.seed) };
    let k4 = r.results.contains_key("mdpo-k4");
    let _ = writeln!(s, "\n### The paper's claims in this run (MRHal round hallucination rate, Δ [95% CI])\n");
    let mut claim = |text: &str, a: &str, b: &str, strict: bool| {
        match diff(a, b) {
            Some(iv) => {
                let v = if strict { verdict(&iv) } else if iv.lo > 0.0 { "contradicts it" } else { "is consistent with it (not significantly worse)" };
                let _ = writeln!(s, "- {text}: {a} − {b} = {}; this run {v}.", fmt_iv(&iv));
            }
            None => {
                let _ = writeln!(s, "- {text}: not measured in this run ({a} or {b} missing).");
            }
        }
    };
    if k4 {
        claim("MDPO beats DPO (K = 4 vs binary DPO)", "mdpo-k4", "dpo-k2", true);
        claim("MDPO beats the SFT control (the anchor alone)", "mdpo-k4", super::CONTROL_ROW, true);
        claim("K = 4 is at least as good as K = 3", "mdpo-k4", "mdpo-k3", false);
        claim("K = 3 beats K = 2 (MDPO)", "mdpo-k3", "mdpo-k2", true);
        claim("the auto-check helps (checked vs unchecked ranking, K = 4)", "mdpo-k4", "mdpo-k4-initial", true);
    }
}

/// Variants in report order: the untouched base first, then the configuration's order.
fn variant_order(r: &DemoReport) -> Vec<String> {
    let mut v = vec![super::BASE_ROW.to_string()];
    v.extend(r.config.variants.iter().map(|x| x.name.clone()));
    v.retain(|n| r.results.contains_key(n));
    v
}

/// The Markdown text.
pub fn markdown(r: &DemoReport) -> String {
    let mut s = String::new();
    let c = &r.config;
    let _ = writeln!(s, "# AMP end-to-end demo (preset `{}`)\n", c.preset);
    let _ = writeln!(
        s,
        "Synthetic world (seed {}, {} px images, {}–{} objects, {} shapes × {} colours × {} sizes, 3×3 grid): \
         {} SFT scenes, {} preference prompts, {} benchmark dialogues, {} POPE images. Seeds of the preference \
         training: {:?} (the world, the experts and the preference data are the same for every seed; the seed \
         changes the data order of MDPO/DPO training). Every number below is mean ± sample std over the seeds \
         unless marked otherwise. Wall time of this invocation {:.0} s; all stages from scratch {:.0} s ({} CPU threads).\n",
        c.world.seed,
        c.world.image_size,
        c.world.min_objects,
        c.world.max_objects,
        c.world.n_shapes,
        c.world.n_colours,
        c.world.n_sizes,
        c.world.n_train,
        c.world.n_pref,
        c.world.n_bench,
        c.world.n_pope,
        r.seeds,
        r.total_wall_s,
        r.total_compute_s,
        tch::get_num_threads()
    );

    if let Some(t) = &r.tower {
        let _ = writeln!(s, "## 0. Stage 0: the shared vision tower\n");
        let _ = writeln!(
            s,
            "Trained alone on the per-cell labels of {} train images, then frozen for every expert and every preference run. \
             Held-out per-cell accuracy ({} benchmark images): occupancy {:.3}, shape (with \"empty\") {:.3}, colour {:.3}, size {:.3}; \
             all three right on {:.3} of the occupied cells.{}\n",
            t.train_images,
            t.held_out_images,
            t.occupancy,
            t.shape,
            t.colour,
            t.size,
            t.all_attributes,
            t.position.map_or(String::new(), |p| format!(" Each patch token's own cell, read back from its feature: {p:.3}."))
        );
    }
    // Experts.
    let _ = writeln!(s, "## 1. Multi-size experts (the MEG premise)\n");
    let _ = writeln!(
        s,
        "| expert | params | claim hal. rate ↓ | MRHal score (cum.) | MRHal hal. rate (cum.) | POPE acc (adv/pop/rand) | shape / colour / size right (located claims) |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for e in &r.experts {
        let g = |k: &str| e.eval.mrhal.get(k).map(|x| format!("{x:.3}")).unwrap_or_else(|| "–".into());
        let p = |k: &str| e.eval.pope.get(k).map(|x| format!("{x:.3}")).unwrap_or_else(|| "–".into());
        let q = |k: &str| e.eval.grounding.get(k).map(|x| format!("{x:.2}")).unwrap_or_else(|| "–".into());
        let _ = writeln!(
            s,
            "| {}{} | {} | {:.3} | {} | {} | {} / {} / {} | {} / {} / {} ({}) |",
            e.name,
            if e.name == c.base { " (base)" } else { "" },
            e.params,
            e.eval.claim_hallucination_rate(),
            g("cumulative_score"),
            g("cumulative_hallucination_rate"),
            p("adversarial/accuracy"),
            p("popular/accuracy"),
            p("random/accuracy"),
            q("shape_accuracy"),
            q("colour_accuracy"),
            q("size_accuracy"),
            e.eval.grounding.get("located_claims").map(|x| x.to_string()).unwrap_or_else(|| "–".into()),
        );
    }
    let _ = writeln!(
        s,
        "\nThe last column reads every \"<size> <colour> <shape> in the <cell>\" claim of an expert's benchmark answers whose cell holds an object, and counts how often each named attribute is that object's, leaving out attribute words the question already named (copying them shows nothing): a grounding measure (does the model see *what* is where?). Claim hallucination rate: hallucinated / checkable claims of the benchmark answers (rule judge over the scene graph)."
    );
    if let Some(g) = &r.gates {
        let _ = writeln!(s, "\n### Gates (checked before preference training)\n");
        for l in super::gates::lines(g) {
            let _ = writeln!(s, "- {l}");
        }
        let _ = writeln!(s, "\nAll gates passed: **{}**.", if g.passed { "yes" } else { "NO" });
    }
    let _ = writeln!(
        s,
        "\nHallucination rate falls strictly with model size: **{}** (single runs; the experts are trained once).\n",
        if r.hallucination_falls_with_size { "yes" } else { "NO — the MEG size ordering does not hold for these experts" }
    );

    // Data.
    let _ = writeln!(s, "## 2. Preference data and the auto-check\n");
    let q = &r.ranking;
    let pct = |x: f64| format!("{:.2}%", 100.0 * x);
    let _ = writeln!(
        s,
        "Ranking quality on the {} MEG samples (truth: the number of hallucinated claims of each response, known from the scene graph; \
         a pair is wrong when the higher-ranked response has more hallucinated claims). The paper reports 2.25% inconsistency for its data.\n",
        q.samples
    );
    let _ = writeln!(s, "| pairs | initial (model-size order) | after auto-check |");
    let _ = writeln!(s, "|---|---|---|");
    let _ = writeln!(
        s,
        "| generated responses: wrong / all pairs | {} ({}/{}) | {} ({}/{}) |",
        pct(q.initial.wrong_rate()),
        q.initial.wrong,
        q.initial.pairs,
        pct(q.checked.wrong_rate()),
        q.checked.wrong,
        q.checked.pairs
    );
    let _ = writeln!(
        s,
        "| generated responses: wrong / pairs with different truth | {} | {} |",
        pct(q.initial.wrong_rate_decided()),
        pct(q.checked.wrong_rate_decided())
    );
    let _ = writeln!(
        s,
        "| with the standard response (level 0): wrong / all pairs | {} | {} |",
        pct(q.initial_with_standard.wrong_rate()),
        pct(q.checked_with_standard.wrong_rate())
    );
    let _ = writeln!(s, "\nMean hallucinated claims per response: standard {:.3}; {}.\n", q.standard_mean_hallucinations,
        q.mean_hallucinations_by_source.iter().map(|(n, h)| format!("{n} {h:.3}")).collect::<Vec<_>>().join(", "));
    let _ = writeln!(s, "| data set | samples | K | auto-checked | rankings changed | samples with ties |");
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for (name, d) in &r.dataset_stats {
        let _ = writeln!(s, "| {name} | {} | {} | {} | {} | {} |", d.samples, d.levels, d.checked, d.changed, d.samples_with_ties);
    }

    results_with_intervals(&mut s, r);
    // Results.
    let _ = writeln!(s, "\n### All metrics (mean ± std over {} seeds)\n", r.seeds.len());
    let _ = write!(s, "| variant | K | ");
    for (_, label) in MRHAL_METRICS {
        let _ = write!(s, "MRHal {label} | ");
    }
    let _ = writeln!(s, "shape right (located) | missing |");
    let _ = writeln!(s, "|---|---|{}---|---|", "---|".repeat(MRHAL_METRICS.len()));
    for v in variant_order(r) {
        let runs = &r.results[&v];
        let k = r.config.variants.iter().find(|x| x.name == v).map(|x| x.levels.to_string()).unwrap_or_else(|| "–".into());
        let _ = write!(s, "| {v} | {k} | ");
        for (m, _) in MRHAL_METRICS {
            let _ = write!(s, "{} | ", cell(spread_of(runs.values(), |e| e.mrhal.get(m).copied()), 3));
        }
        let _ = write!(s, "{} | ", cell(spread_of(runs.values(), |e| e.grounding.get("shape_accuracy").copied()), 3));
        let missing: usize = runs.values().map(|e| e.missing).sum();
        let _ = writeln!(s, "{missing} |");
    }
    let _ = writeln!(s, "\nPOPE (accuracy / F1 / yes-ratio per split):\n");
    let _ = write!(s, "| variant |");
    for split in amp_world::pope::POPE_SPLITS {
        let _ = write!(s, " {split} acc | {split} F1 | {split} yes |");
    }
    let _ = writeln!(s, "\n|---|{}", "---|".repeat(9));
    for v in variant_order(r) {
        let runs = &r.results[&v];
        let _ = write!(s, "| {v} |");
        for split in amp_world::pope::POPE_SPLITS {
            for m in POPE_METRICS {
                let key = format!("{split}/{m}");
                let _ = write!(s, " {} |", cell(spread_of(runs.values(), |e| e.pope.get(&key).copied()), 3));
            }
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "\n![training curves](curves.png)\n\n![benchmark bars](bars.png)\n");

    // Timings.
    let _ = writeln!(s, "## 4. Wall time per stage\n");
    let _ = writeln!(s, "| stage | this run (s) | when it ran (s) |");
    let _ = writeln!(s, "|---|---|---|");
    for t in &r.stages {
        let _ = writeln!(s, "| {} | {} | {:.1} |", t.stage, if t.skipped { "skipped".to_string() } else { format!("{:.1}", t.wall_s) }, t.previous_s);
    }
    s
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> DemoError {
    DemoError::Stage { stage: "report".into(), message: format!("{}: {e}", path.display()) }
}

/// Training curves: loss (left) and reward accuracy (right) per variant, mean over seeds.
pub fn curves_png(r: &DemoReport, path: &Path) -> Result<()> {
    mrhal_bench::report::register_font();
    let root = BitMapBackend::new(path, (1200, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let panels = root.split_evenly((1, 2));
    for (pi, panel) in panels.iter().enumerate() {
        // variant → mean over seeds per step.
        let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
        for (v, seeds) in &r.curves {
            let mut by_step: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
            for rows in seeds.values() {
                for &(step, loss, acc) in rows {
                    let y = if pi == 0 { Some(loss) } else { acc };
                    if let Some(y) = y.filter(|y| y.is_finite()) {
                        by_step.entry(step).or_default().push(y);
                    }
                }
            }
            let pts: Vec<(f64, f64)> = by_step.into_iter().map(|(k, ys)| (k as f64, ys.iter().sum::<f64>() / ys.len() as f64)).collect();
            if !pts.is_empty() {
                series.push((v.clone(), pts));
            }
        }
        let xmax = series.iter().flat_map(|s| s.1.iter().map(|p| p.0)).fold(1.0f64, f64::max);
        let (ymin, ymax) = series
            .iter()
            .flat_map(|s| s.1.iter().map(|p| p.1))
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| (a.min(y), b.max(y)));
        let (ymin, ymax) = if ymin.is_finite() && ymax > ymin { (ymin, ymax + 0.05 * (ymax - ymin)) } else { (0.0, 1.0) };
        let title = if pi == 0 { "preference loss (mean over seeds)" } else { "reward accuracy (mean over seeds)" };
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 20).into_font())
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..xmax, ymin..ymax)
            .map_err(|e| plot_err(path, e))?;
        chart
            .configure_mesh()
            .x_desc("step")
            .label_style(("sans-serif", 13).into_font())
            .draw()
            .map_err(|e| plot_err(path, e))?;
        for (i, (name, pts)) in series.iter().enumerate() {
            let color = Palette99::pick(i).mix(0.9);
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
                .map_err(|e| plot_err(path, e))?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
        }
        if !series.is_empty() {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 12).into_font())
                .draw()
                .map_err(|e| plot_err(path, e))?;
        }
    }
    root.present().map_err(|e| plot_err(path, e))?;
    Ok(())
}

/// Bars with ±std whiskers: MRHal cumulative hallucination rate, MRHal cumulative score and POPE
/// adversarial F1, per variant.
pub fn bars_png(r: &DemoReport, path: &Path) -> Result<()> {
    mrhal_bench::report::register_font();
    let metrics: [(&str, bool, &str); 3] = [
        ("cumulative_hallucination_rate", true, "MRHal hallucination rate (cum.) ↓"),
        ("cumulative_score", true, "MRHal score (cum.) ↑"),
        ("adversarial/f1", false, "POPE adversarial F1 ↑"),
    ];
    let names = variant_order(r);
    let n = names.len().max(1);
    let root = BitMapBackend::new(path, (560 * 3, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let panels = root.split_evenly((1, 3));
    for (panel, (m, is_mrhal, title)) in panels.iter().zip(metrics) {
        let vals: Vec<Option<Spread>> = names
            .iter()
            .map(|v| spread_of(r.results[v].values(), |e| if is_mrhal { e.mrhal.get(m).copied() } else { e.pope.get(m).copied() }))
            .collect();
        let ymax = vals.iter().flatten().map(|s| s.mean + s.std).fold(0.0f64, f64::max);
        // Head-room above the tallest bar for the legend.
        let ymax = if ymax <= 0.0 { 1.0 } else { ymax * 1.6 };
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 18).into_font())
            .margin(12)
            .x_label_area_size(20)
            .y_label_area_size(56)
            .build_cartesian_2d((0..n - 1).into_segmented(), 0.0..ymax)
            .map_err(|e| plot_err(path, e))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => format!("{}", i + 1),
                _ => String::new(),
            })
            .label_style(("sans-serif", 12).into_font())
            .draw()
            .map_err(|e| plot_err(path, e))?;
        for (i, v) in vals.iter().enumerate() {
            let Some(v) = v else { continue };
            let color = Palette99::pick(i).mix(0.85);
            chart
                .draw_series(Histogram::vertical(&chart).style(color.filled()).margin(10).data(std::iter::once((i, v.mean))))
                .map_err(|e| plot_err(path, e))?
                .label(format!("{}. {} ({:.3} ± {:.3})", i + 1, names[i], v.mean, v.std))
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(SegmentValue::CenterOf(i), v.mean - v.std), (SegmentValue::CenterOf(i), v.mean + v.std)],
                    BLACK.stroke_width(2),
                )))
                .map_err(|e| plot_err(path, e))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 11).into_font())
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| plot_err(path, e))?;
    }
    root.present().map_err(|e| plot_err(path, e))?;
    Ok(())
}

/// Write `report.md`, `report.json`, `curves.png` and `bars.png` into `dir`.
pub fn write(r: &DemoReport, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    write_json(&dir.join("report.json"), r)?;
    curves_png(r, &dir.join("curves.png"))?;
    bars_png(r, &dir.join("bars.png"))?;
    let md = dir.join("report.md");
    std::fs::write(&md, markdown(r)).map_err(io_err(&md))?;
    Ok(())
}
