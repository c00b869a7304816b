//! The `namespace_sem` panel: waits, wait and hold latency, share of time held for write, and
//! the last minute as sparklines.

use mountscope_common::LockMode;
use mountscope_common::snapshot::{LockFigures, Snapshot, TierKind};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Sparkline};

use super::{label, panel, warning};
use crate::format;
use crate::timeline::{Timeline, per_second};

/// Columns taken by a sparkline's label.
const SPARKLINE_LABEL_COLUMNS: u16 = 6;

/// Draws the lock figures, then the timeline in the rows left over.
pub(super) fn draw_lock(frame: &mut Frame, area: Rect, snapshot: &Snapshot, timeline: &Timeline) {
    let estimate = snapshot.tier.kind.hold_is_estimate();
    let title = if estimate {
        " namespace_sem (hold estimate) "
    } else {
        " namespace_sem "
    };
    let block = panel(Span::raw(title));
    let inner = block.inner(area);
    frame.render_widget(block, area);

    if let Some(reason) = missing_figures(snapshot) {
        frame.render_widget(Paragraph::new(Line::styled(reason, warning())), inner);
        return;
    }

    let lines = figure_lines(snapshot);
    let figure_rows = u16::try_from(lines.len()).unwrap_or(u16::MAX);
    let [figures_area, timeline_area] =
        Layout::vertical([Constraint::Length(figure_rows), Constraint::Fill(1)]).areas(inner);
    frame.render_widget(Paragraph::new(lines), figures_area);

    draw_timeline(
        frame,
        timeline_area,
        timeline,
        snapshot.tier.kind.measures_hold().then_some(estimate),
    );
}

/// Returns why the snapshot has no lock figures, or `None` when it has them.
fn missing_figures(snapshot: &Snapshot) -> Option<&'static str> {
    if snapshot.tier.kind == TierKind::SyscallsOnly {
        return Some("no lock figures at this tier");
    }
    if snapshot.lock_address.is_none() {
        return Some("no lock figures: address not found");
    }
    None
}

fn figure_lines(snapshot: &Snapshot) -> Vec<Line<'static>> {
    let waits_per_s: f64 = snapshot.lock_waits.iter().map(|w| w.rate_per_s).sum();
    let mut lines = vec![Line::from(vec![
        Span::styled("waits ", label()),
        Span::raw(format!("{}/s", format::rate(waits_per_s))),
    ])];

    for waits in &snapshot.lock_waits {
        lines.push(latency_line(waits, "wait"));
    }

    if !snapshot.tier.kind.measures_hold() {
        lines.push(Line::styled("hold time not measured", warning()));
        return lines;
    }
    match &snapshot.hold_estimate {
        Some(estimate) if snapshot.tier.kind.hold_is_estimate() => {
            let hold_per_s = per_second(estimate.hold_ns, snapshot.interval_ms);
            lines.push(Line::from(vec![
                Span::styled("write hold ", label()),
                Span::raw(format!("≈{}/s ", format::duration_ns(hold_per_s))),
                estimate_word(),
            ]));
            lines.push(held_line(estimate.share_held, true));
        }
        _ => {
            for holds in &snapshot.lock_holds {
                lines.push(latency_line(holds, "hold"));
            }
            lines.push(held_line(exact_share_held(snapshot), false));
        }
    }
    lines
}

/// Formats a line such as `write wait p50 4.1µs p99 65µs`.
fn latency_line(figures: &LockFigures, what: &str) -> Line<'static> {
    let latency = &figures.latency;
    Line::from(vec![
        Span::styled(format!("{} {what} ", figures.mode.name()), label()),
        Span::styled("p50 ", label()),
        Span::raw(format::latency_ns(latency.p50_ns, figures.count)),
        Span::styled(" p99 ", label()),
        Span::raw(format::latency_ns(latency.p99_ns, figures.count)),
    ])
}

fn held_line(share: f64, estimate: bool) -> Line<'static> {
    let mut spans = vec![
        Span::styled("held for write ", label()),
        Span::raw(format::percent(share)),
    ];
    if estimate {
        spans.push(Span::raw(" "));
        spans.push(estimate_word());
    }
    Line::from(spans)
}

/// Returns the word that every estimated figure carries.
fn estimate_word() -> Span<'static> {
    Span::styled("estimate", Style::new().fg(Color::Yellow))
}

/// Share of the interval during which the lock was held for write, from exact holds.
fn exact_share_held(snapshot: &Snapshot) -> f64 {
    let interval_ns = snapshot.interval_ms as f64 * 1e6;
    if interval_ns == 0.0 {
        return 0.0;
    }
    let held_ns: u64 = snapshot
        .lock_holds
        .iter()
        .filter(|h| h.mode == LockMode::Write)
        .map(|h| h.total_ns)
        .sum();
    (held_ns as f64 / interval_ns).min(1.0)
}

/// Draws waits per second, and below it write-hold time per second when two or more rows
/// are left, each labelled in its first row. `hold` is `None` at tiers without hold times, and
/// otherwise whether they are estimates.
fn draw_timeline(frame: &mut Frame, area: Rect, timeline: &Timeline, hold: Option<bool>) {
    if area.height == 0 {
        return;
    }

    // The sparkline draws its first points from the left edge, so it gets only the newest
    // points that fit.
    let points = usize::from(area.width.saturating_sub(SPARKLINE_LABEL_COLUMNS));
    let Some(estimate) = hold.filter(|_| area.height > 1) else {
        draw_sparkline(frame, area, "waits", &timeline.waits_series(points));
        return;
    };

    let hold_label = if estimate { "hold≈" } else { "hold" };
    let [waits_area, hold_area] =
        Layout::vertical([Constraint::Fill(1), Constraint::Fill(1)]).areas(area);
    draw_sparkline(frame, waits_area, "waits", &timeline.waits_series(points));
    draw_sparkline(frame, hold_area, hold_label, &timeline.hold_series(points));
}

fn draw_sparkline(frame: &mut Frame, area: Rect, name: &str, series: &[u64]) {
    let [label_area, chart_area] = Layout::horizontal([
        Constraint::Length(SPARKLINE_LABEL_COLUMNS),
        Constraint::Fill(1),
    ])
    .areas(area);

    frame.render_widget(
        Paragraph::new(Span::styled(name.to_string(), label())),
        label_area,
    );
    let sparkline = Sparkline::default()
        .data(series)
        .style(Style::new().fg(Color::Cyan));
    frame.render_widget(sparkline, chart_area);
}
