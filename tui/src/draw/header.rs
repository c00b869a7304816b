//! The header: kernel, measurement tier and reason, `namespace_sem` address, uptime, drops.

use mountscope_common::snapshot::{AddressSource, Snapshot};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::{label, warning};
use crate::format;

/// Draws the three header lines.
pub(super) fn draw_header(frame: &mut Frame, area: Rect, snapshot: &Snapshot) {
    let lines = vec![
        summary_line(snapshot),
        tier_line(snapshot),
        address_line(snapshot),
    ];
    frame.render_widget(Paragraph::new(lines), area);
}

fn summary_line(snapshot: &Snapshot) -> Line<'_> {
    let drops = snapshot.drops.total();
    let drops_total = snapshot.drops_total.total();
    let drops_style = if drops > 0 || drops_total > 0 {
        warning()
    } else {
        Style::new()
    };

    Line::from(vec![
        Span::styled("mountscope", Style::new().add_modifier(Modifier::BOLD)),
        Span::styled("  kernel ", label()),
        Span::raw(snapshot.kernel.as_str()),
        Span::styled("  up ", label()),
        Span::raw(format::uptime_ms(snapshot.uptime_ms)),
        Span::styled("  dropped ", label()),
        Span::styled(format!("{drops} ({drops_total} total)"), drops_style),
    ])
}

fn tier_line(snapshot: &Snapshot) -> Line<'_> {
    let tier = &snapshot.tier;
    let kind_style = if tier.kind.hold_is_estimate() {
        Style::new().fg(Color::Yellow)
    } else {
        Style::new().fg(Color::Green)
    };

    Line::from(vec![
        Span::styled("tier ", label()),
        Span::styled(tier.kind.label(), kind_style),
        Span::styled(": ", label()),
        Span::raw(tier.reason.as_str()),
    ])
}

fn address_line(snapshot: &Snapshot) -> Line<'_> {
    let Some(address) = &snapshot.lock_address else {
        return Line::from(vec![
            Span::styled("namespace_sem ", label()),
            Span::styled("address not found: no lock figures", warning()),
        ]);
    };

    let source = match address.source {
        AddressSource::Kallsyms => "from /proc/kallsyms",
        AddressSource::Calibration => "found by calibration",
    };
    Line::from(vec![
        Span::styled("namespace_sem ", label()),
        Span::raw(address.address.as_str()),
        Span::styled(format!(" ({source})"), label()),
    ])
}
