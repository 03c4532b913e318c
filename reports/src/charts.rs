//! Charts as data ([`Chart`]), built from report inputs, and drawn with
//! plotters to SVG (inline or standalone) or PNG.

use std::sync::OnceLock;

use fuselab_core::StepRecord;
use fuselab_metrics::{fastgen_key, request_metrics};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::campaign::{CampaignData, ObjectiveInfo, TrialStatus};
use crate::gate::DEFAULT_FASTGEN_RATE;
use crate::{Error, ReportInput, Result, RunData};

/// Chart size in pixels (the height grows when the legend needs more rows).
pub const CHART_SIZE: (u32, u32) = (1080, 440);

/// Width of the legend column to the right of the plot, in pixels.
const LEGEND_W: u32 = 260;

/// Height of one legend row, in pixels.
const LEGEND_ROW: u32 = 18;

/// Longest legend label in characters; longer ones keep their end.
const LEGEND_CHARS: usize = 34;

/// At most this many points per CDF series (quantiles evenly spaced in probability).
pub const MAX_CDF_POINTS: usize = 400;

/// At most this many points per step series (steps averaged over time bins).
pub const MAX_STEP_POINTS: usize = 600;

/// How many runs a chart overlays at most (the palette's size).
pub const MAX_OVERLAY: usize = 10;

/// Okabe–Ito / Tableau-like palette, distinguishable with colour-vision deficiency.
const PALETTE: [RGBColor; 10] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(213, 94, 0),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(120, 120, 120),
    RGBColor(180, 30, 45),
    RGBColor(110, 80, 160),
    RGBColor(150, 130, 30),
];

/// How a chart draws its series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChartKind {
    /// Lines and markers on shared axes.
    Lines,
    /// Series stacked on top of each other as filled areas (same x values).
    StackedArea,
    /// Lines and markers on axes fitted to the data, the y axis not anchored
    /// at zero (tuning objectives, Pareto fronts).
    Scatter,
}

/// How one series is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineStyle {
    /// A solid line with small markers.
    Solid,
    /// A dashed line with small markers.
    Dashed,
    /// Markers only.
    Markers,
    /// A plain line (for dense series: CDFs, time series).
    Plain,
    /// Open circles (e.g. infeasible or dominated trials).
    Hollow,
    /// × markers (e.g. failed trials).
    Cross,
}

/// One line (or area) of a chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend text (a run, sweep or policy name: user-provided, escaped when drawn).
    pub label: String,
    /// Palette index.
    pub color: usize,
    /// How it is drawn.
    pub style: LineStyle,
    /// Points in data units.
    pub points: Vec<(f64, f64)>,
}

/// A chart as data.
#[derive(Clone, Debug, PartialEq)]
pub struct Chart {
    /// File-safe id, e.g. `ttft-cdf`; the file name with `--charts`.
    pub id: String,
    /// Title drawn above the chart.
    pub title: String,
    /// X axis description.
    pub x_label: String,
    /// Y axis description.
    pub y_label: String,
    /// How series are drawn.
    pub kind: ChartKind,
    /// The series.
    pub series: Vec<Series>,
    /// A sentence under the chart in the HTML report.
    pub caption: String,
}

fn register_fonts() -> bool {
    static DONE: OnceLock<bool> = OnceLock::new();
    *DONE.get_or_init(|| {
        let a = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
        let b = plotters::style::register_font("sans-serif", FontStyle::Bold, dejavu::sans::bold());
        a.is_ok() && b.is_ok()
    })
}

impl Chart {
    /// A standalone SVG document (with its XML namespace).
    pub fn to_svg(&self) -> Result<String> {
        let mut s = String::new();
        {
            let root = SVGBackend::with_string(&mut s, self.size()).into_drawing_area();
            self.draw(root)?;
        }
        Ok(s)
    }

