//! A Gantt chart of a simulated schedule as SVG: one row per worker (a lane per slot in use, a
//! task taking as many lanes as slots), bars coloured by workflow and labelled with the task
//! id where it fits, a time axis and a legend. Hand-written SVG, no dependencies.

use std::fmt::Write as _;
use std::time::Duration;

use taskfleet_common::units::format_duration;

use super::fleet::FleetSpec;
use super::report::SimReport;

const WIDTH: f64 = 1200.0;
const LANE: f64 = 16.0;
const ROW_GAP: f64 = 6.0;
const TOP: f64 = 40.0;
const RIGHT: f64 = 24.0;
const CHAR_WIDTH: f64 = 6.2;
/// Colour-blind friendly palette (Okabe–Ito, then Tableau).
const PALETTE: &[&str] = &[
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#4E79A7", "#F28E2B", "#59A14F",
    "#B07AA1", "#9C755F",
];

/// The SVG document of `report`'s schedule on `fleet`.
pub fn render(report: &SimReport, fleet: &FleetSpec) -> String {
    let n_workers = fleet.workers.len();
    // Greedy lanes per worker: each task takes the first run of `slots` lanes free at its
    // start (a new lane when none is).
    let mut lanes: Vec<Vec<u64>> = vec![Vec::new(); n_workers];
    let mut lane_of = Vec::with_capacity(report.schedule.len());
    for entry in &report.schedule {
        let worker_lanes = &mut lanes[entry.worker_idx];
        let span = entry.slots.max(1) as usize;
        let is_free = |lanes: &[u64], lane: usize| lanes.get(lane).is_none_or(|&end| end <= entry.start_ms);
        let first = (0..=worker_lanes.len())
            .find(|&lane| (lane..lane + span).all(|l| is_free(worker_lanes, l)))
            .unwrap_or(worker_lanes.len());
        if worker_lanes.len() < first + span {
            worker_lanes.resize(first + span, 0);
        }
        for lane in &mut worker_lanes[first..first + span] {
            *lane = entry.end_ms;
        }
        lane_of.push(first);
    }
    let longest_name = fleet.workers.iter().map(|worker| worker.name.len()).max().unwrap_or(0);
    let left = (longest_name as f64 * CHAR_WIDTH + 20.0).clamp(80.0, 240.0);
    let plot_width = WIDTH - left - RIGHT;
    let mut row_top = Vec::with_capacity(n_workers);
    let mut y = TOP;
    for worker_lanes in &lanes {
        row_top.push(y);
        y += worker_lanes.len().max(1) as f64 * LANE + ROW_GAP;
    }
    let plot_bottom = y;
    let makespan_ms = report
        .schedule
        .iter()
        .map(|entry| entry.end_ms)
        .max()
        .unwrap_or(0)
        .max(1);
    let x_of = |ms: u64| left + ms as f64 / makespan_ms as f64 * plot_width;
    let legend_rows = legend_layout(report, left);
    let height = plot_bottom + 40.0 + legend_rows.len() as f64 * 20.0 + 10.0;

    let mut svg = String::with_capacity(4096 + report.schedule.len() * 200);
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = write!(
        svg,
        r#"<text x="{left}" y="22" font-size="14" font-weight="bold">{} — makespan {}</text>"#,
        escape(&report.policy),
        format_duration(Duration::from_millis(makespan_ms))
    );
    for (idx, (worker, &top)) in fleet.workers.iter().zip(&row_top).enumerate() {
        let row_height = lanes[idx].len().max(1) as f64 * LANE;
        let shade = if idx % 2 == 0 { "#f4f4f4" } else { "#fafafa" };
        let _ = write!(
            svg,
            r#"<rect x="{left}" y="{top}" width="{plot_width}" height="{row_height}" fill="{shade}"/><text x="{:.1}" y="{:.1}" text-anchor="end" dominant-baseline="middle">{}</text>"#,
            left - 8.0,
            top + row_height / 2.0,
            escape(&worker.name)
        );
    }
    // Time axis with 1-2-5 ticks.
    let step = tick_step(makespan_ms);
    let _ = write!(
        svg,
        "<line x1=\"{left}\" y1=\"{plot_bottom}\" x2=\"{:.1}\" y2=\"{plot_bottom}\" stroke=\"#333\"/>",
        left + plot_width
    );
    let mut tick = 0;
    while tick <= makespan_ms {
        let x = x_of(tick);
        let _ = write!(
            svg,
            "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/><text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            plot_bottom + 4.0,
            plot_bottom + 16.0,
            format_duration(Duration::from_millis(tick))
        );
        tick += step;
    }
    for (entry, &lane) in report.schedule.iter().zip(&lane_of) {
        let x = x_of(entry.start_ms);
        let width = (x_of(entry.end_ms) - x).max(0.5);
        let y = row_top[entry.worker_idx] + lane as f64 * LANE + 1.0;
        let bar_height = entry.slots.max(1) as f64 * LANE - 2.0;
        let colour = PALETTE[entry.workflow_idx % PALETTE.len()];
        let _ = write!(
            svg,
            r#"<rect x="{x:.2}" y="{y:.1}" width="{width:.2}" height="{bar_height:.1}" fill="{colour}" stroke="white" stroke-width="0.5"><title>{} / {} on {}: {:.3}s – {:.3}s</title></rect>"#,
            escape(&entry.workflow),
            escape(&entry.task),
            escape(&entry.worker),
            entry.start,
            entry.end
        );
        if entry.task.len() as f64 * CHAR_WIDTH + 4.0 <= width {
            let _ = write!(
                svg,
                r#"<text x="{:.2}" y="{:.1}" font-size="10" fill="white" dominant-baseline="middle">{}</text>"#,
                x + 2.0,
                y + bar_height / 2.0,
                escape(&entry.task)
            );
        }
    }
    let mut legend_y = plot_bottom + 44.0;
    for row in legend_rows {
        for (x, idx) in row {
            let name = &report.workflows[idx].name;
            let _ = write!(
                svg,
                r#"<rect x="{x:.1}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{:.1}" y="{legend_y:.1}" dominant-baseline="middle">{}</text>"#,
                legend_y - 6.0,
                PALETTE[idx % PALETTE.len()],
                x + 16.0,
                escape(name)
            );
        }
        legend_y += 20.0;
    }
    svg.push_str("</svg>\n");
    svg
}

/// Legend entries as rows of (x, workflow index), wrapped to the chart's width.
fn legend_layout(report: &SimReport, left: f64) -> Vec<Vec<(f64, usize)>> {
    let mut rows = vec![Vec::new()];
    let mut x = left;
    for (idx, workflow) in report.workflows.iter().enumerate() {
        let width = 16.0 + workflow.name.len() as f64 * CHAR_WIDTH + 20.0;
        if x + width > WIDTH - RIGHT && x > left {
            rows.push(Vec::new());
            x = left;
        }
        rows.last_mut().expect("rows start non-empty").push((x, idx));
        x += width;
    }
    rows
}

/// A 1-2-5 step in milliseconds giving at most about ten ticks.
fn tick_step(span_ms: u64) -> u64 {
    let mut magnitude = 1u64;
    loop {
        for factor in [1, 2, 5] {
            let step = magnitude * factor;
            if span_ms / step <= 10 {
                return step;
            }
        }
        magnitude *= 10;
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
