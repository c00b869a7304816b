//! `mountscope watch`: the live screen, with the overlay executor driven from the keyboard.

use std::{
    fs::File,
    io::IsTerminal as _,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use clap::Args;
use mountscope_agent::{
    daemon::{
        client::Client,
        protocol::{ControlAction, Request, StreamLine},
        socket::DEFAULT_SOCKET,
    },
    executor::ExecutorControl,
    probes::ProbeOptions,
};
use mountscope_common::snapshot::Snapshot;
use mountscope_tui::Action;
use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;

use super::{
    args::{EXECUTOR_FLAGS, ExecutorArgs, FilterArgs, PRESET_FLAGS, Preset, connect_conflicts},
    logging,
    record::seconds,
    session::{Control, Session},
};

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Watch the host only, without the overlay executor (for a machine running a real
    /// container runtime). Executor options are an error next to it.
    #[arg(long, conflicts_with_all = EXECUTOR_FLAGS)]
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
    /// Draw the snapshots of a running `mountscope agent` from this socket (its default
    /// socket when no value is given) instead of loading the probes here. Keys send executor
    /// changes and resets to the agent.
    #[arg(
        long,
        value_name = "SOCKET",
        num_args = 0..=1,
        default_missing_value = DEFAULT_SOCKET,
        conflicts_with_all = ["no_exec", "export"],
        conflicts_with_all = connect_conflicts()
    )]
    connect: Option<PathBuf>,
    /// Start the executor with a named set of options. `storm` sets 100 builders, 50 idmapped
    /// layers with a user namespace per container, and an inspection pass per start.
    #[arg(
        long,
        value_enum,
        conflicts_with_all = PRESET_FLAGS,
        conflicts_with = "no_exec",
        conflicts_with = "connect"
    )]
    preset: Option<Preset>,
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
    // Checked first, so that nothing is loaded or created for a screen that cannot be drawn.
    if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
        anyhow::bail!(
            "watch draws a live screen and needs a terminal on stdin and stdout; use \
             `mountscope record` (or `record --connect` for an agent) for JSON Lines instead"
        );
    }
    logging::to_file(log_level, &args.log_file)?;
    if let Some(socket) = &args.connect {
        return run_connected(socket);
    }
    let period = seconds(args.interval, "--interval")?;
    let options = ProbeOptions {
        // `--export` streams every call as an event line; the screen needs none.
        syscall_records: args.export.is_some(),
        ..args.filters.probe_options()?
    };
    let executor = (!args.no_exec).then(|| {
        let mut config = args.executor.config();
        if let Some(preset) = args.preset {
            preset.apply(&mut config);
        }
        config
    });
    if let Some(config) = &executor {
        config.validate()?;
    }
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

/// Draws the snapshots of a running agent and sends key actions to it as requests.
fn run_connected(socket: &Path) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    // Connect before the screen is taken, so a missing agent shows as a plain error.
    let mut client = runtime.block_on(async {
        let mut client = Client::connect(socket).await?;
        let subscribe = Request::Subscribe {
            snapshots: true,
            events: false,
        };
        client.send(&subscribe).await?;
        anyhow::Ok(client)
    })?;

    let (snapshot_tx, snapshot_rx) = std::sync::mpsc::channel::<Snapshot>();
    let (request_tx, mut request_rx) = tokio::sync::mpsc::unbounded_channel::<Request>();
    let reader = std::thread::Builder::new()
        .name("mountscope-connect".into())
        .spawn(move || {
            runtime.block_on(async move {
                loop {
                    tokio::select! {
                        request = request_rx.recv() => match request {
                            Some(request) => client.send(&request).await?,
                            None => return anyhow::Ok(None),
                        },
                        line = client.next_line() => {
                            let Some(text) = line? else {
                                return Ok(Some("the agent closed the connection"));
                            };
                            match StreamLine::parse(&text) {
                                Ok(StreamLine::Snapshot(snapshot)) => {
                                    if snapshot_tx.send(*snapshot).is_err() {
                                        return Ok(None);
                                    }
                                }
                                Ok(StreamLine::Error(m)) => {
                                    tracing::warn!("the agent replied with an error: {m}");
                                }
                                Ok(_) => {}
                                Err(e) => tracing::warn!("skipped a line from the agent: {e}"),
                            }
                        }
                    }
                }
            })
        })
        .context("failed to start the socket reader thread")?;

    let tui_result = mountscope_tui::run(snapshot_rx, |action, snapshot| {
        apply_remote(action, snapshot, &request_tx)
    });
    drop(request_tx);
    let reader_result = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the socket reader thread panicked"))?;
    tui_result.context("the terminal failed")?;
    if let Some(reason) = reader_result? {
        eprintln!("mountscope: {reason}");
    }
    Ok(())
}

/// Sends one key action to the agent as a request and returns the status line to show.
/// Builder and layer steps start from the settings in the latest snapshot.
fn apply_remote(
    action: Action,
    snapshot: Option<&Snapshot>,
    requests: &UnboundedSender<Request>,
) -> Option<String> {
    let settings = snapshot
        .and_then(|s| s.executor.as_ref())
        .map(|e| &e.settings);
    let request = match action {
        Action::ResetStatistics => Request::Reset(true),
        Action::ExportSnapshot => {
            return Some(match snapshot.map(export_snapshot) {
                Some(Ok(path)) => format!("snapshot written to {}", path.display()),
                Some(Err(e)) => format!("export failed: {e:#}"),
                None => "no snapshot yet".into(),
            });
        }
        _ if action.needs_executor() && settings.is_none() => {
            return Some("the agent reports no executor; start the agent with --exec".into());
        }
        Action::ToggleStrategy => Request::Control(ControlAction::ToggleStrategy),
        Action::ToggleIdmap => Request::Control(ControlAction::ToggleIdmap),
        Action::NextMountApi => Request::Control(ControlAction::NextMountApi),
        Action::TogglePause => Request::Control(ControlAction::TogglePause),
        Action::AddBuilder | Action::RemoveBuilder | Action::AddLayer | Action::RemoveLayer => {
            let settings = settings?;
            Request::Control(match action {
                Action::AddBuilder => ControlAction::SetBuilders(settings.builders + 1),
                Action::RemoveBuilder => {
                    ControlAction::SetBuilders(settings.builders.saturating_sub(1).max(1))
                }
                Action::AddLayer => ControlAction::SetLayers(settings.layers + 1),
                _ => ControlAction::SetLayers(settings.layers.saturating_sub(1).max(1)),
            })
        }
        _ => return None,
    };
    let is_reset = matches!(request, Request::Reset(_));
    if requests.send(request).is_err() {
        return Some("the connection to the agent is closed".into());
    }
    is_reset.then(|| "statistics reset".into())
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