    /// The SVG element for inlining in HTML5 (no namespace attribute needed,
    /// so the page contains no URL at all), with an accessible label.
    pub fn to_inline_svg(&self) -> Result<String> {
        let s = self.to_svg()?;
        let label = crate::escape_html(&self.title);
        Ok(s.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1)
            .replacen(
                "<svg ",
                &format!("<svg role=\"img\" aria-label=\"{label}\" "),
                1,
            ))
    }

    /// A PNG image, rasterised by plotters' bitmap backend with the embedded
    /// DejaVu Sans font.
    pub fn to_png(&self) -> Result<Vec<u8>> {
        let (w, h) = self.size();
        let mut buf = vec![255u8; (w * h * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
            self.draw(root)?;
        }
        let png_err = |e: png::EncodingError| Error::Png {
            chart: self.id.clone(),
            message: e.to_string(),
        };
        let mut out = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut out, w, h);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let mut writer = enc.write_header().map_err(png_err)?;
            writer.write_image_data(&buf).map_err(png_err)?;
            writer.finish().map_err(png_err)?;
        }
        Ok(out)
    }

    /// Pixel size: [`CHART_SIZE`], taller when the legend has many rows.
    pub fn size(&self) -> (u32, u32) {
        let rows = self.legend_rows() as u32;
        (CHART_SIZE.0, CHART_SIZE.1.max(70 + rows * LEGEND_ROW))
    }

    fn legend_rows(&self) -> usize {
        self.series.iter().filter(|s| !s.label.is_empty()).count()
    }

    fn ranges(&self) -> ((f64, f64), (f64, f64)) {
        let stacked = self.kind == ChartKind::StackedArea;
        let fit = self.kind == ChartKind::Scatter;
        let mut xs = (f64::INFINITY, f64::NEG_INFINITY);
        let mut ys = (if fit { f64::INFINITY } else { 0.0 }, f64::NEG_INFINITY);
        let mut tops: Vec<f64> = Vec::new();
        for s in &self.series {
            for (i, &(x, y)) in s.points.iter().enumerate() {
                if !x.is_finite() || !y.is_finite() {
                    continue;
                }
                xs = (xs.0.min(x), xs.1.max(x));
                if stacked {
                    if tops.len() <= i {
                        tops.resize(i + 1, 0.0);
                    }
                    tops[i] += y;
                    ys.1 = ys.1.max(tops[i]);
                } else {
                    ys = (ys.0.min(y), ys.1.max(y));
                }
            }
        }
        let pad = |(lo, hi): (f64, f64), floor_zero: bool| {
            if !lo.is_finite() || !hi.is_finite() {
                return (0.0, 1.0);
            }
            if hi - lo <= f64::EPSILON * hi.abs().max(1.0) {
                return (
                    if floor_zero { 0.0 } else { lo - 0.5 },
                    hi + 0.5 * hi.abs().max(1.0),
                );
            }
            let p = 0.04 * (hi - lo);
            (
                if floor_zero && lo >= 0.0 {
                    lo.max(0.0)
                } else {
                    lo - p
                },
                hi + p,
            )
        };
        (pad(xs, false), pad(ys, !fit))
    }

    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<()> {
        if !register_fonts() {
            return Err(Error::Chart {
                chart: self.id.clone(),
                message: "the embedded DejaVu Sans font could not be loaded".into(),
            });
        }
        self.draw_inner(root).map_err(|message| Error::Chart {
            chart: self.id.clone(),
            message,
        })
    }

    fn draw_inner<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<(), String> {
        let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        root.fill(&WHITE).map_err(e)?;
        let ((x0, x1), (y0, y1)) = self.ranges();
        // The legend gets a column of its own beside the plot: it never
        // hides data, however many series there are.
        let area = root
            .titled(
                &self.title,
                ("sans-serif", 18).into_font().style(FontStyle::Bold),
            )
            .map_err(e)?;
        let (w, _) = area.dim_in_pixel();
        let (plot, legend) = if self.legend_rows() > 0 {
            let (a, b) = area.split_horizontally(w.saturating_sub(LEGEND_W));
            (a, Some(b))
        } else {
            (area, None)
        };
        let mut chart = ChartBuilder::on(&plot)
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc(self.x_label.as_str())
            .y_desc(self.y_label.as_str())
            .label_style(("sans-serif", 12))
            .axis_desc_style(("sans-serif", 13))
            .light_line_style(RGBColor(238, 238, 238))
            .bold_line_style(RGBColor(215, 215, 215))
            .x_labels(8)
            .y_labels(8)
            .x_label_formatter(&|v| tick(*v))
            .y_label_formatter(&|v| tick(*v))
            .draw()
            .map_err(e)?;
        match self.kind {
            ChartKind::Lines | ChartKind::Scatter => {
                for s in &self.series {
                    let color = PALETTE[s.color % PALETTE.len()];
                    let pts = s
                        .points
                        .iter()
                        .copied()
                        .filter(|(x, y)| x.is_finite() && y.is_finite());
                    match s.style {
                        LineStyle::Solid | LineStyle::Plain => chart
                            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                            .map_err(e)?,
                        LineStyle::Dashed => chart
                            .draw_series(DashedLineSeries::new(
                                pts.clone(),
                                7,
                                5,
                                color.stroke_width(2),
                            ))
                            .map_err(e)?,
                        LineStyle::Markers => chart
                            .draw_series(pts.clone().map(|p| Circle::new(p, 5, color.filled())))
                            .map_err(e)?,
                        LineStyle::Hollow => chart
                            .draw_series(
                                pts.clone()
                                    .map(|p| Circle::new(p, 5, color.stroke_width(2))),
                            )
                            .map_err(e)?,
                        LineStyle::Cross => chart
                            .draw_series(
                                pts.clone().map(|p| Cross::new(p, 5, color.stroke_width(2))),
                            )
                            .map_err(e)?,
                    };
                    if matches!(s.style, LineStyle::Solid | LineStyle::Dashed) {
                        chart
                            .draw_series(pts.map(|p| Circle::new(p, 3, color.filled())))
                            .map_err(e)?;
                    }
                }
            }
            ChartKind::StackedArea => {
                let mut tops: Vec<Vec<(f64, f64)>> = Vec::with_capacity(self.series.len());
                for (k, s) in self.series.iter().enumerate() {
                    let top = s
                        .points
                        .iter()
                        .enumerate()
                        .map(|(i, &(x, y))| {
                            let below = if k == 0 {
                                0.0
                            } else {
                                tops[k - 1].get(i).map_or(0.0, |p| p.1)
                            };
                            (x, below + y)
                        })
                        .collect();
                    tops.push(top);
                }
                for (k, s) in self.series.iter().enumerate().rev() {
                    let color = PALETTE[s.color % PALETTE.len()];
                    chart
                        .draw_series(
                            AreaSeries::new(tops[k].iter().copied(), 0.0, color.mix(0.75))
                                .border_style(color.stroke_width(1)),
                        )
                        .map_err(e)?;
                }
            }
        }
        if let Some(area) = legend {
            self.draw_legend(&area).map_err(e)?;
        }
        root.present().map_err(e)?;
        Ok(())
    }
}

