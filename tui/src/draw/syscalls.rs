//! The mount syscalls table: rate, errors and latency of each mount-family syscall.

use mountscope_common::snapshot::{Snapshot, SyscallFigures};
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};

use super::{label, panel};
use crate::format;

/// Width from which the table adds the totals since start or reset.
const WIDE_COLUMNS: u16 = 70;

/// Draws the syscalls seen since start or reset, busiest first.
pub(super) fn draw_syscalls(frame: &mut Frame, area: Rect, snapshot: &Snapshot) {
    let mut seen: Vec<&SyscallFigures> = snapshot
        .syscalls
        .iter()
        .filter(|s| s.calls_total > 0)
        .collect();
    seen.sort_by(|a, b| b.rate_per_s.total_cmp(&a.rate_per_s));

    // One row for the title rule and one for the column header.
    let fitting = usize::from(area.height.saturating_sub(2));
    let hidden = seen.len().saturating_sub(fitting);
    let method = snapshot.syscall_probes.short_label();
    let title = if hidden > 0 {
        format!(" mount syscalls ({method}, {hidden} more not shown) ")
    } else {
        format!(" mount syscalls ({method}) ")
    };
    let block = panel(Span::raw(title));

    if seen.is_empty() {
        let text = Paragraph::new(Line::styled("no mount syscalls seen yet", label()));
        frame.render_widget(text.block(block), area);
        return;
    }

    let wide = area.width >= WIDE_COLUMNS;
    let rows = seen.iter().take(fitting).map(|s| syscall_row(s, wide));
    let table = Table::new(rows, column_widths(wide))
        .header(header_row(wide))
        .column_spacing(1)
        .block(block);
    frame.render_widget(table, area);
}

fn column_widths(wide: bool) -> Vec<Constraint> {
    let mut widths = vec![
        Constraint::Min(10),
        Constraint::Length(7),
        Constraint::Length(4),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(6),
    ];
    if wide {
        widths.extend([Constraint::Length(9), Constraint::Length(7)]);
    }
    widths
}

fn header_row(wide: bool) -> Row<'static> {
    let mut titles = vec!["syscall", "calls/s", "err", "p50", "p99", "max"];
    if wide {
        titles.extend(["calls", "errors"]);
    }

    let cells = titles.into_iter().enumerate().map(|(column, title)| {
        if column == 0 {
            Cell::from(title)
        } else {
            Cell::from(Line::from(title).right_aligned())
        }
    });
    Row::new(cells).style(label().add_modifier(Modifier::UNDERLINED))
}

fn syscall_row(figures: &SyscallFigures, wide: bool) -> Row<'static> {
    let latency = &figures.latency;
    let errors_style = if figures.errors > 0 {
        Style::new().fg(Color::Red)
    } else {
        Style::new()
    };

    let mut cells = vec![
        Cell::from(figures.syscall.name()),
        right(format::rate(figures.rate_per_s)),
        right(figures.errors.to_string()).style(errors_style),
        right(format::latency_ns(latency.p50_ns, figures.calls)),
        right(format::latency_ns(latency.p99_ns, figures.calls)),
        right(format::latency_ns(latency.max_ns, figures.calls)),
    ];
    if wide {
        cells.push(right(figures.calls_total.to_string()));
        cells.push(right(figures.errors_total.to_string()));
    }
    Row::new(cells)
}

fn right(text: String) -> Cell<'static> {
    Cell::from(Line::from(text).right_aligned())
}
