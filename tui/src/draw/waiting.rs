//! The screen shown until the agent publishes its first snapshot.

use ratatui::Frame;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::Modifier;
use ratatui::text::Line;
use ratatui::widgets::Paragraph;

use super::label;

/// Draws the waiting message centred in `area`.
pub(super) fn draw_waiting(frame: &mut Frame, area: Rect) {
    let lines = vec![
        Line::styled("mountscope", label().add_modifier(Modifier::BOLD)),
        Line::default(),
        Line::from("waiting for first snapshot…"),
        Line::styled("the agent publishes one per interval", label()),
    ];

    let rows = u16::try_from(lines.len()).unwrap_or(u16::MAX);
    let [centre] = Layout::vertical([Constraint::Length(rows)])
        .flex(Flex::Center)
        .areas(area);
    frame.render_widget(Paragraph::new(lines).centered(), centre);
}