impl Chart {
    /// The legend column: one row per labelled series, its glyph then its
    /// label (shortened from the front past [`LEGEND_CHARS`]).
    fn draw_legend<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        let font = ("sans-serif", 14).into_font().color(&RGBColor(40, 40, 40));
        let mut y = 24i32;
        for s in self.series.iter().filter(|s| !s.label.is_empty()) {
            let color = PALETTE[s.color % PALETTE.len()];
            let (x, yc) = (8i32, y);
            match (self.kind, s.style) {
                (ChartKind::StackedArea, _) => area.draw(&Rectangle::new(
                    [(x, yc - 5), (x + 18, yc + 5)],
                    color.mix(0.75).filled(),
                ))?,
                (_, LineStyle::Hollow) => {
                    area.draw(&Circle::new((x + 9, yc), 5, color.stroke_width(2)))?;
                }
                (_, LineStyle::Cross) => {
                    area.draw(&Cross::new((x + 9, yc), 5, color.stroke_width(2)))?;
                }
                (_, LineStyle::Markers) => {
                    area.draw(&Circle::new((x + 9, yc), 4, color.filled()))?;
                }
                (_, style) => {
                    if style == LineStyle::Dashed {
                        area.draw(&PathElement::new(
                            vec![(x, yc), (x + 7, yc)],
                            color.stroke_width(2),
                        ))?;
                        area.draw(&PathElement::new(
                            vec![(x + 12, yc), (x + 19, yc)],
                            color.stroke_width(2),
                        ))?;
                    } else {
                        area.draw(&PathElement::new(
                            vec![(x, yc), (x + 19, yc)],
                            color.stroke_width(2),
                        ))?;
                    }
                    if style != LineStyle::Plain {
                        area.draw(&Circle::new((x + 9, yc), 3, color.filled()))?;
                    }
                }
            }
            area.draw(&Text::new(
                legend_label(&s.label),
                (x + 28, yc - 7),
                font.clone(),
            ))?;
            y += LEGEND_ROW as i32;
        }
        Ok(())
    }
}

/// A legend label of at most [`LEGEND_CHARS`] characters: longer ones keep
/// their end (the policy and percentile) behind an ellipsis.
fn legend_label(label: &str) -> String {
    let n = label.chars().count();
    if n <= LEGEND_CHARS {
        return label.to_string();
    }
    let tail: String = label.chars().skip(n - (LEGEND_CHARS - 1)).collect();
    format!("…{tail}")
}

/// Tick labels: short, no float noise.
fn tick(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1e5 {
        format!("{v:.2e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{:.2}", v)
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

/// The runs whose distributions and steps are drawn: every run input, plus
/// each sweep's highest-load point per policy that was loaded. Labels are
/// unique (a `#2` suffix on repeats).
pub(crate) fn detail_runs<'a>(inputs: &[&'a ReportInput]) -> Vec<(String, &'a RunData)> {
    let mut out: Vec<(String, &'a RunData)> = Vec::new();
    for input in inputs {
        match *input {
            ReportInput::Run(r) => out.push((r.name().to_string(), r)),
            ReportInput::Sweep(s) => {
                for r in s.representative_runs() {
                    let load = s
                        .summary
                        .points
                        .iter()
                        .find(|p| s.runs.get(&p.run).is_some_and(|x| std::ptr::eq(x, r)))
                        .map(|p| p.load);
                    let label = match load {
                        Some(l) => format!("{}/{} @{}", s.summary.name, r.policy(), tick(l)),
                        None => format!("{}/{}", s.summary.name, r.policy()),
                    };
                    out.push((label, r));
                }
            }
            // Trial run folders are not loaded: the Tuning section draws
            // the campaign from its journal.
            ReportInput::Campaign(_) => {}
        }
    }
    let mut seen: Vec<String> = Vec::new();
    for (label, _) in &mut out {
        let base = label.clone();
        let mut k = 1;
        while seen.contains(label) {
            k += 1;
            *label = format!("{base} #{k}");
        }
        seen.push(label.clone());
    }
    out
}

/// An empirical CDF with at most `max` points (evenly spaced in probability,
/// always keeping the minimum and maximum).
pub(crate) fn cdf_points(mut values: Vec<f64>, max: usize) -> Vec<(f64, f64)> {
    values.retain(|v| v.is_finite());
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return Vec::new();
    }
    let p = |i: usize| (i + 1) as f64 / n as f64;
    if n <= max {
        return values.iter().enumerate().map(|(i, &v)| (v, p(i))).collect();
    }
    let max = max.max(2);
    let mut out: Vec<(f64, f64)> = Vec::with_capacity(max);
    for k in 0..max {
        let i = ((k as f64) * (n - 1) as f64 / (max - 1) as f64).round() as usize;
        out.push((values[i], p(i)));
    }
    out
}

/// Step series averaged over at most `max` time bins: `(t, prefill, decode,
/// padding, kv utilisation)` per point.
pub(crate) fn step_points(steps: &[StepRecord], max: usize) -> Vec<[f64; 5]> {
    let row = |s: &StepRecord| {
        let kv = if s.kv_blocks_total > 0 {
            f64::from(s.kv_blocks_used) / f64::from(s.kv_blocks_total)
        } else {
            f64::NAN
        };
        [
            s.t_start,
            f64::from(s.prefill_tokens),
            f64::from(s.decode_tokens),
            f64::from(s.padding_tokens),
            kv,
        ]
    };
    if steps.len() <= max {
        return steps.iter().map(row).collect();
    }
    let t0 = steps
        .iter()
        .map(|s| s.t_start)
        .fold(f64::INFINITY, f64::min);
    let t1 = steps
        .iter()
        .map(|s| s.t_start)
        .fold(f64::NEG_INFINITY, f64::max);
    let width = ((t1 - t0) / max as f64).max(f64::MIN_POSITIVE);
    let mut sums = vec![[0.0f64; 5]; max];
    let mut counts = vec![[0usize; 2]; max];
    for s in steps {
        let b = (((s.t_start - t0) / width) as usize).min(max - 1);
        let r = row(s);
        for j in 1..4 {
            sums[b][j] += r[j];
        }
        counts[b][0] += 1;
        if r[4].is_finite() {
            sums[b][4] += r[4];
            counts[b][1] += 1;
        }
    }
    (0..max)
        .filter(|&b| counts[b][0] > 0)
        .map(|b| {
            let c = counts[b][0] as f64;
            [
                t0 + (b as f64 + 0.5) * width,
                sums[b][1] / c,
                sums[b][2] / c,
                sums[b][3] / c,
                if counts[b][1] > 0 {
                    sums[b][4] / counts[b][1] as f64
                } else {
                    f64::NAN
                },
            ]
        })
        .collect()
}

