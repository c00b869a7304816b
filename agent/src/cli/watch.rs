//! `mountscope watch`: the live screen, with the overlay executor driven from the keyboard.

use std::{
    fs::File,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use clap::Args;
use mountscope_agent::executor::ExecutorControl;
use mountscope_common::snapshot::Snapshot;
use mountscope_tui::Action;
use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;

use super::{
    args::{ExecutorArgs, FilterArgs},
    logging,
    record::seconds,
    session::{Control, Session},
};

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Watch the host only, without the overlay executor (for a machine running a real
    /// container runtime).
    #[arg(long)]
    no_exec: bool,
    /// Also stream events and snapshots as JSON Lines to this file while watching.
    #[arg(long)]
    export: Option<PathBuf>,
    /// Seconds between snapshots.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Log file; the screen never shows logs.
    #[arg(long, default_value = "/var/log/mountscope/watch.log")]
    log_file: PathBuf,
    #[command(flatten)]
    filters: FilterArgs,
    #[command(flatten)]
    executor: ExecutorArgs,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line<'a, E: Serialize> {
    Event(&'a E),
    Snapshot(&'a Snapshot),
}

type Export = Arc<Mutex<Option<BufWriter<File>>>>;

fn export_line(export: &Export, line: serde_json::Result<String>) -> bool {
    let mut guard = export.lock().unwrap_or_else(|e| e.into_inner());
    let Some(out) = guard.as_mut() else {
        return true;
    };
    match line {
        Ok(l) => writeln!(out, "{l}").is_ok(),
        Err(_) => false,
    }
}

pub fn run(args: WatchArgs, log_level: &str) -> anyhow::Result<()> {
    logging::to_file(log_level, &args.log_file)?;
    let period = seconds(args.interval, "--interval")?;
    let options = args.filters.probe_options()?;
    let export: Export = Arc::new(Mutex::new(match &args.export {
        Some(path) => Some(BufWriter::new(File::create(path).with_context(|| {
            format!("failed to create the export file {}", path.display())
        })?)),
        None => None,
    }));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    eprintln!("mountscope: loading the kernel programs and finding namespace_sem…");
    let executor = (!args.no_exec).then(|| args.executor.config());
    let mut session = runtime.block_on(async { Session::start(&options, executor) })?;
    let control = session.executor_control();

    let (snapshot_tx, snapshot_rx) = std::sync::mpsc::channel::<Snapshot>();
    let (control_tx, control_rx) = tokio::sync::mpsc::unbounded_channel();
    let loop_export = Arc::clone(&export);
    let collector_thread = std::thread::Builder::new()
        .name("mountscope-collect".into())
        .spawn(move || {
            let result = runtime.block_on(session.run(
                period,
                None,
                control_rx,
                |snapshot| {
                    export_line(
                        &loop_export,
                        serde_json::to_string(&Line::<()>::Snapshot(&snapshot)),
                    );
                    snapshot_tx.send(snapshot).is_ok()
                },
                |event| export_line(&loop_export, serde_json::to_string(&Line::Event(&event))),
            ));
            drop(session);
            result
        })
        .context("failed to start the collector thread")?;

    let tui_result = mountscope_tui::run(snapshot_rx, |action, snapshot| {
        apply(action, snapshot, control.as_ref(), &control_tx)
    });
    let _ = control_tx.send(Control::Stop);
    let loop_result = collector_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the collector thread panicked"))?;
    if let Some(out) = export.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        out.flush().context("failed to flush the export file")?;
    }
    tui_result.context("the terminal failed")?;
    loop_result
}

/// Applies one key action; returns the status line to show.
fn apply(
    action: Action,
    snapshot: Option<&Snapshot>,
    control: Option<&ExecutorControl>,
    controls: &UnboundedSender<Control>,
) -> Option<String> {
    if let Action::ResetStatistics = action {
        let _ = controls.send(Control::Reset);
        return Some("statistics reset".into());
    }
    if let Action::ExportSnapshot = action {
        return Some(match snapshot.map(export_snapshot) {
            Some(Ok(path)) => format!("snapshot written to {}", path.display()),
            Some(Err(e)) => format!("export failed: {e:#}"),
            None => "no snapshot yet".into(),
        });
    }
    let control = control?;
    let settings = control.settings();
    let result = match action {
        Action::ToggleStrategy => {
            control.set_strategy(settings.strategy.toggled());
            Ok(())
        }
        Action::AddBuilder => control.set_builders(settings.builders + 1),
        Action::RemoveBuilder => control.set_builders(settings.builders.saturating_sub(1).max(1)),
        Action::AddLayer => control.set_layers(settings.layers + 1),
        Action::RemoveLayer => control.set_layers(settings.layers.saturating_sub(1).max(1)),
        Action::ToggleIdmap => control.set_idmap(!settings.idmap),
        Action::NextMountApi => {
            control.set_mount_api(settings.mount_api.next());
            Ok(())
        }
        Action::TogglePause => {
            control.set_paused(!settings.paused);
            Ok(())
        }
        _ => Ok(()),
    };
    result.err().map(|e| format!("{e}"))
}

/// Writes `snapshot` as pretty JSON into the current directory.
fn export_snapshot(snapshot: &Snapshot) -> anyhow::Result<PathBuf> {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let path = Path::new(&format!("mountscope-snapshot-{stamp}.json")).to_path_buf();
    let text = serde_json::to_string_pretty(snapshot)?;
    std::fs::write(&path, text).with_context(|| format!("failed to write {}", path.display()))?;
    Ok(path)
}
