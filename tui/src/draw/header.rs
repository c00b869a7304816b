//! The header: kernel, measurement tier and reason, `namespace_sem` address, uptime, drops.

use mountscope_common::snapshot::{AddressSource, Snapshot, TierKind};
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
        tier_line(snapshot, usize::from(area.width)),
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

/// Builds `tier LABEL: REASON` to fit `width` columns. When the full line is too wide, the
/// label becomes its short form, and a reason that still does not fit is cut after its last
/// whole word with `…`, so a truncation is always visible. The log has the full reason.
fn tier_line(snapshot: &Snapshot, width: usize) -> Line<'_> {
    let tier = &snapshot.tier;
    let kind_style = if tier.kind.hold_is_estimate() {
        Style::new().fg(Color::Yellow)
    } else {
        Style::new().fg(Color::Green)
    };

    let prefix = |kind_label: &'static str| {
        vec![
            Span::styled("tier ", label()),
            Span::styled(kind_label, kind_style),
            Span::styled(": ", label()),
        ]
    };

    let mut spans = prefix(tier.kind.label());
    spans.push(Span::raw(tier.reason.as_str()));
    let full = Line::from(spans);
    if full.width() <= width {
        return full;
    }

    let mut spans = prefix(short_tier_label(tier.kind));
    let used: usize = spans.iter().map(Span::width).sum();
    let reason = cut_at_word(&tier.reason, width.saturating_sub(used));
    spans.push(Span::raw(reason));
    Line::from(spans)
}

/// Short form of [`TierKind::label`] for narrow terminals.
fn short_tier_label(kind: TierKind) -> &'static str {
    match kind {
        TierKind::ExactFentry => "exact (fentry)",
        TierKind::ExactKprobe => "exact (kprobe)",
        TierKind::ContentionEstimate => "hold estimate",
        TierKind::ContentionOnly => "no hold time",
        TierKind::SyscallsOnly => "syscalls only",
    }
}

/// Returns the longest run of whole words of `text` that fits `width` columns with `…`
/// appended, or all of `text` when it fits.
fn cut_at_word(text: &str, width: usize) -> String {
    if Span::raw(text).width() <= width {
        return text.to_string();
    }

    let mut kept = String::new();
    for word in text.split(' ') {
        let candidate = if kept.is_empty() {
            word.to_string()
        } else {
            format!("{kept} {word}")
        };
        if Span::raw(format!("{candidate}…")).width() > width {
            break;
        }
        kept = candidate;
    }
    format!("{kept}…")
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