/// The FastGen rate (tok/s) the effective-throughput chart uses.
pub(crate) fn effective_rate(inputs: &[&ReportInput]) -> f64 {
    inputs
        .iter()
        .find_map(|i| match *i {
            ReportInput::Run(r) => r.summary.metrics.slo.fastgen_rate,
            ReportInput::Sweep(s) => s
                .summary
                .points
                .first()
                .and_then(|p| p.metrics.slo.fastgen_rate),
            ReportInput::Campaign(_) => None,
        })
        .unwrap_or(DEFAULT_FASTGEN_RATE)
}

/// The engine and hardware of an input, as a group label: `simulated h200`,
/// `cpu engine · <host CPU>`. `None` for campaigns and for sweeps with no
/// point run loaded.
pub(crate) fn engine_label(input: &ReportInput) -> Option<String> {
    let run = match input {
        ReportInput::Run(r) => r,
        ReportInput::Sweep(s) => s.runs.values().next()?,
        ReportInput::Campaign(_) => return None,
    };
    let e = &run.summary.provenance.engine;
    let hw = e.hardware.as_deref().unwrap_or("unknown hardware");
    Some(match e.engine.as_str() {
        "sim" => format!("simulated {hw}"),
        other => format!("{other} engine · {hw}"),
    })
}

/// Runs and sweeps split by engine and hardware, in order of first
/// appearance, with each group's label. Charts and tables are drawn per
/// group, so a simulated H200 and a real CPU never share axes (their scales
/// differ by orders of magnitude). Campaigns are not grouped.
pub(crate) fn engine_groups(inputs: &[ReportInput]) -> Vec<(String, Vec<&ReportInput>)> {
    let mut groups: Vec<(String, Vec<&ReportInput>)> = Vec::new();
    for input in inputs {
        if matches!(input, ReportInput::Campaign(_)) {
            continue;
        }
        let label = engine_label(input).unwrap_or_else(|| "other runs".into());
        match groups.iter_mut().find(|(l, _)| *l == label) {
            Some((_, members)) => members.push(input),
            None => groups.push((label, vec![input])),
        }
    }
    groups
}

/// The id suffix of group `k` (0-based): none for the first, `-2`, `-3`, …
pub(crate) fn group_suffix(k: usize) -> String {
    if k == 0 {
        String::new()
    } else {
        format!("-{}", k + 1)
    }
}

/// Every chart of a report, in page order: the charts of each engine group
/// (see [`engine_groups`]; ids of the second group on end in `-2`, and so
/// on, titles name the group when there are several), then the tuning
/// charts. Charts without data are left out.
pub fn report_charts(inputs: &[ReportInput]) -> Vec<Chart> {
    let groups = engine_groups(inputs);
    let mut charts = Vec::new();
    let mut batch = 0;
    for (k, (label, members)) in groups.iter().enumerate() {
        let mut cs = group_charts(members, &mut batch);
        if groups.len() > 1 {
            for c in &mut cs {
                if !c.id.starts_with("batch-composition-") {
                    c.id.push_str(&group_suffix(k));
                    c.title = format!("{} · {label}", c.title);
                }
            }
        }
        charts.extend(cs);
    }
    charts.extend(tuning_charts(inputs));
    charts
}

/// The charts of one engine group; batch-composition charts are numbered
/// from `batch + 1` on (across groups), and `batch` is advanced.
fn group_charts(inputs: &[&ReportInput], batch: &mut usize) -> Vec<Chart> {
    let mut charts = Vec::new();
    charts.extend(latency_throughput(inputs));
    charts.extend(effective_vs_load(inputs));
    let runs = detail_runs(inputs);
    let shown: Vec<&(String, &RunData)> = runs.iter().take(MAX_OVERLAY).collect();
    let omitted = runs.len().saturating_sub(MAX_OVERLAY);
    let note = if omitted > 0 {
        format!(" The first {MAX_OVERLAY} runs are shown; {omitted} more are in the tables.")
    } else {
        String::new()
    };
    // Latency CDFs.
    type Pick = fn(&fuselab_metrics::RequestMetrics) -> Vec<f64>;
    let cdfs: [(&str, &str, &str, Pick); 3] = [
        (
            "ttft-cdf",
            "TTFT distribution",
            "time to first token (ms)",
            |m| vec![m.ttft_s],
        ),
        (
            "itl-cdf",
            "Inter-token latency distribution",
            "inter-token latency (ms)",
            |m| m.itl_s.clone(),
        ),
        (
            "e2e-cdf",
            "End-to-end latency distribution",
            "end-to-end latency (ms)",
            |m| vec![m.e2e_s],
        ),
    ];
    for (id, title, x, pick) in cdfs {
        let series: Vec<Series> = shown
            .iter()
            .enumerate()
            .filter_map(|(i, (label, r))| {
                let values: Vec<f64> = r
                    .requests
                    .iter()
                    .filter_map(request_metrics)
                    .flat_map(|m| pick(&m))
                    .map(|v| v * 1e3)
                    .collect();
                let points = cdf_points(values, MAX_CDF_POINTS);
                (!points.is_empty()).then(|| Series {
                    label: label.clone(),
                    color: i,
                    style: LineStyle::Plain,
                    points,
                })
            })
            .collect();
        if !series.is_empty() {
            charts.push(Chart {
                id: id.into(),
                title: title.into(),
                x_label: x.into(),
                y_label: "fraction of samples ≤ x".into(),
                kind: ChartKind::Lines,
                series,
                caption: format!(
                    "Empirical CDF over completed requests{}, at most {MAX_CDF_POINTS} points per run.{note}",
                    if id == "itl-cdf" { " (every token gap; a chunk of n tokens counts n gaps of Δ/n)" } else { "" }
                ),
            });
        }
    }
    // Per-step batch composition, one chart per run.
    for (label, r) in &shown {
        if r.steps.is_empty() {
            continue;
        }
        *batch += 1;
        let pts = step_points(&r.steps, MAX_STEP_POINTS);
        let col = |j: usize| pts.iter().map(|p| (p[0], p[j])).collect::<Vec<_>>();
        let mut series = vec![
            Series {
                label: "prefill tokens".into(),
                color: 0,
                style: LineStyle::Plain,
                points: col(1),
            },
            Series {
                label: "decode tokens".into(),
                color: 1,
                style: LineStyle::Plain,
                points: col(2),
            },
        ];
        if pts.iter().any(|p| p[3] > 0.0) {
            series.push(Series {
                label: "padding tokens".into(),
                color: 6,
                style: LineStyle::Plain,
                points: col(3),
            });
        }
        let binned = r.steps.len() > MAX_STEP_POINTS;
        charts.push(Chart {
            id: format!("batch-composition-{batch}"),
            title: format!("Batch composition: {label}"),
            x_label: "time since start (s)".into(),
            y_label: if binned { "tokens per step (bin mean)" } else { "tokens per step" }.into(),
            kind: ChartKind::StackedArea,
            series,
            caption: format!(
                "Prompt (prefill), decode and padding tokens of each forward step over time ({} steps{}).",
                r.steps.len(),
                if binned { format!(", averaged over {MAX_STEP_POINTS} time bins") } else { String::new() }
            ),
        });
    }
    // KV utilisation, overlaid.
    let kv: Vec<Series> = shown
        .iter()
        .enumerate()
        .filter(|(_, (_, r))| r.steps.iter().any(|s| s.kv_blocks_total > 0))
        .map(|(i, (label, r))| Series {
            label: label.clone(),
            color: i,
            style: LineStyle::Plain,
            points: step_points(&r.steps, MAX_STEP_POINTS)
                .iter()
                .filter(|p| p[4].is_finite())
                .map(|p| (p[0], 100.0 * p[4]))
                .collect(),
        })
        .collect();
    charts.extend(server_charts(&shown, &note));
    if !kv.is_empty() {
        charts.push(Chart {
            id: "kv-utilisation".into(),
            title: "KV-cache utilisation".into(),
            x_label: "time since start (s)".into(),
            y_label: "KV blocks in use (%)".into(),
            kind: ChartKind::Lines,
            series: kv,
            caption: format!("KV blocks in use after each step, as a share of the cache (bin mean past {MAX_STEP_POINTS} steps).{note}"),
        });
    }
    charts
}

