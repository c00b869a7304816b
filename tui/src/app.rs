//! Pure TUI state: the latest snapshot, the timeline, help and status line. Every change goes
//! through [`App::update`], and draw functions only read it.

use mountscope_common::snapshot::{ExecutorSettings, Snapshot};
use ratatui::crossterm::event::KeyEvent;

use crate::keys::{Action, action_for_key};
use crate::timeline::Timeline;

/// Ticks a status message stays on screen: 5 s at the 10 Hz redraw rate.
const STATUS_TICKS: u32 = 50;

/// Everything that changes the state.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Key(KeyEvent),
    /// One redraw period has passed.
    Tick,
    Snapshot(Box<Snapshot>),
    /// The terminal now has this many columns and rows.
    Resize(u16, u16),
    /// A status line from the caller, such as the outcome of an action.
    Message(String),
}

/// State of the TUI between redraws.
#[derive(Clone, Debug, Default)]
pub struct App {
    snapshot: Option<Snapshot>,
    timeline: Timeline,
    help_shown: bool,
    status: Option<String>,
    status_ticks_left: u32,
    executor_paused: bool,
    quit_requested: bool,
    terminal_size: Option<(u16, u16)>,
}

impl App {
    pub fn new() -> App {
        App::default()
    }

    /// Applies one event and returns the action the caller must carry out, if any.
    ///
    /// Help and quit are handled here and never returned. Executor actions are dropped with a
    /// status message while the latest snapshot has no executor, and so are actions that
    /// would take builders or layers below one.
    pub fn update(&mut self, event: Event) -> Option<Action> {
        match event {
            Event::Key(key) => {
                let action = action_for_key(key)?;
                self.apply(action)
            }
            Event::Tick => {
                self.age_status();
                None
            }
            Event::Snapshot(snapshot) => {
                self.receive(*snapshot);
                None
            }
            Event::Resize(columns, rows) => {
                self.terminal_size = Some((columns, rows));
                None
            }
            Event::Message(message) => {
                self.set_status(message);
                None
            }
        }
    }

    /// Returns the latest snapshot, or `None` until the first arrives.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    pub fn help_shown(&self) -> bool {
        self.help_shown
    }

    /// Status message, shown for 5 s after it was set.
    pub fn status(&self) -> Option<&str> {
        self.status.as_deref()
    }

    /// Returns whether the executor was paused in the latest snapshot.
    pub fn executor_paused(&self) -> bool {
        self.executor_paused
    }

    pub fn quit_requested(&self) -> bool {
        self.quit_requested
    }

    /// Size from the last resize event; the draw functions use the frame's area instead.
    pub fn terminal_size(&self) -> Option<(u16, u16)> {
        self.terminal_size
    }

    fn receive(&mut self, snapshot: Snapshot) {
        self.timeline.push(&snapshot);
        self.executor_paused = snapshot
            .executor
            .as_ref()
            .is_some_and(|executor| executor.settings.paused);
        self.snapshot = Some(snapshot);
    }

    fn apply(&mut self, action: Action) -> Option<Action> {
        match action {
            Action::ToggleHelp => {
                self.help_shown = !self.help_shown;
                None
            }
            Action::Quit => {
                self.quit_requested = true;
                None
            }
            Action::ExportSnapshot if self.snapshot.is_none() => {
                self.set_status("nothing to export yet: no snapshot has arrived".to_string());
                None
            }
            Action::ResetStatistics => {
                self.timeline.clear();
                self.set_status("statistics reset".to_string());
                Some(action)
            }
            _ if action.needs_executor() => self.apply_to_executor(action),
            _ => Some(action),
        }
    }

    /// Checks an executor action against the latest settings and describes the change.
    fn apply_to_executor(&mut self, action: Action) -> Option<Action> {
        let Some(settings) = self
            .snapshot
            .as_ref()
            .and_then(|s| s.executor.as_ref())
            .map(|e| e.settings.clone())
        else {
            self.set_status("no executor is running: key ignored".to_string());
            return None;
        };

        match describe_change(action, &settings) {
            Ok(message) => {
                self.set_status(message);
                Some(action)
            }
            Err(message) => {
                self.set_status(message);
                None
            }
        }
    }

    fn set_status(&mut self, message: String) {
        self.status = Some(message);
        self.status_ticks_left = STATUS_TICKS;
    }

    fn age_status(&mut self) {
        self.status_ticks_left = self.status_ticks_left.saturating_sub(1);
        if self.status_ticks_left == 0 {
            self.status = None;
        }
    }
}

/// Describes what an executor action will change, or why it cannot.
///
/// NOTE: only the lower limit of one builder and one layer is checked here, because any
/// upper limit is the executor's to enforce.
fn describe_change(action: Action, settings: &ExecutorSettings) -> Result<String, String> {
    let on_off = |enabled: bool| if enabled { "on" } else { "off" };

    match action {
        Action::ToggleStrategy => {
            let next = settings.strategy.toggled();
            Ok(format!("strategy → {} at next start", next.label()))
        }
        Action::AddBuilder => Ok(format!(
            "builders → {} at next start",
            settings.builders + 1
        )),
        Action::RemoveBuilder if settings.builders <= 1 => {
            Err("builders already at the minimum of 1".to_string())
        }
        Action::RemoveBuilder => Ok(format!(
            "builders → {} at next start",
            settings.builders - 1
        )),
        Action::AddLayer => Ok(format!("layers → {} at next start", settings.layers + 1)),
        Action::RemoveLayer if settings.layers <= 1 => {
            Err("layers already at the minimum of 1".to_string())
        }
        Action::RemoveLayer => Ok(format!("layers → {} at next start", settings.layers - 1)),
        Action::ToggleIdmap => Ok(format!("idmap → {} at next start", on_off(!settings.idmap))),
        Action::NextMountApi => Ok(format!(
            "mount API → {} at next start",
            settings.mount_api.next().label()
        )),
        Action::TogglePause if settings.paused => Ok("executor → resuming".to_string()),
        Action::TogglePause => Ok("executor → pausing".to_string()),
        other => Ok(format!("{other:?} requested")),
    }
}
