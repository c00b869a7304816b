//! Frames drawn on ratatui's test backend from fixed snapshots, compared to the golden files
//! under tests/snapshots, and checks of what each tier shows.

mod common;

use common::{
    app_with, assert_golden, contention_only, empty, estimate_with_executor, exact_no_executor,
    exact_with_executor, minute_ending_with, render,
};
use mountscope_tui::{App, Event};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

const SMALL: (u16, u16) = (80, 24);
const LARGE: (u16, u16) = (120, 40);

fn golden(name: &str, app: &App) {
    for (columns, rows) in [SMALL, LARGE] {
        let text = render(app, columns, rows);
        assert_golden(&format!("{name}_{columns}x{rows}"), &text);
    }
}

#[test]
fn waiting_screen_golden() {
    golden("waiting", &App::new());
}

#[test]
fn estimate_with_executor_golden() {
    let app = app_with(&minute_ending_with(&estimate_with_executor()));
    golden("estimate_executor", &app);
}

#[test]
fn exact_no_executor_golden() {
    let app = app_with(&minute_ending_with(&exact_no_executor()));
    golden("exact_no_exec", &app);
}

#[test]
fn exact_paused_executor_golden() {
    let app = app_with(&[exact_with_executor()]);
    golden("exact_paused_executor", &app);
}

#[test]
fn contention_only_golden() {
    let app = app_with(&minute_ending_with(&contention_only()));
    golden("contention_only", &app);
}

#[test]
fn contention_only_says_hold_not_measured() {
    let app = app_with(&[contention_only()]);
    let text = render(&app, SMALL.0, SMALL.1);
    assert!(text.contains("hold time not measured"), "{text}");
}

#[test]
fn contention_only_shows_no_held_share() {
    let app = app_with(&[contention_only()]);
    let text = render(&app, LARGE.0, LARGE.1);
    assert!(!text.contains("held for write"), "{text}");
}

#[test]
fn syscalls_only_golden() {
    let app = app_with(&[empty()]);
    golden("syscalls_only", &app);
}

#[test]
fn help_popup_golden() {
    let mut app = app_with(&[estimate_with_executor()]);
    app.update(Event::Key(KeyEvent::new(
        KeyCode::Char('?'),
        KeyModifiers::NONE,
    )));
    golden("help", &app);
}

#[test]
fn waiting_screen_says_waiting() {
    let text = render(&App::new(), SMALL.0, SMALL.1);
    assert!(text.contains("waiting for first snapshot"), "{text}");
}

#[test]
fn estimate_tier_shows_estimate() {
    let app = app_with(&[estimate_with_executor()]);
    for (columns, rows) in [SMALL, LARGE] {
        let text = render(&app, columns, rows);
        assert!(text.contains("estimate"), "{columns}x{rows}:\n{text}");
    }
}

#[test]
fn estimate_tier_marks_held_share() {
    let app = app_with(&[estimate_with_executor()]);
    let text = render(&app, SMALL.0, SMALL.1);
    assert!(text.contains("held for write 12.3% estimate"), "{text}");
}

#[test]
fn estimate_tier_marks_hold_time() {
    let app = app_with(&[estimate_with_executor()]);
    let text = render(&app, SMALL.0, SMALL.1);
    assert!(text.contains("write hold ≈123ms/s estimate"), "{text}");
}

#[test]
fn exact_tier_never_shows_estimate() {
    let app = app_with(&[exact_with_executor()]);
    for (columns, rows) in [SMALL, LARGE] {
        let text = render(&app, columns, rows);
        assert!(!text.contains("estimate"), "{columns}x{rows}:\n{text}");
    }
}

#[test]
fn exact_tier_shows_hold_percentiles() {
    let app = app_with(&[exact_no_executor()]);
    let text = render(&app, SMALL.0, SMALL.1);
    assert!(text.contains("write hold p50 90µs p99 1.4ms"), "{text}");
}

#[test]
fn no_executor_hides_executor_panel() {
    let app = app_with(&[exact_no_executor()]);
    let text = render(&app, LARGE.0, LARGE.1);
    assert!(!text.contains("executor"), "{text}");
}

#[test]
fn no_executor_key_line_omits_executor_keys() {
    let app = app_with(&[exact_no_executor()]);
    let text = render(&app, SMALL.0, SMALL.1);
    let key_line = text.lines().last().unwrap_or_default();
    assert!(!key_line.contains("A/B"), "{key_line}");
}

#[test]
fn key_line_fits_every_key_at_80_columns() {
    let app = app_with(&[estimate_with_executor()]);
    let text = render(&app, SMALL.0, SMALL.1);
    let key_line = text.lines().last().unwrap_or_default();
    assert!(key_line.contains("r reset"), "{key_line}");
}