/// Prometheus families of the servers' KV-cache usage (fraction, 0–1), by server.
const SERVER_KV: [&str; 3] = [
    "vllm:kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc",
    "sglang:token_usage",
];
/// Families of running and waiting requests: (name, label in the legend).
const SERVER_QUEUE: [(&str, &str); 4] = [
    ("vllm:num_requests_running", "running"),
    ("vllm:num_requests_waiting", "waiting"),
    ("sglang:num_running_reqs", "running"),
    ("sglang:num_queue_reqs", "waiting"),
];

/// One time series of a run's scraped server metrics, summed over labels.
fn server_series(r: &RunData, name: &str) -> Vec<(f64, f64)> {
    let mut by_t: std::collections::BTreeMap<u64, f64> = std::collections::BTreeMap::new();
    for s in r
        .server_metrics
        .iter()
        .filter(|s| s.name == name && s.value.is_finite())
    {
        *by_t.entry(s.t.to_bits()).or_default() += s.value;
    }
    let mut pts: Vec<(f64, f64)> = by_t
        .into_iter()
        .map(|(t, v)| (f64::from_bits(t), v))
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    pts
}

/// A run's server prefix-cache hit rate over time (%): vLLM's cumulative
/// hits over queries counters, else SGLang's hit-rate gauge.
fn server_hit_rate(r: &RunData) -> Vec<(f64, f64)> {
    let hits = server_series(r, "vllm:prefix_cache_hits_total");
    let queries = server_series(r, "vllm:prefix_cache_queries_total");
    if !queries.is_empty() {
        return hits
            .iter()
            .zip(&queries)
            .filter(|(h, q)| h.0 == q.0 && q.1 > 0.0)
            .map(|(h, q)| (h.0, 100.0 * h.1 / q.1))
            .collect();
    }
    server_series(r, "sglang:cache_hit_rate")
        .into_iter()
        .map(|(t, v)| (t, 100.0 * v))
        .collect()
}

/// The servers' own view during HTTP runs: KV-cache usage and requests
/// running and waiting, from `/metrics` scraped into `server_metrics.parquet`.
fn server_charts(shown: &[&(String, &RunData)], note: &str) -> Vec<Chart> {
    let mut kv = Vec::new();
    let mut queue = Vec::new();
    for (i, (label, r)) in shown.iter().enumerate() {
        if let Some(points) = SERVER_KV
            .iter()
            .map(|n| server_series(r, n))
            .find(|p| !p.is_empty())
        {
            kv.push(Series {
                label: label.clone(),
                color: i,
                style: LineStyle::Plain,
                points: points.into_iter().map(|(t, v)| (t, 100.0 * v)).collect(),
            });
        }
        for (name, what) in SERVER_QUEUE {
            let points = server_series(r, name);
            if points.is_empty() {
                continue;
            }
            queue.push(Series {
                label: format!("{label} {what}"),
                color: i,
                style: if what == "running" {
                    LineStyle::Plain
                } else {
                    LineStyle::Dashed
                },
                points,
            });
        }
    }
    let hits: Vec<Series> = shown
        .iter()
        .enumerate()
        .filter_map(|(i, (label, r))| {
            let points = server_hit_rate(r);
            (!points.is_empty()).then(|| Series {
                label: label.clone(),
                color: i,
                style: LineStyle::Plain,
                points,
            })
        })
        .collect();
    let mut charts = Vec::new();
    if !hits.is_empty() {
        charts.push(Chart {
            id: "server-prefix-cache".into(),
            title: "Server prefix-cache hit rate".into(),
            x_label: "time since start (s)".into(),
            y_label: "prompt tokens from the cache (%)".into(),
            kind: ChartKind::Lines,
            series: hits,
            caption: format!("Cumulative share of looked-up prompt tokens the server found in its prefix cache (vLLM's prefix_cache_hits / prefix_cache_queries counters, or SGLang's cache_hit_rate), scraped from its /metrics.{note}"),
        });
    }
    if !kv.is_empty() {
        charts.push(Chart {
            id: "server-kv".into(),
            title: "Server KV-cache usage".into(),
            x_label: "time since start (s)".into(),
            y_label: "KV cache in use (%)".into(),
            kind: ChartKind::Lines,
            series: kv,
            caption: format!("The server's own KV-cache usage, scraped from its Prometheus /metrics during the run.{note}"),
        });
    }
    if !queue.is_empty() {
        charts.push(Chart {
            id: "server-queue".into(),
            title: "Server requests running and waiting".into(),
            x_label: "time since start (s)".into(),
            y_label: "requests".into(),
            kind: ChartKind::Lines,
            series: queue,
            caption: format!("Requests in the server's running batch (solid) and waiting queue (dashed), scraped from its /metrics.{note}"),
        });
    }
    charts
}

