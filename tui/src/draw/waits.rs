//! The "what mounts wait on" panel: the places where mount syscalls spent their latency,
//! as a share of that syscall's total latency since start or the last reset.

use mountscope_common::snapshot::{Snapshot, WaitSite};
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};

use super::{label, panel};
use crate::format;

/// Panel width from which the p99 column shows; below it the site names need the room.
const P99_COLUMN_FROM: u16 = 50;

/// Draws the top wait sites, largest total first.
pub(super) fn draw_wait_sites(frame: &mut Frame, area: Rect, snapshot: &Snapshot) {
    let block = panel(Span::raw(" what mounts wait on "));
    if snapshot.wait_sites.is_empty() {
        let message = if snapshot.wait_sites_recorded {
            "no waits inside mount syscalls yet"
        } else {
            "not recorded: start with --wait-sites"
        };
        let text = Paragraph::new(Line::styled(message, label()));
        frame.render_widget(text.block(block), area);
        return;
    }

    let with_p99 = area.width >= P99_COLUMN_FROM;
    let mut titles = vec!["site", "in", "%"];
    let mut widths = vec![
        Constraint::Fill(1),
        Constraint::Length(7),
        Constraint::Length(4),
    ];
    if with_p99 {
        titles.push("p99");
        widths.push(Constraint::Length(7));
    }
    let header = Row::new(titles).style(label().add_modifier(Modifier::UNDERLINED));
    let rows = snapshot.wait_sites.iter().map(|site| row(site, with_p99));
    let table = Table::new(rows, widths).header(header).block(block);
    frame.render_widget(table, area);
}

fn row(site: &WaitSite, with_p99: bool) -> Row<'static> {
    let mut cells = vec![
        Cell::from(site.name.clone()),
        Cell::from(site.syscall.name()),
        Cell::from(format!("{:.0}%", site.share * 100.0)),
    ];
    if with_p99 {
        cells.push(Cell::from(format::duration_ns(site.p99_ns)));
    }
    Row::new(cells)
}
