//! The report's figures, drawn with `plotters` and written both as SVG and as PNG: line charts
//! (a few series of `(x, y)` points, each a line with markers and an optional ±band for mean ±
//! std over seeds, with a legend beside the plot) and heatmaps (a labelled matrix with a colour
//! bar). Text is laid out with DejaVu Sans, bundled (the `dejavu` crate), so the PNGs need no
//! system font; the SVGs name `sans-serif` and leave the font to the viewer.

use std::path::Path;
use std::sync::Once;

use anyhow::{Context, Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::harness::results::write_atomic;

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// `(x, y, spread)` points; the band spans `y ± spread` (0: none).
    pub points: Vec<(f64, f64, f64)>,
}

/// A line chart.
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

/// The font family every text of a figure uses.
const FONT: &str = "sans-serif";
/// Text sizes (plotters draws a size-`s` font at about `s / 1.24` pixels per em).
const TITLE: f64 = 20.0;
const AXIS: f64 = 16.0;
const LABEL: f64 = 15.0;
const CELL: f64 = 14.0;

/// The series' colours (matplotlib's tab10 order).
const COLORS: [RGBColor; 8] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x17, 0xbe, 0xcf),
];

/// A figure that can be drawn on any `plotters` backend.
pub trait Figure {
    /// Width and height in pixels.
    fn size(&self) -> (u32, u32);

    /// Draw the figure on `root` (of [`Figure::size`]).
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>;

    /// The figure as an SVG document.
    fn to_svg(&self) -> Result<String> {
        register_fonts();
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, self.size()).into_drawing_area();
            self.draw(&root)
                .map_err(|e| anyhow!("drawing an SVG: {e}"))?;
            root.present().map_err(|e| anyhow!("drawing an SVG: {e}"))?;
        }
        Ok(svg)
    }

    /// The figure as a PNG file's bytes (8-bit RGB).
    fn to_png(&self) -> Result<Vec<u8>> {
        register_fonts();
        let (w, h) = self.size();
        let mut rgb = vec![0u8; (w * h * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
            self.draw(&root)
                .map_err(|e| anyhow!("drawing a PNG: {e}"))?;
            root.present().map_err(|e| anyhow!("drawing a PNG: {e}"))?;
        }
        let mut png_bytes = Vec::new();
        let mut encoder = png::Encoder::new(&mut png_bytes, w, h);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().context("encoding a PNG")?;
        writer.write_image_data(&rgb).context("encoding a PNG")?;
        writer.finish().context("encoding a PNG")?;
        Ok(png_bytes)
    }

    /// Write `<stem>.svg` and `<stem>.png` into `dir` (each atomically).
    fn save(&self, dir: &Path, stem: &str) -> Result<()> {
        write_atomic(&dir.join(format!("{stem}.svg")), self.to_svg()?.as_bytes())?;
        write_atomic(&dir.join(format!("{stem}.png")), &self.to_png()?)
    }
}

/// Give plotters the bundled DejaVu Sans (it lays text out with it for both backends).
fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for (style, bytes) in [
            (FontStyle::Normal, dejavu::sans::regular()),
            (FontStyle::Bold, dejavu::sans::bold()),
            (FontStyle::Oblique, dejavu::sans::oblique()),
            (FontStyle::Italic, dejavu::sans::oblique()),
        ] {
            // The bytes are a font file compiled into the binary: a failure is a build defect.
            plotters::style::register_font(FONT, style, bytes).unwrap_or_else(|_| {
                panic!(
                    "the bundled DejaVu Sans ({}) does not parse",
                    style.as_str()
                )
            });
        }
    });
}

