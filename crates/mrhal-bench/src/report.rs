//! Reports: results JSON, a Markdown comparison table and a PNG bar chart.

use std::collections::BTreeSet;
use std::path::Path;

use plotters::prelude::*;

use crate::answers::Benchmark;
use crate::error::{BenchError, Result};
use crate::runner::RunResults;

/// Writes a results file (pretty JSON; written to a temp file then renamed).
pub fn write_results(path: &Path, r: &RunResults) -> Result<()> {
    let text = serde_json::to_string_pretty(r).map_err(|e| BenchError::Invalid(e.to_string()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| BenchError::io(dir, e))?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(|e| BenchError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| BenchError::io(path, e))
}

/// Reads a results file.
pub fn read_results(path: &Path) -> Result<RunResults> {
    let text = std::fs::read_to_string(path).map_err(|e| BenchError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| BenchError::Parse { path: path.into(), reason: format!("not a results file: {e}") })
}

/// The headline metrics of a benchmark (used when the caller names none).
pub fn default_metrics(bench: Benchmark) -> Vec<String> {
    let v: &[&str] = match bench {
        Benchmark::Mrhal => &[
            "cumulative_score",
            "mean_score",
            "cumulative_hallucination_rate",
            "mean_hallucination_rate_paper",
            "mean_hallucination_rate_refcode",
        ],
        Benchmark::Mmhal => &["average_score", "hallucination_rate"],
        Benchmark::Pope => &[
            "adversarial/f1",
            "popular/f1",
            "random/f1",
            "adversarial/accuracy",
            "popular/accuracy",
            "random/accuracy",
            "random/yes_ratio",
        ],
        Benchmark::Llava => &["conv/relative", "detail/relative", "complex/relative", "all/relative"],
    };
    v.iter().map(|s| s.to_string()).collect()
}

fn judge_label(r: &RunResults) -> String {
    if r.judge_models.is_empty() {
        "—".into()
    } else {
        r.judge_models.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// A Markdown table per benchmark: one row per run, one column per metric, plus coverage
/// (`scored/total`), missing items and the judge model(s) as returned. A metric a run lacks
/// prints as `n/a`, never as 0.
pub fn markdown_table(runs: &[RunResults], metrics: Option<&[String]>) -> String {
    let benches: BTreeSet<Benchmark> = runs.iter().map(|r| r.benchmark).collect();
    let mut out = String::new();
    for b in benches {
        let rs: Vec<&RunResults> = runs.iter().filter(|r| r.benchmark == b).collect();
        let cols = metrics.map(|m| m.to_vec()).unwrap_or_else(|| default_metrics(b));
        out.push_str(&format!("### {b}\n\n| model | {} | scored | missing | judge |\n", cols.join(" | ")));
        out.push_str(&format!("|---|{}---|---|---|\n", "---|".repeat(cols.len())));
        for r in rs {
            let vals: Vec<String> =
                cols.iter().map(|c| r.metrics.get(c).map_or("n/a".into(), |v| format!("{v:.3}"))).collect();
            out.push_str(&format!(
                "| {} | {} | {}/{} | {} | {} |\n",
                r.model,
                vals.join(" | "),
                r.items_scored,
                r.items_total,
                r.missing.total(),
                judge_label(r)
            ));
        }
        out.push('\n');
    }
    out
}

/// Registers the embedded DejaVu Sans font with plotters (idempotent).
pub fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TTF shipped by the `dejavu` crate; failure would be a bug there.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
        let _ = plotters::style::register_font("sans-serif", FontStyle::Bold, dejavu::sans::bold());
    });
}

/// Draws one bar panel per metric (runs side by side, one colour per run, with a legend) and
/// saves a PNG. Runs lacking a metric get no bar in that panel.
pub fn bar_chart(path: &Path, title: &str, runs: &[RunResults], metrics: &[(Benchmark, String)]) -> Result<()> {
    register_font();
    let err = |e: String| BenchError::Plot { path: path.into(), reason: e };
    if runs.is_empty() || metrics.is_empty() {
        return Err(err("nothing to plot (no runs or no metrics)".into()));
    }
    let cols = metrics.len().min(3);
    let rows = metrics.len().div_ceil(cols);
    let (pw, ph) = (520u32, 380u32);
    let size = (pw * cols as u32, ph * rows as u32 + 60);
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let root = root.titled(title, ("sans-serif", 28).into_font()).map_err(|e| err(e.to_string()))?;
    let panels = root.split_evenly((rows, cols));
    let names: Vec<String> = runs.iter().map(|r| r.model.clone()).collect();
    for (panel, (bench, metric)) in panels.iter().zip(metrics) {
        let vals: Vec<Option<f64>> =
            runs.iter().map(|r| if r.benchmark == *bench { r.metrics.get(metric).copied() } else { None }).collect();
        let ymax = vals.iter().flatten().fold(0.0f64, |a, &b| a.max(b));
        // Head-room above the tallest bar for the legend.
        let ymax = if ymax <= 0.0 { 1.0 } else { ymax * 1.4 };
        let n = runs.len();
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("{bench}: {metric}"), ("sans-serif", 20).into_font())
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            // `into_segmented` on `0..k` makes k+1 segments: one per run needs `0..n-1`.
            .build_cartesian_2d((0..n.saturating_sub(1)).into_segmented(), 0.0..ymax)
            .map_err(|e| err(e.to_string()))?;
        let names2 = names.clone();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .x_label_formatter(&move |v| match v {
                SegmentValue::CenterOf(i) => names2.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .y_desc(metric.as_str())
            .label_style(("sans-serif", 14).into_font())
            .axis_desc_style(("sans-serif", 15).into_font())
            .draw()
            .map_err(|e| err(e.to_string()))?;
        for (i, v) in vals.iter().enumerate() {
            let Some(v) = v else { continue };
            let color = Palette99::pick(i).mix(0.9);
            chart
                .draw_series(
                    Histogram::vertical(&chart).style(color.filled()).margin(14).data(std::iter::once((i, *v))),
                )
                .map_err(|e| err(e.to_string()))?
                .label(format!("{} ({v:.3})", names[i]))
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 13).into_font())
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| err(e.to_string()))?;
    }
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}
