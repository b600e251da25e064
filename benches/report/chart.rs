//! SVG charts of the report (plotters; SVG needs no system fonts).

use std::path::Path;
use std::time::Duration;

use plotters::prelude::*;

use crate::load::BoxError;

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// The latency distribution of each series as a CDF, on a log scale of milliseconds.
pub(crate) fn latency_cdf(path: &Path, title: &str, series: &[(String, Vec<Duration>)]) -> Result<(), BoxError> {
    let ms = |d: &Duration| (d.as_secs_f64() * 1e3).max(0.01);
    let all = series.iter().flat_map(|(_, s)| s.iter().map(ms));
    let (lo, hi) = all.fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if hi <= 0.0 { (0.01, 1.0) } else { ((lo / 1.5).max(0.01), hi * 1.5) };
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..1.0)?;
    chart
        .configure_mesh()
        .x_desc("latency to the last byte (ms, log scale)")
        .y_desc("share of requests at or below")
        .draw()?;
    for (i, (name, samples)) in series.iter().enumerate().filter(|(_, (_, s))| !s.is_empty()) {
        let mut sorted: Vec<f64> = samples.iter().map(ms).collect();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len() as f64;
        // At most ~500 points a line: the SVG stays small.
        let step = (sorted.len() / 500).max(1);
        let points: Vec<(f64, f64)> =
            sorted.iter().enumerate().step_by(step).map(|(k, v)| (*v, (k + 1) as f64 / n)).collect();
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(format!("{name} (n={})", samples.len()))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}

/// Bars of named values in groups: `groups` are the x positions, each with one value per series.
pub(crate) fn grouped_bars(
    path: &Path,
    title: &str,
    y_desc: &str,
    groups: &[String],
    series: &[(String, Vec<f64>)],
) -> Result<(), BoxError> {
    let top = series.iter().flat_map(|(_, v)| v.iter().copied()).fold(0.0f64, f64::max).max(1e-9) * 1.15;
    let root = SVGBackend::new(path, (1000, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let width = series.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..groups.len() as f64, 0.0..top)?;
    let labels = groups.to_vec();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups.len().min(30))
        .x_label_formatter(&|x| labels.get(x.floor() as usize).cloned().unwrap_or_default())
        .y_desc(y_desc)
        .draw()?;
    for (s, (name, values)) in series.iter().enumerate() {
        let color = COLORS[s % COLORS.len()];
        chart
            .draw_series(values.iter().enumerate().map(|(g, v)| {
                let x0 = g as f64 + 0.1 + 0.8 * s as f64 / width;
                Rectangle::new([(x0, 0.0), (x0 + 0.8 / width, *v)], color.filled())
            }))?
            .label(name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], color.filled()));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}
