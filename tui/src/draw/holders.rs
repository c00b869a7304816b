//! The "who holds it" panel: holders of `namespace_sem` by process and by cgroup, with the
//! syscall they were in, ranked by the wait time they caused.

use mountscope_common::snapshot::{HolderFigures, Snapshot};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};

use super::{label, panel};
use crate::format;

/// Table width from which the count of waits shows next to their total time.
const WAITS_COLUMN_FROM: u16 = 50;

/// Draws holders by process on the left and by cgroup on the right.
pub(super) fn draw_holders(frame: &mut Frame, area: Rect, snapshot: &Snapshot) {
    let [process_area, cgroup_area] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
            .spacing(1)
            .areas(area);

    draw_holder_table(
        frame,
        process_area,
        " who holds it: by process ",
        "process",
        &snapshot.holders_by_process,
        process_name,
    );
    draw_holder_table(
        frame,
        cgroup_area,
        " by cgroup ",
        "cgroup",
        &snapshot.holders_by_cgroup,
        cgroup_name,
    );
}

/// Draws only the holders by process, for narrow middle rows.
pub(super) fn draw_process_holders(frame: &mut Frame, area: Rect, snapshot: &Snapshot) {
    draw_holder_table(
        frame,
        area,
        " who holds it: by process ",
        "process",
        &snapshot.holders_by_process,
        process_name,
    );
}

fn draw_holder_table(
    frame: &mut Frame,
    area: Rect,
    title: &'static str,
    holder_column: &'static str,
    holders: &[HolderFigures],
    name: fn(&HolderFigures) -> String,
) {
    let block = panel(Span::raw(title));

    if holders.is_empty() {
        let text = Paragraph::new(Line::styled("no contention in the last interval", label()));
        frame.render_widget(text.block(block), area);
        return;
    }

    let mut ranked: Vec<&HolderFigures> = holders.iter().collect();
    ranked.sort_by_key(|holder| std::cmp::Reverse(holder.wait_ns));

    // Below this width the waits column goes, so the holder name keeps about 18 columns.
    let with_waits = area.width >= WAITS_COLUMN_FROM;
    let rows = ranked.into_iter().map(|holder| {
        let mut cells = vec![
            Cell::from(name(holder)),
            Cell::from(holder.syscall.map_or("-", |s| s.name())),
        ];
        if with_waits {
            cells.push(right(holder.waits.to_string()));
        }
        cells.push(right(format::duration_ns(holder.wait_ns)));
        Row::new(cells)
    });

    let mut titles = vec![Cell::from(holder_column), Cell::from("in syscall")];
    let mut widths = vec![Constraint::Min(8), Constraint::Length(14)];
    if with_waits {
        titles.push(right("waits".to_string()));
        widths.push(Constraint::Length(5));
    }
    titles.push(right("wait".to_string()));
    widths.push(Constraint::Length(6));

    let header = Row::new(titles).style(label().add_modifier(Modifier::UNDERLINED));
    let table = Table::new(rows, widths)
        .header(header)
        .column_spacing(1)
        .block(block);
    frame.render_widget(table, area);
}

/// `comm[pid]`, or the holder's key when the agent has no command name.
fn process_name(holder: &HolderFigures) -> String {
    match (&holder.comm, holder.pid) {
        (Some(comm), Some(pid)) => format!("{comm}[{pid}]"),
        (Some(comm), None) => comm.clone(),
        _ => holder.key.clone(),
    }
}

fn cgroup_name(holder: &HolderFigures) -> String {
    holder
        .cgroup_id
        .map_or_else(|| holder.key.clone(), |id| id.to_string())
}

fn right(text: String) -> Cell<'static> {
    Cell::from(Line::from(text).right_aligned())
}
