//! Terminal setup and restore: raw mode and the alternate screen on entry, restored by a drop
//! guard and by a panic hook.

use std::io::{self, Stdout};
use std::panic::{self, PanicHookInfo};
use std::sync::Arc;

use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::cursor::Show;
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};

type PanicHook = Arc<dyn Fn(&PanicHookInfo<'_>) + Send + Sync + 'static>;

/// A terminal in raw mode on the alternate screen, restored when the guard drops.
///
/// While the guard lives, a panic hook restores the terminal before the previous hook prints
/// the panic message, so the message lands on the normal screen. Dropping the guard puts the
/// previous hook back.
pub struct TerminalGuard {
    terminal: Terminal<CrosstermBackend<Stdout>>,
    previous_hook: PanicHook,
}

impl TerminalGuard {
    /// Enters raw mode and the alternate screen on stdout.
    pub fn enter() -> io::Result<TerminalGuard> {
        let previous_hook: PanicHook = Arc::from(panic::take_hook());
        let hook_for_panic = Arc::clone(&previous_hook);
        panic::set_hook(Box::new(move |info| {
            restore();
            hook_for_panic(info);
        }));

        // From here on, an early return drops the guard, which restores the terminal.
        let mut guard = TerminalGuard {
            terminal: Terminal::new(CrosstermBackend::new(io::stdout()))?,
            previous_hook,
        };
        enable_raw_mode()?;
        execute!(io::stdout(), EnterAlternateScreen)?;
        guard.terminal.clear()?;
        Ok(guard)
    }

    pub fn terminal(&mut self) -> &mut Terminal<CrosstermBackend<Stdout>> {
        &mut self.terminal
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();

        let previous_hook = Arc::clone(&self.previous_hook);
        panic::set_hook(Box::new(move |info| previous_hook(info)));
    }
}

/// Leaves raw mode and the alternate screen and shows the cursor. Errors are ignored because
/// this runs while dropping or panicking, where nothing better can be done with them.
fn restore() {
    let _ = disable_raw_mode();
    let _ = execute!(io::stdout(), LeaveAlternateScreen, Show);
}
