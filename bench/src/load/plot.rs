//! `--plot FILE.svg`: throughput over time and the latency percentile curve, side by side.

use hdrhistogram::Histogram;
use plotters::prelude::*;

use super::stats::Series;

/// Percentiles plotted on the latency curve (x axis in "nines": 90% = 1, 99% = 2, ...).
const CURVE_POINTS: usize = 200;
const MAX_NINES: f64 = 5.0;

fn err(e: impl std::fmt::Display) -> String {
    format!("plot: {e}")
}

/// Writes the SVG. `hist` holds latencies in µs (may be empty).
pub fn write_svg(
    path: &std::path::Path,
    title: &str,
    series: &Series,
    hist: &Histogram<u64>,
) -> Result<(), String> {
    let root = SVGBackend::new(path, (1200, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (left, right) = root.split_horizontally(600);

    let t_max = series.t_sec.last().copied().unwrap_or(1.0).max(1.0);
    let r_max = series.records_per_sec.iter().copied().fold(1.0, f64::max) * 1.1;
    let mut c = ChartBuilder::on(&left)
        .caption(format!("{title}: throughput"), ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..t_max, 0.0..r_max)
        .map_err(err)?;
    c.configure_mesh()
        .x_desc("seconds")
        .y_desc("records/s")
        .draw()
        .map_err(err)?;
    c.draw_series(LineSeries::new(
        series
            .t_sec
            .iter()
            .copied()
            .zip(series.records_per_sec.iter().copied()),
        &BLUE,
    ))
    .map_err(err)?;

    let points: Vec<(f64, f64)> = if hist.is_empty() {
        Vec::new()
    } else {
        (0..=CURVE_POINTS)
            .map(|i| {
                let nines = MAX_NINES * i as f64 / CURVE_POINTS as f64;
                let q = 1.0 - 10f64.powf(-nines);
                (nines, hist.value_at_quantile(q) as f64 / 1000.0)
            })
            .collect()
    };
    let l_max = points.iter().map(|p| p.1).fold(0.001, f64::max) * 1.1;
    let mut c = ChartBuilder::on(&right)
        .caption(
            format!("{title}: latency by percentile"),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..MAX_NINES, 0.0..l_max)
        .map_err(err)?;
    c.configure_mesh()
        .x_desc("percentile")
        .y_desc("latency ms")
        .x_label_formatter(&|x| match x.round() as i64 {
            0 => "0%".into(),
            1 => "90%".into(),
            2 => "99%".into(),
            3 => "99.9%".into(),
            4 => "99.99%".into(),
            5 => "99.999%".into(),
            _ => String::new(),
        })
        .draw()
        .map_err(err)?;
    c.draw_series(LineSeries::new(points, &RED)).map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
