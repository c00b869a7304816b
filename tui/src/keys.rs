//! The key table: one row per key, driving both key dispatch and the key line and help popup.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// Request made by a key. The caller applies every action except [`Action::ToggleHelp`] and
/// [`Action::Quit`], which the TUI handles itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Switch the executor between strategy A (per-layer binds) and B (common parent).
    ToggleStrategy,
    AddBuilder,
    RemoveBuilder,
    AddLayer,
    RemoveLayer,
    ToggleIdmap,
    /// Move the executor to the next mount API (auto, mount(2), fsconfig).
    NextMountApi,
    /// Pause or resume the executor.
    TogglePause,
    /// Write the latest snapshot as JSON to a file of the caller's choosing.
    ExportSnapshot,
    /// Reset the agent's statistics. The TUI clears its timeline at the same time.
    ResetStatistics,
    ToggleHelp,
    Quit,
}

impl Action {
    /// Returns whether the action changes the executor, which does not run in `--no-exec`
    /// mode.
    pub fn needs_executor(self) -> bool {
        matches!(
            self,
            Action::ToggleStrategy
                | Action::AddBuilder
                | Action::RemoveBuilder
                | Action::AddLayer
                | Action::RemoveLayer
                | Action::ToggleIdmap
                | Action::NextMountApi
                | Action::TogglePause
        )
    }
}

/// One row of the key table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyBinding {
    pub key: char,
    /// Short label for the key line. Neighbouring rows with the same label share one entry
    /// there, as in `+- builders`.
    pub label: &'static str,
    /// Sentence for the help popup.
    pub description: &'static str,
    pub action: Action,
}

/// Every key the TUI reacts to, in key-line order. Ctrl-C quits as well, outside the table.
pub const KEY_BINDINGS: &[KeyBinding] = &[
    KeyBinding {
        key: 's',
        label: "A/B",
        description: "switch strategy: A per-layer binds, B common parent",
        action: Action::ToggleStrategy,
    },
    KeyBinding {
        key: '+',
        label: "builders",
        description: "add one concurrent builder",
        action: Action::AddBuilder,
    },
    KeyBinding {
        key: '-',
        label: "builders",
        description: "remove one concurrent builder",
        action: Action::RemoveBuilder,
    },
    KeyBinding {
        key: '[',
        label: "layers",
        description: "build with one layer fewer",
        action: Action::RemoveLayer,
    },
    KeyBinding {
        key: ']',
        label: "layers",
        description: "build with one layer more",
        action: Action::AddLayer,
    },
    KeyBinding {
        key: 'i',
        label: "idmap",
        description: "turn idmapped layer mounts on or off",
        action: Action::ToggleIdmap,
    },
    KeyBinding {
        key: 'm',
        label: "api",
        description: "next overlay mount API: auto, mount(2), fsconfig",
        action: Action::NextMountApi,
    },
    KeyBinding {
        key: 'p',
        label: "pause",
        description: "pause or resume the executor",
        action: Action::TogglePause,
    },
    KeyBinding {
        key: 'e',
        label: "export",
        description: "export the latest snapshot as JSON",
        action: Action::ExportSnapshot,
    },
    KeyBinding {
        key: 'r',
        label: "reset",
        description: "reset statistics and the timeline",
        action: Action::ResetStatistics,
    },
    KeyBinding {
        key: '?',
        label: "help",
        description: "show or hide this help",
        action: Action::ToggleHelp,
    },
    KeyBinding {
        key: 'q',
        label: "quit",
        description: "quit (Ctrl-C quits too)",
        action: Action::Quit,
    },
];

/// Looks a key event up in [`KEY_BINDINGS`], mapping Ctrl-C to [`Action::Quit`] as well.
///
/// Key releases and keys with Ctrl or Alt held return `None`. Shift is accepted because
/// terminals report it for `+`, `?` and the like on some layouts.
pub fn action_for_key(key: KeyEvent) -> Option<Action> {
    if key.kind == KeyEventKind::Release {
        return None;
    }

    let KeyCode::Char(pressed) = key.code else {
        return None;
    };

    if key.modifiers == KeyModifiers::CONTROL && pressed == 'c' {
        return Some(Action::Quit);
    }
    if key
        .modifiers
        .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT)
    {
        return None;
    }

    KEY_BINDINGS
        .iter()
        .find(|binding| binding.key == pressed)
        .map(|binding| binding.action)
}
