//! The executor panel: settings and build throughput of the overlay executor.

use mountscope_common::snapshot::ExecutorStatus;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::{label, panel, warning};
use crate::format;

/// Draws the executor's settings, then its figures over the last interval.
pub(super) fn draw_executor(frame: &mut Frame, area: Rect, executor: &ExecutorStatus) {
    let settings = &executor.settings;
    let title = if settings.paused {
        Span::styled(" executor (paused) ", warning())
    } else {
        Span::raw(" executor ")
    };
    let current = &executor.current;
    let on_off = |enabled: bool| if enabled { "on" } else { "off" };

    let lines = vec![
        Line::from(vec![
            Span::styled("strategy ", label()),
            Span::raw(settings.strategy.label()),
            Span::styled("  mount API ", label()),
            Span::raw(settings.mount_api.label()),
        ]),
        Line::from(vec![
            Span::styled("layers ", label()),
            Span::raw(settings.layers.to_string()),
            Span::styled("  builders ", label()),
            Span::raw(settings.builders.to_string()),
            Span::styled("  idmap ", label()),
            Span::raw(on_off(settings.idmap)),
        ]),
        Line::from(vec![
            Span::styled("builds ", label()),
            Span::raw(format!("{}/s", format::rate(current.builds_per_s))),
            Span::styled("  p50 ", label()),
            Span::raw(format::latency_ns(current.build_p50_ns, executor.builds)),
            Span::styled("  p99 ", label()),
            Span::raw(format::latency_ns(current.build_p99_ns, executor.builds)),
        ]),
        Line::from(vec![
            Span::styled("mount syscalls/build ", label()),
            Span::raw(format!("{:.1}", current.syscalls_per_build)),
            Span::styled("  waits/build ", label()),
            Span::raw(format!("{:.1}", current.waits_per_build)),
        ]),
        totals_line(executor),
        error_line(executor),
    ];
    frame.render_widget(Paragraph::new(lines).block(panel(title)), area);
}

fn totals_line(executor: &ExecutorStatus) -> Line<'static> {
    let failures_style = if executor.failures_total > 0 {
        Style::new().fg(Color::Red)
    } else {
        Style::new()
    };
    let mut spans = vec![
        Span::raw(executor.builds_total.to_string()),
        Span::styled(" builds, ", label()),
        Span::styled(executor.failures_total.to_string(), failures_style),
        Span::styled(" failed", label()),
    ];
    if executor.unmount_busy_retries > 0 {
        spans.push(Span::styled(", ", label()));
        spans.push(Span::raw(executor.unmount_busy_retries.to_string()));
        spans.push(Span::styled(" busy unmounts retried", label()));
    }
    Line::from(spans)
}

fn error_line(executor: &ExecutorStatus) -> Line<'static> {
    match &executor.last_error {
        Some(error) => Line::from(vec![
            Span::styled("last error ", label()),
            Span::styled(error.clone(), Style::new().fg(Color::Red)),
        ]),
        None => Line::default(),
    }
}
