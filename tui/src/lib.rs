//! mountscope's terminal interface: pure state, one key table, read-only draw functions and
//! the terminal loop that ties them to the agent's snapshots.
//!
//! The caller owns the agent and the executor. It sends one [`Snapshot`] per interval on a
//! channel and applies the [`Action`]s that [`run`] hands back; the TUI only draws.

mod app;
pub mod draw;
mod format;
mod keys;
mod run;
mod terminal;
mod timeline;

pub use app::{App, Event};
pub use keys::{Action, KEY_BINDINGS, KeyBinding, action_for_key};
pub use mountscope_common::snapshot::Snapshot;
pub use run::run;
pub use terminal::TerminalGuard;
pub use timeline::{TIMELINE_SPAN_MS, Timeline, TimelinePoint};