/// A tick value without trailing zeros (`0.6`, not `0.6000`; never `-0`).
fn fmt_tick(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

impl Chart {
    /// The axes' ranges: every finite point with its band, padded by 3% in x and 8% in y.
    fn bounds(&self) -> (f64, f64, f64, f64) {
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y, e) in self.series.iter().flat_map(|s| s.points.iter()) {
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
        // A little room on every side, so that no marker is cut in half by the frame.
        let (x_pad, y_pad) = ((x1 - x0) * 0.03, ((y1 - y0) * 0.08).max(1e-3));
        (x0 - x_pad, x1 + x_pad, y0 - y_pad, y1 + y_pad)
    }
}

impl Figure for Chart {
    fn size(&self) -> (u32, u32) {
        (720, 420)
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        root.fill(&WHITE)?;
        let legend_width = 190;
        let (plot, legend) = root.split_horizontally(self.size().0 - legend_width);
        let (x0, x1, y0, y1) = self.bounds();
        let mut chart = ChartBuilder::on(&plot)
            .caption(&self.title, (FONT, TITLE))
            .margin(12)
            .x_label_area_size(46)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .x_labels(8)
            .y_labels(6)
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .label_style((FONT, LABEL))
            .axis_desc_style((FONT, AXIS))
            .bold_line_style(RGBColor(0xe5, 0xe5, 0xe5))
            .light_line_style(TRANSPARENT)
            .x_label_formatter(&|v| fmt_tick(*v))
            .y_label_formatter(&|v| fmt_tick(*v))
            .draw()?;
        for (i, series) in self.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let points: Vec<(f64, f64, f64)> = series
                .points
                .iter()
                .copied()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .collect();
            if points.iter().any(|p| p.2 > 0.0) {
                let upper = points.iter().map(|p| (p.0, p.1 + p.2));
                let lower = points.iter().rev().map(|p| (p.0, p.1 - p.2));
                let band: Vec<(f64, f64)> = upper.chain(lower).collect();
                chart.draw_series(std::iter::once(Polygon::new(band, color.mix(0.15))))?;
            }
            chart.draw_series(LineSeries::new(
                points.iter().map(|p| (p.0, p.1)),
                color.stroke_width(2),
            ))?;
            chart.draw_series(
                points
                    .iter()
                    .map(|p| Circle::new((p.0, p.1), 3, color.filled())),
            )?;
            // The legend sits beside the plot, where it hides no point.
            let y = 48 + 22 * i as i32;
            legend.draw(&PathElement::new(
                vec![(4, y), (26, y)],
                color.stroke_width(2),
            ))?;
            legend.draw(&Circle::new((15, y), 3, color.filled()))?;
            legend.draw(&Text::new(
                series.label.clone(),
                (32, y),
                TextStyle::from((FONT, LABEL).into_font()).pos(Pos::new(HPos::Left, VPos::Center)),
            ))?;
        }
        Ok(())
    }
}

/// Linear interpolation between two colours.
fn mix(a: RGBColor, b: RGBColor, t: f64) -> RGBColor {
    let t = t.clamp(0.0, 1.0);
    let m = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * t).round() as u8;
    RGBColor(m(a.0, b.0), m(a.1, b.1), m(a.2, b.2))
}

impl Heatmap {
    /// The colour scale's `(low, high)`: symmetric around 0 when diverging.
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
    fn color(&self, v: f64, (lo, hi): (f64, f64)) -> (RGBColor, bool) {
        const BLUE: RGBColor = RGBColor(33, 102, 172);
        const RED: RGBColor = RGBColor(178, 24, 43);
        const NAVY: RGBColor = RGBColor(8, 48, 107);
        if !v.is_finite() {
            return (RGBColor(0xbb, 0xbb, 0xbb), false);
        }
        if self.diverging {
            let t = v / hi;
            if t >= 0.0 {
                (mix(WHITE, RED, t), t > 0.6)
            } else {
                (mix(WHITE, BLUE, -t), -t > 0.6)
            }
        } else {
            let t = (v - lo) / (hi - lo);
            (mix(WHITE, NAVY, t), t > 0.55)
        }
    }

    /// A cell's text: the value at the heatmap's decimals, `–` for a missing value (no
    /// baseline, no run), and never `-0.00`.
    fn number(&self, v: f64) -> String {
        if !v.is_finite() {
            return "–".into();
        }
        let number = format!("{v:.*}", self.decimals);
        match number.strip_prefix('-') {
            Some(rest) if rest.chars().all(|c| c == '0' || c == '.') => rest.to_string(),
            _ => number,
        }
    }

