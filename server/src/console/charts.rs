//! Metric charts for the console, drawn on the server with plotters as SVG: one chart per metric
//! tag, one line per replica, step on the x axis.

use std::collections::BTreeMap;

use plotters::drawing::DrawingAreaErrorKind;
use plotters::prelude::*;

use crate::executor::MetricPoint;

/// Line colours per replica, in order; readable on white and in print.
const COLOURS: [RGBColor; 6] = [
    RGBColor(0xb4, 0x46, 0x1b),
    RGBColor(0x1d, 0x5f, 0xa6),
    RGBColor(0x1f, 0x7a, 0x3f),
    RGBColor(0x6b, 0x3f, 0xa0),
    RGBColor(0x9a, 0x67, 0x00),
    RGBColor(0x44, 0x4c, 0x56),
];

/// Why a chart could not be drawn (plotters failed writing its SVG).
#[derive(Debug, thiserror::Error)]
#[error("cannot draw the chart: {0}")]
pub struct ChartError(#[from] DrawingAreaErrorKind<std::io::Error>);

/// One chart's lines: `(step, value)` points by replica.
type Series<'a> = BTreeMap<&'a str, Vec<(f64, f64)>>;

/// Charts of `points` by tag (sorted by tag): `(tag, number of points, svg)`.
pub fn draw(points: &[MetricPoint]) -> Result<Vec<(String, usize, String)>, ChartError> {
    let mut by_tag: BTreeMap<&str, Series<'_>> = BTreeMap::new();
    for point in points {
        by_tag.entry(&point.tag).or_default().entry(&point.replica).or_default().push((point.step as f64, point.value));
    }
    by_tag.into_iter().map(|(tag, series)| chart(tag, &series).map(|(n, svg)| (tag.to_owned(), n, svg))).collect()
}

fn chart(tag: &str, series: &Series<'_>) -> Result<(usize, String), ChartError> {
    let all = series.values().flatten();
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    let mut count = 0;
    for (x, y) in all {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y0 = y0.min(*y);
        y1 = y1.max(*y);
        count += 1;
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.08).max(1e-6);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (560, 260)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .caption(tag, ("sans-serif", 15))
            .x_label_area_size(34)
            .y_label_area_size(56)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .x_desc("step")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .light_line_style(RGBColor(0xee, 0xf1, 0xf4))
            .label_style(("sans-serif", 12))
            .draw()?;
        for (i, (replica, points)) in series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let mut sorted = points.clone();
            sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart
                .draw_series(LineSeries::new(sorted.iter().copied(), colour.stroke_width(2)))?
                .label(*replica)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2)));
            // Dots mark reports while they are few enough to tell apart.
            if sorted.len() <= 60 {
                chart.draw_series(sorted.iter().map(|p| Circle::new(*p, 2, colour.filled())))?;
            }
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(0xdd, 0xe3, 0xe9))
            .label_font(("sans-serif", 12))
            .draw()?;
        root.present()?;
    }
    Ok((count, svg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_chart_per_tag_with_a_line_per_replica() {
        let point = |replica: &str, tag: &str, step, value| MetricPoint {
            replica: replica.into(),
            tag: tag.into(),
            step,
            value,
            timestamp: 0.0,
            trial: String::new(),
        };
        let points = vec![
            point("master-replica-0", "loss", 1, 0.9),
            point("master-replica-0", "loss", 2, 0.5),
            point("worker-replica-0", "loss", 1, 0.8),
            point("master-replica-0", "accuracy", 1, 0.7),
        ];
        let charts = draw(&points).expect("drawn");
        assert_eq!(charts.iter().map(|c| (c.0.as_str(), c.1)).collect::<Vec<_>>(), [("accuracy", 1), ("loss", 3)]);
        assert!(charts[1].2.starts_with("<svg") && charts[1].2.contains("worker-replica-0"), "{}", charts[1].2);
    }
}
