//! The terminal loop: snapshots in, key presses turned into actions, a redraw every 100 ms.

use std::io;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use mountscope_common::snapshot::Snapshot;
use ratatui::crossterm::event::{self, Event as TerminalEvent};

use crate::app::{App, Event};
use crate::draw;
use crate::keys::Action;
use crate::terminal::TerminalGuard;

/// Time between redraws (10 Hz).
const TICK: Duration = Duration::from_millis(100);

/// Runs the TUI on stdout until `q` or Ctrl-C is pressed or the sender of `snapshots` is
/// dropped.
///
/// Each snapshot received replaces the one shown. Every action that needs the agent or the
/// executor goes to `on_action` with the latest snapshot (`None` before the first one), and
/// the message it returns, if any, replaces the status line. `on_action` runs on the TUI's
/// thread, so it should return quickly. Help and quit never reach it, and executor actions
/// reach it only when the latest snapshot has an executor.
///
/// To stop the TUI from outside, for example on SIGTERM, drop the sender: the loop returns
/// within one tick. The terminal is restored on every return path and on panic. Nothing is
/// logged to the terminal, so the caller should send its logs elsewhere.
///
/// # Errors
///
/// Returns the error of a failed terminal operation (setup, drawing or reading input).
pub fn run<F>(snapshots: Receiver<Snapshot>, mut on_action: F) -> io::Result<()>
where
    F: FnMut(Action, Option<&Snapshot>) -> Option<String>,
{
    let mut guard = TerminalGuard::enter()?;
    let mut app = App::new();
    let mut next_tick = Instant::now() + TICK;

    loop {
        loop {
            match snapshots.try_recv() {
                Ok(snapshot) => {
                    app.update(Event::Snapshot(Box::new(snapshot)));
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return Ok(()),
            }
        }

        guard.terminal().draw(|frame| draw::draw(frame, &app))?;

        let timeout = next_tick.saturating_duration_since(Instant::now());
        if event::poll(timeout)?
            && let Some(event) = translate(event::read()?)
        {
            if let Some(action) = app.update(event)
                && let Some(message) = on_action(action, app.snapshot())
            {
                app.update(Event::Message(message));
            }
            if app.quit_requested() {
                return Ok(());
            }
        }

        if Instant::now() >= next_tick {
            app.update(Event::Tick);
            next_tick = Instant::now() + TICK;
        }
    }
}

/// Turns a terminal event into an [`Event`], ignoring mouse, focus and paste events.
fn translate(event: TerminalEvent) -> Option<Event> {
    match event {
        TerminalEvent::Key(key) => Some(Event::Key(key)),
        TerminalEvent::Resize(columns, rows) => Some(Event::Resize(columns, rows)),
        _ => None,
    }
}