    /// Cell width and height in pixels, and the width of the row labels' area.
    fn geometry(&self) -> (u32, u32, u32) {
        let cw = (560 / self.columns.len().max(1) as u32).clamp(14, 64);
        let ch = (360 / self.rows.len().max(1) as u32).clamp(24, 48);
        let longest = self.rows.iter().map(|r| r.chars().count()).max();
        (cw, ch, 9 * longest.unwrap_or(1) as u32 + 44)
    }
}

impl Figure for Heatmap {
    fn size(&self) -> (u32, u32) {
        let (cw, ch, label_w) = self.geometry();
        let plot_w = label_w + cw * self.columns.len() as u32 + 30;
        let title_w = 8 * self.title.chars().count() as u32 + 40;
        (plot_w.max(title_w) + 100, ch * self.rows.len() as u32 + 110)
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        root.fill(&WHITE)?;
        let (n_rows, n_cols) = (self.rows.len() as i32, self.columns.len() as i32);
        let (cw, ch, label_w) = self.geometry();
        let (width, _) = self.size();
        let body = root.titled(&self.title, (FONT, TITLE))?;
        let (main, bar) = body.split_horizontally(width - 100);
        let (plot_w, plot_h) = (cw * n_cols as u32, ch * n_rows as u32);
        // The plot takes what its cells need, centred under the title when the title is wider.
        let spare = (width - 100).saturating_sub(label_w + plot_w + 30) / 2;
        let below = (main.dim_in_pixel().1).saturating_sub(10 + plot_h + 56);
        // In half-cells (integer coordinates keep plotters' default label formatting): cell
        // (row i, column j) spans x in [2j, 2j + 2] and y in [2(n - 1 - i), 2(n - i)], rows
        // running top to bottom; the labels sit at the cells' centres (odd coordinates).
        let every = if cw >= 30 { 1 } else { 30 / cw as i32 + 1 };
        let column_ticks: Vec<i32> = (0..n_cols)
            .step_by(every as usize)
            .map(|j| 2 * j + 1)
            .collect();
        let row_ticks: Vec<i32> = (0..n_rows).map(|k| 2 * k + 1).collect();
        let mut chart = ChartBuilder::on(&main)
            .margin_top(10)
            .margin_left(spare + 10)
            .margin_right(10)
            .margin_bottom(below)
            .x_label_area_size(56)
            .y_label_area_size(label_w)
            .build_cartesian_2d(
                (0..2 * n_cols).with_key_points(column_ticks),
                (0..2 * n_rows).with_key_points(row_ticks),
            )?;
        let row_of = |v: &i32| match usize::try_from(n_rows - 1 - v / 2) {
            Ok(i) if *v >= 0 && i < self.rows.len() => self.rows[i].clone(),
            _ => String::new(),
        };
        let column_of = |v: &i32| match self.columns.get((v / 2) as usize) {
            Some(c) if *v >= 0 => c.clone(),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_label_formatter(&column_of)
            .y_label_formatter(&row_of)
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .label_style((FONT, LABEL))
            .axis_desc_style((FONT, AXIS))
            .draw()?;
        let range = self.range();
        let annotate = cw >= 40;
        for (i, row) in self.values.iter().enumerate() {
            let y = 2 * (n_rows - 1 - i as i32);
            for (j, &v) in row.iter().enumerate() {
                let x = 2 * j as i32;
                let (fill, strong) = self.color(v, range);
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(x, y), (x + 2, y + 2)],
                    fill.filled(),
                )))?;
                if annotate {
                    let ink = if strong { WHITE } else { BLACK };
                    chart.draw_series(std::iter::once(Text::new(
                        self.number(v),
                        (x + 1, y + 1),
                        (FONT, CELL)
                            .into_font()
                            .color(&ink)
                            .pos(Pos::new(HPos::Center, VPos::Center)),
                    )))?;
                }
            }
        }
        chart.draw_series(std::iter::once(Rectangle::new(
            [(0, 0), (2 * n_cols, 2 * n_rows)],
            RGBColor(0x33, 0x33, 0x33).stroke_width(1),
        )))?;

        // The colour bar, beside the matrix and as tall.
        let rows = chart.plotting_area().get_pixel_range().1;
        let bar_top = bar.get_base_pixel().1;
        let mut scale = ChartBuilder::on(&bar)
            .margin_top((rows.start - bar_top).max(0) as u32)
            .margin_bottom((bar_top + bar.dim_in_pixel().1 as i32 - rows.end).max(0) as u32)
            .margin_left(10)
            .right_y_label_area_size(60)
            .build_cartesian_2d(0f64..1f64, range.0..range.1)?;
        scale
            .configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            .y_labels(((rows.end - rows.start) / 40).clamp(2, 5) as usize)
            .y_label_formatter(&|v| fmt_tick(*v))
            .label_style((FONT, LABEL))
            .draw()?;
        let steps = 40;
        let step = (range.1 - range.0) / steps as f64;
        scale.draw_series((0..steps).map(|k| {
            let lo = range.0 + k as f64 * step;
            let (fill, _) = self.color(lo + step / 2.0, range);
            Rectangle::new([(0.0, lo), (1.0, lo + step)], fill.filled())
        }))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(c: RGBColor) -> String {
        format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
    }

    #[test]
    fn ticks_drop_trailing_zeros_and_negative_zero() {
        assert_eq!(fmt_tick(0.6000000001), "0.6");
        assert_eq!(fmt_tick(-0.00001), "0");
        assert_eq!(fmt_tick(12.0), "12");
        assert_eq!(fmt_tick(0.25), "0.25");
    }

    #[test]
    fn heatmap_colours_and_numbers_follow_the_values() {
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
        assert_eq!(hex(map.color(2.0, map.range()).0), "#b2182b");
        assert_eq!(hex(map.color(0.0, map.range()).0), "#ffffff");
        assert_eq!(hex(map.color(-2.0, map.range()).0), "#2166ac");
        assert_eq!(hex(map.color(f64::NAN, map.range()).0), "#bbbbbb");
        assert_eq!(map.number(-0.001), "0.00");
        assert_eq!(map.number(f64::NAN), "–");
        let svg = map.to_svg().unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        // plotters writes a text's content on a line of its own.
        assert!(
            svg.contains(">\n2.00\n</text>") && svg.contains(">\n-1.00\n</text>"),
            "{svg}"
        );
        assert!(
            svg.contains(">\n0.00\n</text>") && !svg.contains("-0.00"),
            "{svg}"
        );
        assert!(svg.to_lowercase().contains("#bbbbbb"), "NaN is grey");
        let counts = Heatmap {
            diverging: false,
            values: vec![vec![0.0, 5.0], vec![10.0, 10.0]],
            ..map
        };
        assert_eq!(hex(counts.color(10.0, counts.range()).0), "#08306b");
        assert_eq!(hex(counts.color(0.0, counts.range()).0), "#ffffff");
    }

    #[test]
    fn figures_come_out_as_svg_and_as_png_of_the_same_size() {
        let chart = Chart {
            title: "accuracy & <loss>".into(),
            x_label: "step".into(),
            y_label: "accuracy".into(),
            series: vec![
                Series {
                    label: "cmp".into(),
                    points: vec![(0.0, 0.5, 0.1), (10.0, 0.7, 0.05), (20.0, f64::NAN, 0.0)],
                },
                Series {
                    label: "base".into(),
                    points: vec![(0.0, 0.4, 0.0), (10.0, 0.6, 0.0)],
                },
            ],
        };
        let svg = chart.to_svg().unwrap();
        assert!(
            svg.contains("<polyline") && svg.contains("<polygon"),
            "{svg}"
        );
        assert!(
            svg.contains("accuracy &amp; &lt;loss&gt;"),
            "the title is escaped: {svg}"
        );
        let png = chart.to_png().unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(png));
        let reader = decoder.read_info().unwrap();
        let info = reader.info();
        assert_eq!((info.width, info.height), chart.size());
        let dir = tempfile::tempdir().unwrap();
        chart.save(dir.path(), "curves").unwrap();
        assert!(dir.path().join("curves.svg").is_file() && dir.path().join("curves.png").is_file());
    }
}