/// The id of a campaign's chart: `{base}-{campaign}` with the campaign's
/// 1-based number among the report's campaigns, and `-{objective}` (1-based)
/// for per-objective charts of multi-objective campaigns.
pub(crate) fn campaign_chart_id(base: &str, campaign: usize, objective: Option<usize>) -> String {
    match objective {
        Some(k) => format!("{base}-{}-{}", campaign + 1, k + 1),
        None => format!("{base}-{}", campaign + 1),
    }
}

/// The charts of every tuning campaign: convergence per objective, and the
/// Pareto front of multi-objective campaigns.
fn tuning_charts(inputs: &[ReportInput]) -> Vec<Chart> {
    let campaigns = inputs.iter().filter_map(|i| match i {
        ReportInput::Campaign(c) => Some(c),
        _ => None,
    });
    let mut charts = Vec::new();
    for (ci, c) in campaigns.enumerate() {
        let objs = &c.settings.objectives;
        for (k, o) in objs.iter().enumerate() {
            charts.extend(convergence_chart(c, ci, k, o));
        }
        if objs.len() >= 2 {
            charts.extend(pareto_chart(c, ci));
        }
    }
    charts
}

fn convergence_chart(c: &CampaignData, ci: usize, k: usize, o: &ObjectiveInfo) -> Option<Chart> {
    let value = |t: &crate::TrialData| t.objectives.get(k).copied().filter(|v| v.is_finite());
    let pick = |status: TrialStatus| -> Vec<(f64, f64)> {
        c.trials
            .iter()
            .filter(|t| t.status == status)
            .filter_map(|t| Some((t.trial as f64, value(t)?)))
            .collect()
    };
    let ok = pick(TrialStatus::Ok);
    let infeasible = pick(TrialStatus::Infeasible);
    if c.trials.is_empty() {
        return None;
    }
    // Trials without a value are drawn on the worst value shown (or 0).
    let worst = ok
        .iter()
        .chain(&infeasible)
        .map(|p| p.1)
        .reduce(|a, b| if o.direction.better(a, b) { b } else { a });
    let floor = worst.unwrap_or(0.0);
    let failed: Vec<(f64, f64)> = c
        .trials
        .iter()
        .filter(|t| !t.status.ran() || value(t).is_none())
        .map(|t| (t.trial as f64, floor))
        .collect();
    // Best so far as a staircase: a step up (or down) at each improvement.
    let mut best: Vec<(f64, f64)> = Vec::new();
    for (trial, b) in c.best_so_far(k) {
        let x = trial as f64;
        if let Some(&(_, prev)) = best.last()
            && prev != b
        {
            best.push((x, prev));
        }
        best.push((x, b));
    }
    let mut series = Vec::new();
    if !ok.is_empty() {
        series.push(Series {
            label: "ok".into(),
            color: 0,
            style: LineStyle::Markers,
            points: ok,
        });
    }
    if !infeasible.is_empty() {
        series.push(Series {
            label: "infeasible".into(),
            color: 1,
            style: LineStyle::Hollow,
            points: infeasible,
        });
    }
    let n_failed = failed.len();
    if !failed.is_empty() {
        series.push(Series {
            label: "failed / timeout / crashed".into(),
            color: 7,
            style: LineStyle::Cross,
            points: failed,
        });
    }
    if !best.is_empty() {
        series.push(Series {
            label: "best so far".into(),
            color: 2,
            style: LineStyle::Plain,
            points: best,
        });
    }
    let multi = c.settings.objectives.len() > 1;
    Some(Chart {
        id: campaign_chart_id("convergence", ci, multi.then_some(k)),
        title: format!("Convergence: {} ({})", c.name, o.name),
        x_label: "trial".into(),
        y_label: format!("{} ({})", o.name, o.direction.verb()),
        kind: ChartKind::Scatter,
        series,
        caption: format!(
            "Objective {} ({}) of each of the {} trials in journal order, and the best feasible value so far.{}{}",
            o.name,
            o.direction.verb(),
            c.trials.len(),
            if c.trials.iter().any(|t| t.status == TrialStatus::Infeasible) {
                " Open circles missed an outcome constraint and do not count as best."
            } else {
                ""
            },
            if n_failed > 0 {
                format!(" {n_failed} trial(s) produced no value: crosses on the worst value shown.")
            } else {
                String::new()
            }
        ),
    })
}

