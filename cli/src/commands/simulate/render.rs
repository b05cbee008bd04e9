//! The text report of `taskfleet simulate`: one table row per policy, the lower bound, and
//! each workflow's flow time when there are several.

use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::Table;
use taskfleet_engine::sim::{SimReport, Simulator};

use super::seconds;

/// How far the makespan lies above the lower bound: `+4.2%`.
fn over_bound(report: &SimReport) -> String {
    if report.lower_bound <= 0.0 {
        return "-".to_string();
    }
    format!("+{:.1}%", (report.makespan / report.lower_bound - 1.0).max(0.0) * 100.0)
}

pub(super) fn render_text(simulator: &Simulator, reports: &[SimReport]) -> String {
    let fleet = simulator.fleet();
    let n_tasks = reports.first().map_or(0, |report| report.schedule.len());
    let n_workflows = simulator.workflow_names().len();
    let mut text = format!(
        "simulated {n_tasks} tasks of {n_workflows} workflow{} on {} workers ({} slots)\n",
        if n_workflows == 1 { "" } else { "s" },
        fleet.workers.len(),
        fleet.total_slots()
    );
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY);
    let mut header = vec![
        "POLICY",
        "MAKESPAN",
        "MEAN FLOW",
        "MAX FLOW",
        "MEAN WAIT",
        "UTILIZATION",
        "FAIRNESS",
        "OVER BOUND",
    ];
    let stochastic = reports.iter().any(|report| report.stochastic.is_some());
    if stochastic {
        header.extend(["MAKESPAN MIN", "P50", "P90", "MAX"]);
    }
    let scored = reports.iter().any(|report| report.scores.is_some());
    if scored {
        header.extend([
            "ORACLE",
            "FCFS",
            "ERROR P50",
            "ERROR P90",
            "IN P10–P90",
            "ETA ≤P50",
            "ETA ≤P90",
        ]);
    }
    table.set_header(header);
    for report in reports {
        let mut row = vec![
            report.policy.clone(),
            seconds(report.makespan),
            seconds(report.mean_flow_time),
            seconds(report.max_flow_time),
            seconds(report.mean_wait),
            format!("{:.1}%", report.utilization * 100.0),
            format!("{:.3}", report.fairness),
            over_bound(report),
        ];
        if let Some(spread) = &report.stochastic {
            let q = spread.makespan;
            row.extend([q.min, q.p50, q.p90, q.max].map(seconds));
        }
        if let Some(scores) = &report.scores {
            row.extend([
                seconds(scores.oracle_makespan),
                seconds(scores.fcfs_makespan),
                format!("{:.0}%", scores.error_p50 * 100.0),
                format!("{:.0}%", scores.error_p90 * 100.0),
                scores
                    .within_p10_p90
                    .map_or_else(|| "-".to_string(), |share| format!("{:.0}%", share * 100.0)),
                format!("{:.0}%", scores.eta.p50_coverage * 100.0),
                format!("{:.0}%", scores.eta.p90_coverage * 100.0),
            ]);
        }
        table.add_row(row);
    }
    text += &format!("{table}\n");
    if let Some(report) = reports.first() {
        text += &format!(
            "lower bound of the makespan: {} (the longer of the critical path, each task on its \
             fastest worker, and the work over the fleet's capacity); OVER BOUND is each \
             makespan's excess over it\n",
            seconds(report.lower_bound)
        );
    }
    if n_workflows > 1 {
        let mut table = Table::new();
        table.load_preset(UTF8_BORDERS_ONLY);
        let mut header = vec!["WORKFLOW".to_string(), "SUBMIT".to_string()];
        header.extend(reports.iter().map(|report| format!("FLOW ({})", report.policy)));
        table.set_header(header);
        for (idx, name) in simulator.workflow_names().iter().enumerate() {
            let mut row = vec![name.clone(), seconds(reports[0].workflows[idx].submit)];
            row.extend(reports.iter().map(|report| seconds(report.workflows[idx].flow_time)));
            table.add_row(row);
        }
        text += &format!("{table}\n");
    }
    text
}
