//! Charts drawn on the server as inline SVG: the console sends no script, so a chart is
//! markup like the rest of the page and reads the same with scripts off.
//!
//! Values are exact (`Decimal`: seats and money); they become floating point only for the
//! position of a point on the page, never for a figure a person reads.

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

/// One point of a series: its label (a moment) and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub label: String,
    pub value: Decimal,
}

/// A line chart of `points` (oldest first), `what` naming the series for screen readers and
/// tooltips (`"seats"`, `"USD a month"`).
pub fn line(title: &str, what: &str, points: &[Point]) -> String {
    let (w, h, pad) = (640.0_f64, 170.0_f64, 36.0_f64);
    let max = points
        .iter()
        .map(|p| p.value)
        .max()
        .unwrap_or_default()
        .max(Decimal::ONE);
    let n = points.len();
    let x = |i: usize| {
        if n <= 1 {
            w / 2.0
        } else {
            pad + (w - 2.0 * pad) * i as f64 / (n - 1) as f64
        }
    };
    let y = |v: Decimal| {
        let share = (v / max).to_f64().unwrap_or(0.0).clamp(0.0, 1.0);
        h - pad - (h - 2.0 * pad) * share
    };
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{}">"##,
        escape(title)
    );
    svg.push_str(&format!(
        r##"<line x1="{pad}" y1="{b}" x2="{r}" y2="{b}" stroke="#d9e0e7"/><text x="2" y="{t}" font-size="11" fill="#5b6b7c">{max}</text><text x="2" y="{b}" font-size="11" fill="#5b6b7c">0</text>"##,
        b = h - pad,
        r = w - pad,
        t = pad + 4.0,
        max = max.normalize(),
    ));
    if n == 0 {
        svg.push_str(&format!(
            r##"<text x="{}" y="{}" font-size="12" fill="#5b6b7c" text-anchor="middle">no runs recorded yet</text>"##,
            w / 2.0,
            h / 2.0
        ));
    }
    if n > 1 {
        let coords: Vec<String> = points
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{:.1},{:.1}", x(i), y(p.value)))
            .collect();
        svg.push_str(&format!(
            r##"<polyline fill="none" stroke="#2857a4" stroke-width="2" points="{}"/>"##,
            coords.join(" ")
        ));
    }
    for (i, p) in points.iter().enumerate() {
        svg.push_str(&format!(
            r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="#2857a4"><title>{}: {} {}</title></circle>"##,
            x(i),
            y(p.value),
            escape(&p.label),
            p.value.normalize(),
            escape(what)
        ));
    }
    if let (Some(first), Some(last)) = (points.first(), points.last()) {
        svg.push_str(&format!(
            r##"<text x="{pad}" y="{}" font-size="11" fill="#5b6b7c">{}</text>"##,
            h - 10.0,
            escape(&first.label)
        ));
        if n > 1 && last.label != first.label {
            svg.push_str(&format!(
                r##"<text x="{}" y="{}" font-size="11" fill="#5b6b7c" text-anchor="end">{}</text>"##,
                w - pad,
                h - 10.0,
                escape(&last.label)
            ));
        }
    }
    svg.push_str("</svg>");
    svg
}

/// A small line without axes for a table cell.
pub fn spark(what: &str, points: &[Point]) -> String {
    let (w, h) = (120.0_f64, 28.0_f64);
    let max = points
        .iter()
        .map(|p| p.value)
        .max()
        .unwrap_or_default()
        .max(Decimal::ONE);
    let n = points.len();
    let coords: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let x = if n <= 1 {
                w / 2.0
            } else {
                2.0 + (w - 4.0) * i as f64 / (n - 1) as f64
            };
            let share = (p.value / max).to_f64().unwrap_or(0.0).clamp(0.0, 1.0);
            format!("{x:.1},{:.1}", h - 3.0 - (h - 6.0) * share)
        })
        .collect();
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="spark" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{} over time"><polyline fill="none" stroke="#2857a4" stroke-width="1.5" points="{}"/></svg>"##,
        escape(what),
        coords.join(" ")
    )
}

fn escape(s: &str) -> String {
    rollcall_core::text::clean(s)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(label: &str, v: i64) -> Point {
        Point {
            label: label.into(),
            value: Decimal::from(v),
        }
    }

    #[test]
    fn a_chart_plots_each_point_and_escapes_its_labels() {
        let svg = line(
            "Seats of <Acme & Sons>",
            "seats",
            &[p("2026-11-01", 3), p("<b>", 5)],
        );
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(svg.contains("Seats of &lt;Acme &amp; Sons&gt;"), "{svg}");
        assert!(svg.contains("&lt;b&gt;: 5 seats"), "{svg}");
        assert!(!svg.contains("<b>"));
        // The highest point is at the top of the plot, zero at its foot.
        assert!(svg.contains(r#"cy="36.0""#), "{svg}");
        assert!(line("t", "seats", &[]).contains("no runs recorded yet"));
        assert!(spark("seats", &[p("a", 0), p("b", 2)]).contains("points=\"2.0,25.0 118.0,3.0\""));
    }
}