fn pareto_chart(c: &CampaignData, ci: usize) -> Option<Chart> {
    let objs = &c.settings.objectives;
    let front = c.pareto_front();
    let xy = |t: &crate::TrialData| -> Option<(f64, f64)> {
        let (x, y) = (*t.objectives.first()?, *t.objectives.get(1)?);
        (x.is_finite() && y.is_finite()).then_some((x, y))
    };
    let dominated: Vec<(f64, f64)> = c
        .trials
        .iter()
        .enumerate()
        .filter(|(i, t)| t.status == TrialStatus::Ok && !front.contains(i))
        .filter_map(|(_, t)| xy(t))
        .collect();
    let infeasible: Vec<(f64, f64)> = c
        .trials
        .iter()
        .filter(|t| t.status == TrialStatus::Infeasible)
        .filter_map(xy)
        .collect();
    let mut front_pts: Vec<(f64, f64)> = front.iter().filter_map(|&i| xy(&c.trials[i])).collect();
    front_pts.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    if front_pts.is_empty() && dominated.is_empty() && infeasible.is_empty() {
        return None;
    }
    let mut series = Vec::new();
    if !dominated.is_empty() {
        series.push(Series {
            label: "dominated".into(),
            color: 6,
            style: LineStyle::Hollow,
            points: dominated,
        });
    }
    if !infeasible.is_empty() {
        series.push(Series {
            label: "infeasible".into(),
            color: 1,
            style: LineStyle::Cross,
            points: infeasible,
        });
    }
    let n_front = front_pts.len();
    if !front_pts.is_empty() {
        series.push(Series {
            label: "Pareto front".into(),
            color: 0,
            // With exactly two objectives the front is a curve; with more, its
            // projection on the first two is only a set of points.
            style: if objs.len() == 2 {
                LineStyle::Solid
            } else {
                LineStyle::Markers
            },
            points: front_pts,
        });
    }
    Some(Chart {
        id: campaign_chart_id("pareto", ci, None),
        title: format!("Pareto front: {}", c.name),
        x_label: format!("{} ({})", objs[0].name, objs[0].direction.verb()),
        y_label: format!("{} ({})", objs[1].name, objs[1].direction.verb()),
        kind: ChartKind::Scatter,
        series,
        caption: format!(
            "Each feasible trial by its first two objectives; the {n_front} non-dominated trial(s) (no other feasible trial is at least as good in every objective and better in one{}) form the Pareto front.",
            if objs.len() > 2 {
                format!(", over all {} objectives", objs.len())
            } else {
                String::new()
            }
        ),
    })
}

/// A curve owner: a sweep's policy or a single run.
struct CurvePoint {
    label: String,
    load: Option<f64>,
    metrics: fuselab_core::Metrics,
}

fn curves(inputs: &[&ReportInput]) -> Vec<(String, bool, Vec<CurvePoint>)> {
    let mut out: Vec<(String, bool, Vec<CurvePoint>)> = Vec::new();
    for input in inputs {
        match *input {
            ReportInput::Sweep(s) => {
                let mut policies: Vec<&str> = Vec::new();
                for p in &s.summary.points {
                    if !policies.contains(&p.policy.as_str()) {
                        policies.push(&p.policy);
                    }
                }
                for pol in policies {
                    let mut pts: Vec<CurvePoint> = s
                        .summary
                        .points
                        .iter()
                        .filter(|p| p.policy == pol)
                        .map(|p| CurvePoint {
                            label: pol.to_string(),
                            load: Some(p.load),
                            metrics: p.metrics.clone(),
                        })
                        .collect();
                    pts.sort_by(|a, b| a.load.unwrap_or(0.0).total_cmp(&b.load.unwrap_or(0.0)));
                    let label = if inputs.len() > 1 {
                        format!("{}/{pol}", s.summary.name)
                    } else {
                        pol.to_string()
                    };
                    out.push((label, true, pts));
                }
            }
            ReportInput::Run(r) => out.push((
                r.name().to_string(),
                false,
                vec![CurvePoint {
                    label: r.name().to_string(),
                    load: r.load(),
                    metrics: r.summary.metrics.clone(),
                }],
            )),
            ReportInput::Campaign(_) => {}
        }
    }
    out
}

fn latency_throughput(inputs: &[&ReportInput]) -> Vec<Chart> {
    let cs = curves(inputs);
    if cs.is_empty() {
        return Vec::new();
    }
    let mut charts = Vec::new();
    type Get = fn(&fuselab_core::Metrics) -> (f64, f64);
    let kinds: [(&str, &str, &str, Get); 2] = [
        (
            "ttft-vs-throughput",
            "TTFT against throughput",
            "TTFT (ms)",
            |m| (m.ttft_s.p50, m.ttft_s.p99),
        ),
        (
            "tpot-vs-throughput",
            "Per-token latency against throughput",
            "time per output token (ms)",
            |m| (m.tpot_s.p50, m.tpot_s.p99),
        ),
    ];
    for (id, title, y, get) in kinds {
        let mut series = Vec::new();
        for (i, (label, is_curve, pts)) in cs.iter().take(MAX_OVERLAY).enumerate() {
            let xy = |p99: bool| -> Vec<(f64, f64)> {
                pts.iter()
                    .map(|p| {
                        let (a, b) = get(&p.metrics);
                        (
                            p.metrics.output_token_throughput,
                            1e3 * if p99 { b } else { a },
                        )
                    })
                    .collect()
            };
            let (s50, s99) = if *is_curve {
                (LineStyle::Solid, LineStyle::Dashed)
            } else {
                (LineStyle::Markers, LineStyle::Markers)
            };
            series.push(Series {
                label: format!("{label} p50"),
                color: i,
                style: s50,
                points: xy(false),
            });
            if *is_curve {
                series.push(Series {
                    label: format!("{label} p99"),
                    color: i,
                    style: s99,
                    points: xy(true),
                });
            }
        }
        charts.push(Chart {
            id: id.into(),
            title: title.into(),
            x_label: "output throughput (tok/s)".into(),
            y_label: y.into(),
            kind: ChartKind::Lines,
            series,
            caption: "Each sweep point is one load; solid lines are p50, dashed lines p99; single runs are dots (p50).".into(),
        });
    }
    charts
}

