//! Read-only drawing of an [`App`]: the layout here, one function per panel in the submodules.

mod ab;
mod executor;
mod header;
mod help;
mod holders;
mod key_line;
mod lock;
mod syscalls;
mod waiting;
mod waits;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Span;
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};

use crate::app::App;
use crate::timeline::Timeline;
use mountscope_common::snapshot::Snapshot;

/// Rows of the header above the panels.
const HEADER_ROWS: u16 = 3;
/// Rows of the executor and A/B row, title included. The executor's last error gets the last
/// two rows, so that the reason after a path fits at 120 columns.
const EXECUTOR_ROWS: u16 = 8;

/// Smallest terminal the dashboard fits. Below it, right-aligned figures would lose their
/// leading digits, so the screen shows a request for a larger terminal instead.
const MIN_COLUMNS: u16 = 80;
const MIN_ROWS: u16 = 20;

/// Draws the whole screen for the state in `app`.
pub fn draw(frame: &mut Frame, app: &App) {
    let area = frame.area();
    if area.width < MIN_COLUMNS || area.height < MIN_ROWS {
        let message = format!(
            "mountscope needs a terminal of at least {MIN_COLUMNS}x{MIN_ROWS}; this one is \
             {}x{}. Enlarge it, or press q to quit and use `mountscope record` (or `record --connect` \
             for an agent) for JSON Lines.",
            area.width, area.height
        );
        frame.render_widget(
            Paragraph::new(message)
                .style(warning())
                .wrap(Wrap { trim: true }),
            area,
        );
        return;
    }

    let [body, status, keys] = Layout::vertical([
        Constraint::Fill(1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());

    let has_executor = match app.snapshot() {
        None => {
            waiting::draw_waiting(frame, body);
            false
        }
        Some(snapshot) => {
            draw_dashboard(frame, body, snapshot, app.timeline());
            snapshot.executor.is_some()
        }
    };

    key_line::draw_status_line(frame, status, app.status());
    key_line::draw_key_line(frame, keys, has_executor);

    if app.help_shown() {
        help::draw_help(frame, frame.area());
    }
}

/// Rows from which the middle row shows holders and wait sites one above the other.
const MIDDLE_SPLIT_ROWS: u16 = 10;

/// Splits the area under the header: syscalls and lock on top, holders below, and the
/// executor row at the bottom when there is an executor. Extra rows go to the top and middle
/// rows at a ratio of 7 to 5, the split that fits both at 80x24.
fn draw_dashboard(frame: &mut Frame, area: Rect, snapshot: &Snapshot, timeline: &Timeline) {
    let [header_area, panels] =
        Layout::vertical([Constraint::Length(HEADER_ROWS), Constraint::Fill(1)]).areas(area);
    header::draw_header(frame, header_area, snapshot);

    let executor_rows = if snapshot.executor.is_some() {
        EXECUTOR_ROWS
    } else {
        0
    };
    let shared_rows = panels.height.saturating_sub(executor_rows);
    let top_rows = (shared_rows * 7).div_ceil(12);

    let [top, middle, bottom] = Layout::vertical([
        Constraint::Length(top_rows),
        Constraint::Fill(1),
        Constraint::Length(executor_rows),
    ])
    .areas(panels);

    let [syscalls_area, lock_area] = split_columns(top);
    syscalls::draw_syscalls(frame, syscalls_area, snapshot);
    lock::draw_lock(frame, lock_area, snapshot, timeline);

    // Holders by process and by cgroup above the wait sites when the middle row is tall
    // enough; otherwise holders by process beside the wait sites.
    if middle.height >= MIDDLE_SPLIT_ROWS {
        let [holders_area, waits_area] =
            Layout::vertical([Constraint::Fill(1), Constraint::Fill(1)]).areas(middle);
        holders::draw_holders(frame, holders_area, snapshot);
        waits::draw_wait_sites(frame, waits_area, snapshot);
    } else {
        let [holders_area, waits_area] =
            Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
                .spacing(1)
                .areas(middle);
        holders::draw_process_holders(frame, holders_area, snapshot);
        waits::draw_wait_sites(frame, waits_area, snapshot);
    }

    if let Some(executor) = &snapshot.executor {
        let [executor_area, ab_area] = split_columns(bottom);
        executor::draw_executor(frame, executor_area, executor);
        ab::draw_ab(frame, ab_area, executor);
    }
}

/// Splits a row 60/40 with one blank column between, the widths at which the syscall table
/// and the side panels fit at 80 columns.
fn split_columns(area: Rect) -> [Rect; 2] {
    Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)])
        .spacing(1)
        .areas(area)
}

/// Builds a panel frame: a rule along the top carrying the title and no side borders, so
/// narrow terminals keep every column for figures.
fn panel(title: Span<'_>) -> Block<'_> {
    Block::new()
        .borders(Borders::TOP)
        .border_style(Style::new().fg(Color::DarkGray))
        .title(title.style(Style::new().add_modifier(Modifier::BOLD)))
}

/// Style of a figure that needs attention, such as drops or errors.
fn warning() -> Style {
    Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD)
}

/// Style of labels next to figures.
fn label() -> Style {
    Style::new().fg(Color::Gray)
}
