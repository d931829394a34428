//! Charts as standalone SVG: line charts (a few series of (x, y) points, each drawn as a line
//! with markers and an optional ±band for mean ± std over seeds, with axes, ticks, a legend and
//! axis titles) and heatmaps (a labelled matrix with a colour bar).

use std::fmt::Write;

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// `(x, y, spread)` points; the band spans `y ± spread` (0: none).
    pub points: Vec<(f64, f64, f64)>,
}

/// A chart.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Title above the plot.
    pub title: String,
    /// X axis title.
    pub x_label: String,
    /// Y axis title.
    pub y_label: String,
    /// The lines.
    pub series: Vec<Series>,
}

const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// "Nice" tick values covering `[lo, hi]` (about `n` of them).
fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / n as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= n as f64)
        .unwrap_or(10.0 * mag);
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

fn fmt_tick(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl Chart {
    /// The chart as an SVG document (640 × 400).
    pub fn to_svg(&self) -> String {
        let (w, h) = (640.0, 400.0);
        let (left, right, top, bottom) = (70.0, 170.0, 40.0, 55.0);
        let pw = w - left - right;
        let ph = h - top - bottom;
        let pts = self.series.iter().flat_map(|s| s.points.iter());
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y, e) in pts {
            if !(x.is_finite() && y.is_finite()) {
                continue;
            }
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y - e.abs());
            y1 = y1.max(y + e.abs());
        }
        if x0 > x1 {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        if x1 - x0 < 1e-12 {
            (x0, x1) = (x0 - 0.5, x1 + 0.5);
        }
        let pad = ((y1 - y0) * 0.08).max(1e-3);
        let (y0, y1) = (y0 - pad, y1 + pad);
        let sx = |x: f64| left + (x - x0) / (x1 - x0) * pw;
        let sy = |y: f64| top + (1.0 - (y - y0) / (y1 - y0)) * ph;

        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
            left + pw / 2.0,
            escape(&self.title)
        );
        for t in ticks(y0, y1, 6) {
            let y = sy(t);
            let _ = writeln!(
                s,
                "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#e5e5e5\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                left + pw,
                left - 6.0,
                y + 4.0,
                fmt_tick(t)
            );
        }
        for t in ticks(x0, x1, 8) {
            let x = sx(t);
            let _ = writeln!(
                s,
                "<line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#f0f0f0\"/>\
                 <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                top + ph,
                top + ph + 18.0,
                fmt_tick(t)
            );
        }
        let _ = writeln!(
            s,
            r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            left + pw / 2.0,
            h - 12.0,
            escape(&self.x_label)
        );
        let _ = writeln!(
            s,
            r#"<text transform="translate(18,{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            top + ph / 2.0,
            escape(&self.y_label)
        );
        for (i, series) in self.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let points: Vec<&(f64, f64, f64)> = series
                .points
                .iter()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .collect();
            if points.iter().any(|p| p.2 > 0.0) {
                let upper = points
                    .iter()
                    .map(|p| format!("{:.1},{:.1}", sx(p.0), sy(p.1 + p.2)));
                let lower = points
                    .iter()
                    .rev()
                    .map(|p| format!("{:.1},{:.1}", sx(p.0), sy(p.1 - p.2)));
                let poly: Vec<String> = upper.chain(lower).collect();
                let _ = writeln!(
                    s,
                    r#"<polygon points="{}" fill="{color}" fill-opacity="0.15" stroke="none"/>"#,
                    poly.join(" ")
                );
            }
            let line: Vec<String> = points
                .iter()
                .map(|p| format!("{:.1},{:.1}", sx(p.0), sy(p.1)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
                line.join(" ")
            );
            for p in &points {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                    sx(p.0),
                    sy(p.1)
                );
            }
            let ly = top + 10.0 + 20.0 * i as f64;
            let lx = left + pw + 12.0;
            let _ = writeln!(
                s,
                r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
                lx + 20.0,
                lx + 26.0,
                ly + 4.0,
                escape(&series.label)
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

/// A matrix drawn as coloured cells.
#[derive(Debug, Clone)]
pub struct Heatmap {
    /// Title above the plot.
    pub title: String,
    /// Title of the columns' axis (below).
    pub x_label: String,
    /// Title of the rows' axis (left).
    pub y_label: String,
    /// Row labels, top to bottom.
    pub rows: Vec<String>,
    /// Column labels, left to right.
    pub columns: Vec<String>,
    /// `values[row][column]`.
    pub values: Vec<Vec<f64>>,
    /// Centre the colours on 0, blue below and red above (changes); otherwise white to blue
    /// from the minimum to the maximum (counts).
    pub diverging: bool,
    /// Decimals of the numbers written in the cells (when they fit).
    pub decimals: usize,
}

/// Linear interpolation between two `#rrggbb` colours.
fn mix(a: [u8; 3], b: [u8; 3], t: f64) -> String {
    let t = t.clamp(0.0, 1.0);
    let c: Vec<u8> = (0..3)
        .map(|i| (a[i] as f64 + (b[i] as f64 - a[i] as f64) * t).round() as u8)
        .collect();
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

impl Heatmap {
    fn range(&self) -> (f64, f64) {
        let finite = self
            .values
            .iter()
            .flatten()
            .copied()
            .filter(|v| v.is_finite());
        let (lo, hi) = finite.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
        if lo > hi {
            return (0.0, 1.0);
        }
        if self.diverging {
            let m = lo.abs().max(hi.abs()).max(1e-12);
            (-m, m)
        } else if hi - lo < 1e-12 {
            (lo, lo + 1.0)
        } else {
            (lo, hi)
        }
    }

    /// The fill of a value and whether text on it should be white.
    fn color(&self, v: f64, (lo, hi): (f64, f64)) -> (String, bool) {
        const WHITE: [u8; 3] = [255, 255, 255];
        const BLUE: [u8; 3] = [33, 102, 172];
        const RED: [u8; 3] = [178, 24, 43];
        const NAVY: [u8; 3] = [8, 48, 107];
        if !v.is_finite() {
            return ("#bbbbbb".into(), false);
        }
        if self.diverging {
            let t = v / hi;
            let (c, strong) = if t >= 0.0 {
                (mix(WHITE, RED, t), t > 0.6)
            } else {
                (mix(WHITE, BLUE, -t), -t > 0.6)
            };
            (c, strong)
        } else {
            let t = (v - lo) / (hi - lo);
            (mix(WHITE, NAVY, t), t > 0.55)
        }
    }

    /// The heatmap as an SVG document, sized to the matrix.
    pub fn to_svg(&self) -> String {
        let (n_rows, n_cols) = (self.rows.len(), self.columns.len());
        let cw = (560.0 / n_cols.max(1) as f64).clamp(14.0, 64.0);
        let ch = (360.0 / n_rows.max(1) as f64).clamp(16.0, 40.0);
        let label_w = 8.0 * self.rows.iter().map(|r| r.len()).max().unwrap_or(1) as f64;
        let (left, top) = (label_w + 46.0, 44.0);
        let (pw, ph) = (cw * n_cols as f64, ch * n_rows as f64);
        // The title is centred on the plot, moved right and the canvas widened when it is wider.
        let title_w = 7.8 * self.title.chars().count() as f64;
        let title_x = (left + pw / 2.0).max(title_w / 2.0 + 10.0);
        let (w, h) = (
            (left + pw + 110.0).max(title_x + title_w / 2.0 + 10.0),
            top + ph + 62.0,
        );
        let range = self.range();
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="{w:.0}" height="{h:.0}" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{title_x:.1}" y="24" text-anchor="middle" font-size="14">{}</text>"#,
            escape(&self.title)
        );
        let annotate = cw >= 40.0;
        for (i, row) in self.values.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                let (x, y) = (left + j as f64 * cw, top + i as f64 * ch);
                let (fill, strong) = self.color(v, range);
                let _ = writeln!(
                    s,
                    r#"<rect x="{x:.1}" y="{y:.1}" width="{cw:.1}" height="{ch:.1}" fill="{fill}"><title>{} / {}: {v}</title></rect>"#,
                    escape(&self.rows[i]),
                    escape(&self.columns[j])
                );
                if annotate {
                    // A missing value (no baseline, no run) reads as a dash, not NaN.
                    let number = if v.is_finite() {
                        format!("{v:.*}", self.decimals)
                    } else {
                        "–".into()
                    };
                    let number = match number.strip_prefix('-') {
                        Some(rest) if rest.chars().all(|c| c == '0' || c == '.') => {
                            rest.to_string()
                        }
                        _ => number,
                    };
                    let _ = writeln!(
                        s,
                        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11" fill="{}">{number}</text>"#,
                        x + cw / 2.0,
                        y + ch / 2.0 + 4.0,
                        if strong { "white" } else { "black" },
                    );
                }
            }
        }
        let _ = writeln!(
            s,
            r##"<rect x="{left:.1}" y="{top:.1}" width="{pw:.1}" height="{ph:.1}" fill="none" stroke="#333"/>"##
        );
        for (i, r) in self.rows.iter().enumerate() {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                left - 6.0,
                top + (i as f64 + 0.5) * ch + 4.0,
                escape(r)
            );
        }
        // Column labels: every one when they fit, else every k-th.
        let every = ((30.0 / cw).ceil() as usize).max(1);
        for (j, c) in self.columns.iter().enumerate() {
            if j % every == 0 {
                let _ = writeln!(
                    s,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                    left + (j as f64 + 0.5) * cw,
                    top + ph + 16.0,
                    escape(c)
                );
            }
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            left + pw / 2.0,
            top + ph + 40.0,
            escape(&self.x_label)
        );
        let _ = writeln!(
            s,
            r#"<text transform="translate(16,{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            top + ph / 2.0,
            escape(&self.y_label)
        );
        // Colour bar.
        let (bx, steps) = (left + pw + 24.0, 40);
        for k in 0..steps {
            let t = 1.0 - k as f64 / (steps - 1) as f64;
            let v = range.0 + t * (range.1 - range.0);
            let (fill, _) = self.color(v, range);
            let _ = writeln!(
                s,
                r#"<rect x="{bx:.1}" y="{:.1}" width="14" height="{:.2}" fill="{fill}"/>"#,
                top + k as f64 * ph / steps as f64,
                ph / steps as f64 + 0.5
            );
        }
        for (v, y) in [(range.1, top + 4.0), (range.0, top + ph)] {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{y:.1}">{}</text>"#,
                bx + 18.0,
                fmt_tick({
                    // One digit more than the cells show.
                    let scale = 10f64.powi(self.decimals as i32 + 1);
                    (v * scale).round() / scale
                })
            );
        }
        if self.diverging {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}">0</text>"#,
                bx + 18.0,
                top + ph / 2.0 + 4.0
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let t = ticks(0.0, 1.0, 5);
        let want = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0];
        assert_eq!(t.len(), want.len(), "{t:?}");
        assert!(
            t.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-12),
            "{t:?}"
        );
        assert_eq!(fmt_tick(t[3]), "0.6");
        let t = ticks(0.613, 0.871, 6);
        assert!(t.first().unwrap() >= &0.613 && t.last().unwrap() <= &0.871);
        assert!(t.len() >= 3);
    }

    #[test]
    fn heatmap_colours_follow_the_values() {
        let map = Heatmap {
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            rows: vec!["en".into(), "fr".into()],
            columns: vec!["en".into(), "fr".into()],
            values: vec![vec![2.0, -1.0], vec![-0.001, f64::NAN]],
            diverging: true,
            decimals: 2,
        };
        assert_eq!(map.range(), (-2.0, 2.0));
        assert_eq!(map.color(2.0, map.range()).0, "#b2182b");
        assert_eq!(map.color(0.0, map.range()).0, "#ffffff");
        assert_eq!(map.color(-2.0, map.range()).0, "#2166ac");
        let svg = map.to_svg();
        assert!(svg.contains(">2.00</text>") && svg.contains(">-1.00</text>"));
        assert!(svg.contains(">0.00</text>") && !svg.contains(">-0.00</text>"));
        assert!(svg.contains("#bbbbbb"), "NaN is grey");
        let counts = Heatmap {
            diverging: false,
            values: vec![vec![0.0, 5.0], vec![10.0, 10.0]],
            ..map
        };
        assert_eq!(counts.color(10.0, counts.range()).0, "#08306b");
        assert_eq!(counts.color(0.0, counts.range()).0, "#ffffff");
    }
}
