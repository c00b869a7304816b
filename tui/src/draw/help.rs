//! The help popup: every binding of the key table with its description.

use ratatui::Frame;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};

use super::label;
use crate::keys::KEY_BINDINGS;

/// Columns of the popup, borders included.
const HELP_COLUMNS: u16 = 64;

/// Draws the help popup centred over `area`.
pub(super) fn draw_help(frame: &mut Frame, area: Rect) {
    let mut lines: Vec<Line> = KEY_BINDINGS
        .iter()
        .map(|binding| {
            Line::from(vec![
                Span::styled(
                    format!(" {:<7}", binding.key),
                    Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
                ),
                Span::raw(binding.description),
            ])
        })
        .collect();
    lines.push(Line::default());
    lines.push(Line::styled(
        " Executor keys do nothing with --no-exec. Changes apply when",
        label(),
    ));
    lines.push(Line::styled(
        " each builder starts its next container.",
        label(),
    ));

    let rows = u16::try_from(lines.len() + 2).unwrap_or(u16::MAX);
    let [popup] = Layout::horizontal([Constraint::Length(HELP_COLUMNS)])
        .flex(Flex::Center)
        .areas(area);
    let [popup] = Layout::vertical([Constraint::Length(rows)])
        .flex(Flex::Center)
        .areas(popup);

    frame.render_widget(Clear, popup);
    let block = Block::bordered().title(" keys ");
    frame.render_widget(Paragraph::new(lines).block(block), popup);
}
