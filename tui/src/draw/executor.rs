//! The executor panel: settings and build throughput of the overlay executor.

use mountscope_common::snapshot::ExecutorStatus;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};

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
    let paragraph = Paragraph::new(lines)
        .block(panel(title))
        .wrap(Wrap { trim: false });
    frame.render_widget(paragraph, area);
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
        spans.push(Span::styled(" unmount retries", label()));
    }
    Line::from(spans)
}

fn error_line(executor: &ExecutorStatus) -> Line<'static> {
    match &executor.last_error {
        Some(error) => Line::from(vec![
            Span::styled("last error ", label()),
            Span::styled(shorten_paths(error), Style::new().fg(Color::Red)),
        ]),
        None => Line::default(),
    }
}

/// Shortens each absolute path quoted in backticks to its last two components, so that the
/// reason after the path fits the panel. The log and the JSON keep the whole message.
fn shorten_paths(message: &str) -> String {
    let mut shortened = String::with_capacity(message.len());
    for (index, part) in message.split('`').enumerate() {
        if index > 0 {
            shortened.push('`');
        }
        let components: Vec<&str> = part.split('/').collect();
        let quoted = index % 2 == 1;
        if quoted && part.starts_with('/') && components.len() > 3 {
            shortened.push('…');
            for component in &components[components.len() - 2..] {
                shortened.push('/');
                shortened.push_str(component);
            }
        } else {
            shortened.push_str(part);
        }
    }
    shortened
}

#[cfg(test)]
mod tests {
    use super::shorten_paths;

    #[test]
    fn long_quoted_path_keeps_last_two_components() {
        assert_eq!(
            shorten_paths("umount2(overlay) failed on `/tmp/s/run/1-0/000/c/merged`: busy"),
            "umount2(overlay) failed on `…/c/merged`: busy"
        );
    }

    #[test]
    fn short_quoted_path_unchanged() {
        assert_eq!(
            shorten_paths("failed on `/a/b`: busy"),
            "failed on `/a/b`: busy"
        );
    }

    #[test]
    fn unquoted_path_unchanged() {
        assert_eq!(
            shorten_paths("failed on /a/b/c/d: busy"),
            "failed on /a/b/c/d: busy"
        );
    }
}
