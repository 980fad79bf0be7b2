//! PNG training curves (plotters, bitmap backend, DejaVu Sans registered through ab_glyph):
//! `loss.png`, `accuracy.png` (reward accuracy per pair), `margins.png` (reward margin per pair)
//! and `logps.png` (mean per-token log-prob per level — AMP's anchor exists because these fall).
use super::StepLog;
use crate::{MdpoError, Result};
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::Path;
use std::sync::Once;

static FONT: Once = Once::new();

fn register_font() {
    FONT.call_once(|| {
        // A bundled TTF: cannot fail unless the dejavu crate ships a broken file.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
    });
}

/// One named series of (step, value) points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

fn plot_err<E: std::fmt::Display>(path: &Path) -> impl FnOnce(E) -> MdpoError + '_ {
    move |e| MdpoError::Plot { path: path.to_path_buf(), message: e.to_string() }
}

/// Draws a line chart with a title, axis labels and a legend.
pub fn line_chart(path: &Path, title: &str, y_label: &str, series: &[Series]) -> Result<()> {
    register_font();
    let pts: Vec<(f64, f64)> =
        series.iter().flat_map(|s| s.points.iter().copied()).filter(|p| p.0.is_finite() && p.1.is_finite()).collect();
    if pts.is_empty() {
        return Ok(());
    }
    let (mut x0, mut x1) = pts.iter().fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.0), a.1.max(p.0)));
    let (mut y0, mut y1) = pts.iter().fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.1), a.1.max(p.1)));
    if x1 <= x0 {
        x0 -= 0.5;
        x1 += 0.5;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    y0 -= pad;
    y1 += pad;
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err(path))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 26))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(plot_err(path))?;
    chart
        .configure_mesh()
        .x_desc("optimizer step")
        // Steps are integers: never more tick labels than steps, so no label repeats.
        .x_labels(((x1 - x0).round() as usize + 1).clamp(2, 10))
        .x_label_formatter(&|x| if (x - x.round()).abs() < 1e-9 { format!("{x:.0}") } else { format!("{x:.1}") })
        .y_desc(y_label)
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 18))
        .draw()
        .map_err(plot_err(path))?;
    for (i, s) in series.iter().enumerate() {
        let (r, g, b) = TAB10[i % TAB10.len()];
        let color = RGBColor(r, g, b).to_rgba();
        let style = ShapeStyle { color, filled: true, stroke_width: 2 };
        let points: Vec<(f64, f64)> = s.points.iter().copied().filter(|p| p.0.is_finite() && p.1.is_finite()).collect();
        chart
            .draw_series(LineSeries::new(points, style))
            .map_err(plot_err(path))?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    if series.len() > 1 || !series[0].name.is_empty() {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 15))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(plot_err(path))?;
    }
    root.present().map_err(plot_err(path))?;
    Ok(())
}

/// Matplotlib's tab10: distinguishable on white, unlike plotters' default yellow.
const TAB10: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

const LEVEL_NAMES: [&str; 8] = ["y0 (best)", "y1", "y2", "y3", "y4", "y5", "y6", "y7"];

fn level(i: usize) -> String {
    LEVEL_NAMES.get(i).map(|s| s.to_string()).unwrap_or_else(|| format!("y{i}"))
}

/// Writes the run's curves into `dir` (created if needed).
pub fn plot_run(rows: &[StepLog], dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| MdpoError::Io { path: dir.into(), source })?;
    let rows: Vec<&StepLog> = rows.iter().filter(|r| !r.skipped).collect();
    if rows.is_empty() {
        return Ok(());
    }
    let x = |r: &StepLog| r.step as f64;
    let sft = rows[0].metrics.is_none();
    line_chart(
        &dir.join("loss.png"),
        if sft { "SFT loss (token-mean NLL)" } else { "MDPO loss" },
        "loss",
        &[Series { name: "loss".into(), points: rows.iter().map(|r| (x(r), r.loss)).collect() }],
    )?;
    let k = rows[0].level_token_logps.len();
    let series: Vec<Series> = (0..k)
        .map(|l| Series {
            name: level(l),
            points: rows.iter().filter_map(|r| r.level_token_logps.get(l).map(|v| (x(r), *v))).collect(),
        })
        .collect();
    line_chart(&dir.join("logps.png"), "Mean per-token log-prob of each level (policy)", "log π per token", &series)?;
    if let Some(m0) = rows[0].metrics.as_ref() {
        let pair_series = |f: &dyn Fn(&crate::loss::PairMetrics) -> f64| -> Vec<Series> {
            (0..m0.pairs.len())
                .map(|q| Series {
                    name: format!("{} > {}", level(m0.pairs[q].winner), level(m0.pairs[q].loser)),
                    points: rows
                        .iter()
                        .filter_map(|r| r.metrics.as_ref().and_then(|m| m.pairs.get(q)).map(|p| (x(r), f(p))))
                        .collect(),
                })
                .collect()
        };
        line_chart(&dir.join("accuracy.png"), "Reward accuracy per pair", "accuracy (r_w > r_l)", &pair_series(&|p| p.accuracy))?;
        line_chart(&dir.join("margins.png"), "Reward margin per pair", "β·(log-ratio_w − log-ratio_l)", &pair_series(&|p| p.margin))?;
    }
    Ok(())
}