fn effective_vs_load(inputs: &[&ReportInput]) -> Option<Chart> {
    let rate = effective_rate(inputs);
    let key = fastgen_key(rate);
    let cs = curves(inputs);
    let mut series = Vec::new();
    let mut clients = false;
    let mut rates = false;
    for input in inputs {
        match *input {
            ReportInput::Sweep(s) => match s.summary.load_kind {
                fuselab_core::LoadKind::Clients => clients = true,
                fuselab_core::LoadKind::Rate => rates = true,
            },
            ReportInput::Run(r) => match r.summary.provenance.workload.arrivals {
                fuselab_core::Arrivals::ClosedLoop { .. } => clients = true,
                _ => rates = true,
            },
            ReportInput::Campaign(_) => {}
        }
    }
    for (i, (label, is_curve, pts)) in cs.iter().take(MAX_OVERLAY).enumerate() {
        let points: Vec<(f64, f64)> = pts
            .iter()
            .filter_map(|p| Some((p.load?, *p.metrics.effective_throughput.get(&key)?)))
            .collect();
        let _ = &pts.first().map(|p| &p.label);
        if !points.is_empty() {
            series.push(Series {
                label: label.clone(),
                color: i,
                style: if *is_curve {
                    LineStyle::Solid
                } else {
                    LineStyle::Markers
                },
                points,
            });
        }
    }
    if series.is_empty() {
        return None;
    }
    let x_label = match (rates, clients) {
        (true, false) => "offered load (requests/s)",
        (false, true) => "load (concurrent clients)",
        _ => "load (requests/s or clients)",
    };
    Some(Chart {
        id: "effective-throughput".into(),
        title: format!("Effective throughput (FastGen SLA, {} tok/s)", tick(rate)),
        x_label: x_label.into(),
        y_label: "effective throughput (req/s)".into(),
        kind: ChartKind::Lines,
        series,
        caption: format!(
            "Requests per second meeting the FastGen SLA (TTFT ≤ prompt/512 s and every token k within k/{} s of the first), against load.",
            tick(rate)
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdf_is_bounded_monotone_and_keeps_extremes() {
        let v: Vec<f64> = (0..10_000).map(|i| f64::from(i % 977)).collect();
        let p = cdf_points(v, 400);
        assert_eq!(p.len(), 400);
        assert_eq!(p[0].0, 0.0);
        assert_eq!(p[399], (976.0, 1.0));
        assert!(p.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(
            cdf_points(vec![2.0, 1.0], 400),
            vec![(1.0, 0.5), (2.0, 1.0)]
        );
    }

    #[test]
    fn steps_are_binned_past_the_limit() {
        let steps: Vec<StepRecord> = (0..5000)
            .map(|i| StepRecord {
                step: i,
                t_start: i as f64 * 0.01,
                decode_tokens: 10,
                prefill_tokens: if i % 2 == 0 { 100 } else { 0 },
                kv_blocks_used: 5,
                kv_blocks_total: 10,
                ..Default::default()
            })
            .collect();
        let p = step_points(&steps, 600);
        assert!(p.len() <= 600 && p.len() > 500);
        assert!(
            p.iter()
                .all(|r| (r[2] - 10.0).abs() < 1e-9 && (r[4] - 0.5).abs() < 1e-9)
        );
        let mean_prefill = p.iter().map(|r| r[1]).sum::<f64>() / p.len() as f64;
        assert!((mean_prefill - 50.0).abs() < 2.0);
    }

    #[test]
    fn png_has_text_pixels_and_a_png_signature() {
        let chart = Chart {
            id: "t".into(),
            title: "Title".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            kind: ChartKind::Lines,
            series: vec![Series {
                label: "a".into(),
                color: 0,
                style: LineStyle::Solid,
                points: vec![(0.0, 1.0), (1.0, 2.0)],
            }],
            caption: String::new(),
        };
        let png = chart.to_png().unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let svg = chart.to_svg().unwrap();
        assert!(svg.contains("<text") && svg.contains("Title"));
        assert!(!chart.to_inline_svg().unwrap().contains("http"));
    }

    #[test]
    fn server_telemetry_charts_read_vllm_names_and_sum_over_labels() {
        let mut run = crate::synth::synth_run("http", &crate::synth::SynthConfig::default());
        let sample =
            |t: f64, name: &str, labels: &str, value: f64| fuselab_core::ServerMetricSample {
                t,
                name: name.into(),
                labels: labels.into(),
                value,
            };
        run.server_metrics = vec![
            sample(1.0, "vllm:kv_cache_usage_perc", "", 0.25),
            sample(1.0, "vllm:num_requests_running", "engine=\"0\"", 3.0),
            sample(1.0, "vllm:num_requests_running", "engine=\"1\"", 4.0),
            sample(1.0, "vllm:prefix_cache_queries_total", "", 200.0),
            sample(1.0, "vllm:prefix_cache_hits_total", "", 50.0),
            sample(2.0, "vllm:prefix_cache_queries_total", "", 400.0),
            sample(2.0, "vllm:prefix_cache_hits_total", "", 300.0),
        ];
        let runs = [("http".to_string(), &run)];
        let shown: Vec<&(String, &RunData)> = runs.iter().collect();
        let charts = server_charts(&shown, "");
        let get = |id: &str| {
            charts
                .iter()
                .find(|c| c.id == id)
                .unwrap_or_else(|| panic!("{id}"))
        };
        assert_eq!(get("server-kv").series[0].points, [(1.0, 25.0)]);
        assert_eq!(get("server-queue").series[0].points, [(1.0, 7.0)]);
        assert_eq!(
            get("server-prefix-cache").series[0].points,
            [(1.0, 25.0), (2.0, 75.0)]
        );
        run.server_metrics.clear();
        let runs = [("http".to_string(), &run)];
        let shown: Vec<&(String, &RunData)> = runs.iter().collect();
        assert!(
            server_charts(&shown, "").is_empty(),
            "no telemetry, no chart"
        );
    }
}
