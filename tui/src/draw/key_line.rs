//! The two bottom lines: the status message and the key line built from the key table.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::keys::{Action, KEY_BINDINGS};

/// Draws the status message, if one is current.
pub(super) fn draw_status_line(frame: &mut Frame, area: Rect, status: Option<&str>) {
    let Some(status) = status else {
        return;
    };
    let line = Line::styled(status.to_string(), Style::new().fg(Color::Cyan));
    frame.render_widget(Paragraph::new(line), area);
}

/// Draws `s A/B  +- builders …` from [`KEY_BINDINGS`], leaving out executor keys when there
/// is no executor.
///
/// Neighbouring bindings with the same label share one entry. Entries are separated by two
/// spaces when all fit, else by one, and when even that is too wide the entries before help
/// and quit are cut from the right, so `?` always shows how to see them all.
pub(super) fn draw_key_line(frame: &mut Frame, area: Rect, has_executor: bool) {
    let entries = key_entries(has_executor);
    let width = usize::from(area.width);

    let widths: Vec<usize> = entries.iter().map(KeyEntry::width).collect();
    let total: usize = widths.iter().sum();
    let gaps = entries.len().saturating_sub(1);
    let separator = if total + 2 * gaps <= width { "  " } else { " " };

    let shown = fit_entries(&entries, &widths, width, separator.len());
    let mut spans = Vec::new();
    for (position, entry) in shown.into_iter().enumerate() {
        if position > 0 {
            spans.push(Span::raw(separator));
        }
        spans.push(Span::styled(
            entry.keys.clone(),
            Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
        ));
        spans.push(Span::raw(format!(" {}", entry.label)));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// One entry of the key line: one key, or neighbouring keys that share a label.
struct KeyEntry {
    keys: String,
    label: &'static str,
    always_shown: bool,
}

impl KeyEntry {
    fn width(&self) -> usize {
        self.keys.chars().count() + 1 + self.label.chars().count()
    }
}

fn key_entries(has_executor: bool) -> Vec<KeyEntry> {
    let mut entries: Vec<KeyEntry> = Vec::new();

    for binding in KEY_BINDINGS {
        if binding.action.needs_executor() && !has_executor {
            continue;
        }
        if let Some(previous) = entries.last_mut()
            && previous.label == binding.label
        {
            previous.keys.push(binding.key);
            continue;
        }
        entries.push(KeyEntry {
            keys: binding.key.to_string(),
            label: binding.label,
            always_shown: matches!(binding.action, Action::ToggleHelp | Action::Quit),
        });
    }
    entries
}

/// Picks entries in order until the width is spent, keeping room for those always shown.
fn fit_entries<'a>(
    entries: &'a [KeyEntry],
    widths: &[usize],
    width: usize,
    separator: usize,
) -> Vec<&'a KeyEntry> {
    let reserved: usize = entries
        .iter()
        .zip(widths)
        .filter(|(entry, _)| entry.always_shown)
        .map(|(_, entry_width)| entry_width + separator)
        .sum();

    let mut used = 0;
    let mut shown = Vec::new();
    for (entry, entry_width) in entries.iter().zip(widths) {
        if entry.always_shown {
            shown.push(entry);
            continue;
        }
        if used + entry_width + separator + reserved <= width + separator {
            used += entry_width + separator;
            shown.push(entry);
        }
    }
    shown
}