#[test]
fn drops_show_interval_and_total() {
    let app = app_with(&[estimate_with_executor()]);
    let text = render(&app, SMALL.0, SMALL.1);
    assert!(text.contains("dropped 3 (19 total)"), "{text}");
}

#[test]
fn ab_panel_shows_ratio_of_builds() {
    let app = app_with(&[estimate_with_executor()]);
    let text = render(&app, LARGE.0, LARGE.1);
    assert!(text.contains("2.41"), "{text}");
}

#[test]
fn syscall_panel_names_fentry() {
    let app = app_with(&[exact_no_executor()]);
    let text = render(&app, SMALL.0, SMALL.1);
    assert!(text.contains(" mount syscalls (fentry) "), "{text}");
}

#[test]
fn syscall_panel_names_tracepoints() {
    let app = app_with(&[estimate_with_executor()]);
    let text = render(&app, SMALL.0, SMALL.1);
    assert!(text.contains(" mount syscalls (tracepoints) "), "{text}");
}

#[test]
fn narrow_terminal_asks_for_more_columns() {
    let app = app_with(&[estimate_with_executor()]);
    let text = render(&app, 79, 40);
    assert!(text.contains("at least 80x20; this one is 79x40"), "{text}");
}

#[test]
fn short_terminal_asks_for_more_rows() {
    let app = app_with(&[estimate_with_executor()]);
    let text = render(&app, 120, 19);
    assert!(
        text.contains("at least 80x20; this one is 120x19"),
        "{text}"
    );
}

#[test]
fn smallest_terminal_draws_dashboard() {
    let app = app_with(&[estimate_with_executor()]);
    let text = render(&app, 80, 20);
    assert!(text.contains(" mount syscalls (tracepoints"), "{text}");
}

#[test]
fn last_error_reason_visible_at_120_columns() {
    let mut snapshot = estimate_with_executor();
    if let Some(executor) = snapshot.executor.as_mut() {
        executor.last_error = Some(
            "umount2(overlay) failed on `/var/tmp/mountscope/store/run/4413-0/000/c/merged`: \
             Device or resource busy (os error 16) after 30 tries in 0.5 s; a file may be open \
             in it"
                .to_string(),
        );
    }
    let app = app_with(&[snapshot]);
    let text = render(&app, LARGE.0, LARGE.1);
    assert!(text.contains("a file may be open in it"), "{text}");
}

#[test]
fn busy_unmount_retries_shown_when_any() {
    let mut snapshot = estimate_with_executor();
    if let Some(executor) = snapshot.executor.as_mut() {
        executor.unmount_busy_retries = 7;
    }
    let app = app_with(&[snapshot]);
    let text = render(&app, LARGE.0, LARGE.1);
    assert!(text.contains("0 failed, 7 unmount retries"), "{text}");
}

#[test]
fn busy_unmount_retries_hidden_when_none() {
    let app = app_with(&[estimate_with_executor()]);
    let text = render(&app, LARGE.0, LARGE.1);
    assert!(!text.contains("unmount retries"), "{text}");
}

/// A reason as long as the agent writes when neither fentry nor kprobes load.
const LONG_REASON: &str = "fentry and kprobes are unavailable (fentry: failed to load or attach \
     `fexit_down_write`), so a cpu-clock sampler every 100 µs estimates hold time";

fn tier_row(text: &str) -> &str {
    text.lines().nth(1).unwrap_or_default()
}

#[test]
fn tier_line_keeps_full_label_when_it_fits() {
    let app = app_with(&[estimate_with_executor()]);
    let text = render(&app, LARGE.0, LARGE.1);
    assert_eq!(
        tier_row(&text),
        "tier contention tracepoints + hold estimate: fentry on rwsem unavailable (BTF lacks \
         down_write)"
    );
}

#[test]
fn tier_line_shortens_label_when_narrow() {
    let mut snapshot = estimate_with_executor();
    snapshot.tier.reason = LONG_REASON.to_string();
    let app = app_with(&[snapshot]);
    let text = render(&app, SMALL.0, SMALL.1);
    assert!(
        tier_row(&text).starts_with("tier hold estimate: fentry and kprobes"),
        "{text}"
    );
}

#[test]
fn tier_line_marks_cut_reason() {
    let mut snapshot = estimate_with_executor();
    snapshot.tier.reason = LONG_REASON.to_string();
    let app = app_with(&[snapshot]);
    let text = render(&app, SMALL.0, SMALL.1);
    assert!(tier_row(&text).ends_with(" to load…"), "{text}");
}

#[test]
fn wait_sites_off_names_the_flag() {
    let app = app_with(&[empty()]);
    let text = render(&app, LARGE.0, LARGE.1);
    assert!(text.contains("start with --wait-sites"), "{text}");
}
