//! A workflow's attempts on a timeline (a Gantt chart): one row per attempt, from when it
//! started (or was sent, while no worker has it yet) to when it ended (or now), coloured by
//! how it ended. The most recent [`MAX_ROWS`] attempts are drawn.

use maud::{html, Markup};
use taskfleet_common::Millis;

use crate::store::AttemptRecord;

/// Most attempts drawn.
pub(super) const MAX_ROWS: usize = 500;

const LABEL_W: u32 = 200;
const PLOT_W: u32 = 900;
const ROW_H: u32 = 18;
const AXIS_H: u32 = 22;

/// The chart of `attempts` (with their tasks' ids, by index) between `from` and `now`.
pub(super) fn chart(attempts: &[AttemptRecord], task_ids: &[String], from: Millis, now: Millis) -> Markup {
    let mut shown: Vec<&AttemptRecord> = attempts.iter().collect();
    shown.sort_by_key(|attempt| (start(attempt), attempt.task_idx, attempt.attempt));
    let skipped = shown.len().saturating_sub(MAX_ROWS);
    let shown = &shown[skipped..];
    let end = (shown.iter())
        .map(|attempt| attempt.finished_at.unwrap_or(now))
        .max()
        .unwrap_or(now)
        .max(from.plus_ms(1));
    let span = end.0.saturating_sub(from.0).max(1);
    let x = |at: Millis| LABEL_W + ((at.0.saturating_sub(from.0)) as f64 / span as f64 * f64::from(PLOT_W)) as u32;
    let height = AXIS_H + shown.len() as u32 * ROW_H + 4;
    let width = LABEL_W + PLOT_W + 10;
    html! {
        @if shown.is_empty() {
            p.muted { "No attempt has been sent yet." }
        } @else {
            @if skipped > 0 {
                p.muted { "The latest " (MAX_ROWS) " of " (attempts.len()) " attempts." }
            }
            svg.gantt xmlns="http://www.w3.org/2000/svg" width=(width) height=(height) viewBox={"0 0 " (width) " " (height)} role="img" aria-label="Attempts over time" {
                @for tick in 0..=4u64 {
                    @let at = Millis(from.0 + span * tick / 4);
                    line.tick x1=(x(at)) x2=(x(at)) y1=(AXIS_H - 4) y2=(height) {}
                    text.tick x=(x(at)) y="12" text-anchor=(if tick == 4 { "end" } else { "start" }) { "+" (elapsed(span * tick / 4)) }
                }
                @for (row, attempt) in shown.iter().enumerate() {
                    @let y = AXIS_H + row as u32 * ROW_H;
                    @let id = task_ids.get(attempt.task_idx as usize).map_or("?", String::as_str);
                    @let began = start(attempt);
                    @let ended = attempt.finished_at.unwrap_or(now).max(began);
                    @let outcome = outcome(attempt);
                    text.label x="4" y=(y + 13) { (short(id)) " #" (attempt.attempt) }
                    rect.attempt data-outcome=(outcome) x=(x(began)) y=(y + 2) width=((x(ended) - x(began)).max(2)) height=(ROW_H - 4) rx="2" {
                        title {
                            (id) " attempt " (attempt.attempt) ": " (outcome) ", " (elapsed(ended.0 - began.0))
                            @if let Some(worker) = &attempt.worker { " on " (worker) }
                        }
                    }
                }
            }
        }
    }
}

/// When the attempt's bar begins: its start, or when it was sent while no worker has it.
fn start(attempt: &AttemptRecord) -> Millis {
    attempt.started_at.unwrap_or(attempt.dispatched_at)
}

/// How the attempt ended, or where it is: `dispatched`, `running`, or its outcome.
pub(super) fn outcome(attempt: &AttemptRecord) -> &'static str {
    match (attempt.outcome, attempt.started_at) {
        (Some(outcome), _) => outcome.as_str(),
        (None, Some(_)) => "running",
        (None, None) => "dispatched",
    }
}

/// A duration for people: `850ms`, `12.3s`, `4m05s`, `2h03m`.
pub(super) fn elapsed(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{:02}s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}

fn short(id: &str) -> String {
    if id.chars().count() <= 24 {
        return id.to_string();
    }
    let mut short: String = id.chars().take(23).collect();
    short.push('…');
    short
}

#[cfg(test)]
mod tests {
    use taskfleet_common::state::AttemptOutcome;

    use super::*;

    fn attempt(task_idx: u32, n: u32, started: Option<u64>, finished: Option<u64>) -> AttemptRecord {
        let mut record = AttemptRecord::dispatched(task_idx, n, Millis(1_000));
        record.started_at = started.map(Millis);
        record.finished_at = finished.map(Millis);
        record.outcome = finished.map(|_| AttemptOutcome::Succeeded);
        record
    }

    #[test]
    fn each_attempt_is_a_bar_from_its_start_to_its_end_or_now() {
        let ids = vec!["extract".to_string(), "load".to_string()];
        let attempts = [
            attempt(0, 1, Some(1_000), Some(3_000)),
            attempt(1, 1, Some(3_000), None),
        ];
        let svg = chart(&attempts, &ids, Millis(1_000), Millis(5_000)).into_string();
        // 4 s on 900 px: extract runs the first half, load from the half to now.
        assert!(
            svg.contains(r#"data-outcome="succeeded" x="200" y="24" width="450""#),
            "{svg}"
        );
        assert!(
            svg.contains(r#"data-outcome="running" x="650" y="42" width="450""#),
            "{svg}"
        );
        assert!(svg.contains("extract #1") && svg.contains("load #1"), "{svg}");
        assert!(svg.contains("+4.0s"), "{svg}");
    }

    #[test]
    fn only_the_latest_attempts_are_drawn() {
        let ids = vec!["t".to_string()];
        let attempts: Vec<AttemptRecord> = (0..MAX_ROWS as u64 + 3)
            .map(|n| attempt(0, n as u32 + 1, Some(1_000 + n), Some(1_001 + n)))
            .collect();
        let svg = chart(&attempts, &ids, Millis(1_000), Millis(9_000)).into_string();
        assert_eq!(svg.matches("<rect ").count(), MAX_ROWS);
        assert!(svg.contains(&format!("The latest {MAX_ROWS} of {} attempts", MAX_ROWS + 3)));
        assert!(
            !svg.contains("t #1<") && !svg.contains("t #3<") && svg.contains("t #4<"),
            "{svg}"
        );
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(elapsed(850), "850ms");
        assert_eq!(elapsed(12_340), "12.3s");
        assert_eq!(elapsed(245_000), "4m05s");
        assert_eq!(elapsed(7_380_000), "2h03m");
    }
}
