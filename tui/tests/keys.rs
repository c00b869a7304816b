//! Key handling: the key table, the actions `App::update` returns and the status messages.

mod common;

use common::{app_with, estimate_with_executor, exact_no_executor};
use mountscope_tui::{Action, App, Event, KEY_BINDINGS, action_for_key};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

fn press(key: char) -> Event {
    Event::Key(KeyEvent::new(KeyCode::Char(key), KeyModifiers::NONE))
}

fn key_of(action: Action) -> char {
    KEY_BINDINGS
        .iter()
        .find(|binding| binding.action == action)
        .map(|binding| binding.key)
        .unwrap_or_else(|| panic!("{action:?} has no key"))
}

#[test]
fn table_keys_map_to_their_actions() {
    let expected = [
        ('s', Action::ToggleStrategy),
        ('+', Action::AddBuilder),
        ('-', Action::RemoveBuilder),
        ('[', Action::RemoveLayer),
        (']', Action::AddLayer),
        ('i', Action::ToggleIdmap),
        ('m', Action::NextMountApi),
        ('p', Action::TogglePause),
        ('e', Action::ExportSnapshot),
        ('r', Action::ResetStatistics),
        ('?', Action::ToggleHelp),
        ('q', Action::Quit),
    ];
    for (key, action) in expected {
        let event = KeyEvent::new(KeyCode::Char(key), KeyModifiers::NONE);
        assert_eq!(action_for_key(event), Some(action), "key {key:?}");
    }
}

#[test]
fn table_has_one_row_per_key() {
    for (position, binding) in KEY_BINDINGS.iter().enumerate() {
        let later = &KEY_BINDINGS[position + 1..];
        assert!(
            later.iter().all(|other| other.key != binding.key),
            "key {:?} bound twice",
            binding.key
        );
    }
}

#[test]
fn ctrl_c_quits() {
    let event = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
    assert_eq!(action_for_key(event), Some(Action::Quit));
}

#[test]
fn shifted_symbol_still_maps() {
    let event = KeyEvent::new(KeyCode::Char('+'), KeyModifiers::SHIFT);
    assert_eq!(action_for_key(event), Some(Action::AddBuilder));
}

#[test]
fn ctrl_with_table_key_does_nothing() {
    let event = KeyEvent::new(KeyCode::Char('s'), KeyModifiers::CONTROL);
    assert_eq!(action_for_key(event), None);
}

#[test]
fn key_release_does_nothing() {
    let mut event = KeyEvent::new(KeyCode::Char('q'), KeyModifiers::NONE);
    event.kind = KeyEventKind::Release;
    assert_eq!(action_for_key(event), None);
}

#[test]
fn unknown_keys_do_nothing() {
    for code in [
        KeyCode::Char('x'),
        KeyCode::Char('Q'),
        KeyCode::Enter,
        KeyCode::F(1),
    ] {
        let event = KeyEvent::new(code, KeyModifiers::NONE);
        assert_eq!(action_for_key(event), None, "{code:?}");
    }
}

#[test]
fn unknown_key_leaves_status_empty() {
    let mut app = app_with(&[estimate_with_executor()]);
    app.update(press('x'));
    assert_eq!(app.status(), None);
}

#[test]
fn executor_keys_return_actions() {
    for binding in KEY_BINDINGS.iter().filter(|b| b.action.needs_executor()) {
        let mut app = app_with(&[estimate_with_executor()]);
        assert_eq!(
            app.update(press(binding.key)),
            Some(binding.action),
            "key {:?}",
            binding.key
        );
    }
}

#[test]
fn executor_keys_without_executor_return_nothing() {
    for binding in KEY_BINDINGS.iter().filter(|b| b.action.needs_executor()) {
        let mut app = app_with(&[exact_no_executor()]);
        assert_eq!(
            app.update(press(binding.key)),
            None,
            "key {:?}",
            binding.key
        );
    }
}

#[test]
fn executor_keys_without_executor_explain() {
    for binding in KEY_BINDINGS.iter().filter(|b| b.action.needs_executor()) {
        let mut app = app_with(&[exact_no_executor()]);
        app.update(press(binding.key));
        assert_eq!(
            app.status(),
            Some("no executor is running: key ignored"),
            "key {:?}",
            binding.key
        );
    }
}

