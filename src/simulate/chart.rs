//! The SVG chart of a report: pods running per target over virtual time, and pods pending.

use plotters::prelude::*;

use crate::simulate::error::{Error, Result};
use crate::simulate::report::Report;

const SIZE: (u32, u32) = (1100, 600);

/// Draws `running.svg`: one line per target that ran anything, a dashed line for pending pods.
pub fn svg(report: &Report) -> Result<String> {
    let mut out = String::new();
    draw(report, &mut out).map_err(|e| Error::Chart(e.to_string()))?;
    Ok(out)
}

fn draw<'a>(
    report: &Report,
    out: &'a mut String,
) -> std::result::Result<(), Box<dyn std::error::Error + 'a>> {
    let tl = &report.timeline;
    let minutes = |i: usize| i as f64 * tl.step_seconds / 60.0;
    let x_max = (report.duration_seconds / 60.0).max(1.0);
    let shown: Vec<_> = tl
        .series
        .iter()
        .filter(|s| s.kind != "starting" && s.values.iter().any(|v| *v > 0))
        .collect();
    let y_max = shown
        .iter()
        .flat_map(|s| s.values.iter())
        .copied()
        .max()
        .unwrap_or(0)
        .max(1);
    let root = SVGBackend::with_string(out, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "pods running per target: {} (seed {})",
                report.workload, report.seed
            ),
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..x_max, 0u32..(y_max + y_max / 10 + 1))?;
    chart
        .configure_mesh()
        .x_desc("virtual time (minutes)")
        .y_desc("pods")
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    let mut colour = 0;
    for s in shown {
        let points: Vec<(f64, u32)> = s
            .values
            .iter()
            .enumerate()
            .map(|(i, v)| (minutes(i), *v))
            .collect();
        if s.kind == "pending" {
            let style = BLACK.stroke_width(2);
            chart
                .draw_series(DashedLineSeries::new(points, 6, 4, style))?
                .label("pending (no target)")
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        } else {
            let style = Palette99::pick(colour).stroke_width(2);
            colour += 1;
            chart
                .draw_series(LineSeries::new(points, style))?
                .label(s.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
