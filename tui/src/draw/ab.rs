//! The A/B panel: the last steady figures of strategy A and strategy B side by side, with
//! the B/A ratio of each.

use mountscope_common::snapshot::{ExecutorStatus, Strategy, StrategyFigures};
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};

use super::{label, panel};
use crate::format;

/// Draws one row per figure with columns A, B and B/A. The running strategy's column header
/// is shown in reverse video.
pub(super) fn draw_ab(frame: &mut Frame, area: Rect, executor: &ExecutorStatus) {
    let block = panel(Span::raw(" A/B "));
    let (a, b) = (executor.last_a.as_ref(), executor.last_b.as_ref());

    if a.is_none() && b.is_none() {
        let text = vec![
            Line::styled("no steady figures yet;", label()),
            Line::styled("press s to switch strategy", label()),
        ];
        frame.render_widget(Paragraph::new(text).block(block), area);
        return;
    }

    type Figure = fn(&StrategyFigures) -> f64;
    type Show = fn(f64) -> String;
    let figures: [(&str, Figure, Show); 5] = [
        ("builds/s", |f| f.builds_per_s, format::rate),
        ("build p50", |f| f.build_p50_ns as f64, show_ns),
        ("build p99", |f| f.build_p99_ns as f64, show_ns),
        (
            "syscalls/b",
            |f| f.syscalls_per_build,
            |v| format!("{v:.1}"),
        ),
        ("waits/b", |f| f.waits_per_build, |v| format!("{v:.1}")),
    ];

    let rows = figures.into_iter().map(|(name, figure, show)| {
        let a_value = a.map(figure);
        let b_value = b.map(figure);
        let ratio = match (a_value, b_value) {
            (Some(a_value), Some(b_value)) => format::ratio(b_value, a_value),
            _ => "-".to_string(),
        };
        Row::new([
            Cell::from(Span::styled(name, label())),
            right(a_value.map_or_else(|| "-".to_string(), show)),
            right(b_value.map_or_else(|| "-".to_string(), show)),
            right(ratio),
        ])
    });

    let running = executor.settings.strategy;
    let header = Row::new([
        Cell::from(""),
        strategy_header(Strategy::PerLayer, running),
        strategy_header(Strategy::CommonParent, running),
        right("B/A".to_string()),
    ])
    .style(label().add_modifier(Modifier::UNDERLINED));

    let widths = [
        Constraint::Min(10),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(5),
    ];
    let table = Table::new(rows, widths)
        .header(header)
        .column_spacing(1)
        .block(block);
    frame.render_widget(table, area);
}

fn strategy_header(strategy: Strategy, running: Strategy) -> Cell<'static> {
    let line = Line::from(strategy.letter()).right_aligned();
    if strategy == running {
        Cell::from(line.style(ratatui::style::Style::new().add_modifier(Modifier::REVERSED)))
    } else {
        Cell::from(line)
    }
}

fn show_ns(ns: f64) -> String {
    format::duration_ns(ns as u64)
}

fn right(text: String) -> Cell<'static> {
    Cell::from(Line::from(text).right_aligned())
}
