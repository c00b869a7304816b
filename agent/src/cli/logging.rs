//! Log output: plain lines on stderr, or a file while the TUI owns the terminal.

use std::{fs::OpenOptions, io::IsTerminal as _, path::Path, sync::Mutex};

use anyhow::Context as _;
use tracing_subscriber::EnvFilter;

fn filter(level: &str) -> anyhow::Result<EnvFilter> {
    EnvFilter::try_new(level).with_context(|| {
        format!("invalid log filter `{level}`; use error, warn, info, debug or trace")
    })
}

pub fn to_stderr(level: &str) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(filter(level)?)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    Ok(())
}

pub fn to_file(level: &str, path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("failed to create the log directory {}", dir.display()))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| {
            format!(
                "failed to open the log file {}; pass --log-file",
                path.display()
            )
        })?;
    tracing_subscriber::fmt()
        .with_env_filter(filter(level)?)
        .with_writer(Mutex::new(file))
        .with_ansi(false)
        .init();
    Ok(())
}