#[test]
fn executor_keys_before_first_snapshot_explain() {
    let mut app = App::new();
    app.update(press(key_of(Action::ToggleStrategy)));
    assert_eq!(app.status(), Some("no executor is running: key ignored"));
}

#[test]
fn strategy_toggle_announces_next_strategy() {
    let mut app = app_with(&[estimate_with_executor()]);
    app.update(press(key_of(Action::ToggleStrategy)));
    assert_eq!(
        app.status(),
        Some("strategy → B common parent at next start")
    );
}

#[test]
fn builder_removal_stops_at_one() {
    let mut snapshot = estimate_with_executor();
    if let Some(executor) = &mut snapshot.executor {
        executor.settings.builders = 1;
    }
    let mut app = app_with(&[snapshot]);
    assert_eq!(app.update(press(key_of(Action::RemoveBuilder))), None);
}

#[test]
fn layer_removal_stops_at_one() {
    let mut snapshot = estimate_with_executor();
    if let Some(executor) = &mut snapshot.executor {
        executor.settings.layers = 1;
    }
    let mut app = app_with(&[snapshot]);
    assert_eq!(app.update(press(key_of(Action::RemoveLayer))), None);
}

#[test]
fn export_returns_action_with_snapshot() {
    let mut app = app_with(&[exact_no_executor()]);
    assert_eq!(
        app.update(press(key_of(Action::ExportSnapshot))),
        Some(Action::ExportSnapshot)
    );
}

#[test]
fn export_before_first_snapshot_ignored() {
    let mut app = App::new();
    assert_eq!(app.update(press(key_of(Action::ExportSnapshot))), None);
}

#[test]
fn reset_returns_action() {
    let mut app = app_with(&[exact_no_executor()]);
    assert_eq!(
        app.update(press(key_of(Action::ResetStatistics))),
        Some(Action::ResetStatistics)
    );
}

#[test]
fn reset_clears_timeline() {
    let mut app = app_with(&[exact_no_executor()]);
    app.update(press(key_of(Action::ResetStatistics)));
    assert!(app.timeline().is_empty());
}

#[test]
fn help_key_toggles_help() {
    let mut app = App::new();
    app.update(press('?'));
    assert!(app.help_shown());
}

#[test]
fn help_key_twice_hides_help() {
    let mut app = App::new();
    app.update(press('?'));
    app.update(press('?'));
    assert!(!app.help_shown());
}

#[test]
fn help_key_returns_nothing() {
    let mut app = App::new();
    assert_eq!(app.update(press('?')), None);
}

#[test]
fn quit_key_requests_quit() {
    let mut app = App::new();
    app.update(press('q'));
    assert!(app.quit_requested());
}

#[test]
fn quit_key_returns_nothing() {
    let mut app = App::new();
    assert_eq!(app.update(press('q')), None);
}

#[test]
fn caller_message_replaces_status() {
    let mut app = app_with(&[exact_no_executor()]);
    app.update(press('e'));
    app.update(Event::Message("exported to /tmp/snapshot.json".to_string()));
    assert_eq!(app.status(), Some("exported to /tmp/snapshot.json"));
}

#[test]
fn status_clears_after_five_seconds() {
    let mut app = App::new();
    app.update(Event::Message("exported".to_string()));
    for _ in 0..50 {
        app.update(Event::Tick);
    }
    assert_eq!(app.status(), None);
}

#[test]
fn status_stays_before_five_seconds() {
    let mut app = App::new();
    app.update(Event::Message("exported".to_string()));
    for _ in 0..49 {
        app.update(Event::Tick);
    }
    assert_eq!(app.status(), Some("exported"));
}

#[test]
fn paused_flag_mirrors_snapshot() {
    let mut snapshot = estimate_with_executor();
    if let Some(executor) = &mut snapshot.executor {
        executor.settings.paused = true;
    }
    let app = app_with(&[snapshot]);
    assert!(app.executor_paused());
}
