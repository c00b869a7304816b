//! `mountscope record`: JSON Lines of events and snapshots, without a screen.

use std::{
    fs::File,
    io::{BufWriter, Write},
    path::PathBuf,
    time::Duration,
};

use anyhow::Context as _;
use clap::Args;
use mountscope_agent::{
    daemon::{
        client::Client,
        protocol::{Request, StreamLine},
        socket::DEFAULT_SOCKET,
    },
    probes::ProbeOptions,
};
use serde::Serialize;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use super::{
    args::{ExecutorArgs, FilterArgs, connect_conflicts, executor_requires_exec},
    session::Session,
};

#[derive(Debug, Args)]
#[command(mut_args(executor_requires_exec))]
pub struct RecordArgs {
    /// Stop after this many seconds; without it, record until Ctrl-C or SIGTERM.
    #[arg(long)]
    duration: Option<f64>,
    /// Write to this file instead of stdout.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Seconds between snapshot lines.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Leave out per-event lines and write snapshots only.
    #[arg(long)]
    snapshots_only: bool,
    /// Run the overlay executor while recording. The executor options need it.
    #[arg(long)]
    exec: bool,
    /// Record the stream of a running `mountscope agent` from this socket (its default
    /// socket when no value is given) instead of loading the probes here. The agent's
    /// filters and snapshot interval apply.
    #[arg(
        long,
        value_name = "SOCKET",
        num_args = 0..=1,
        default_missing_value = DEFAULT_SOCKET,
        conflicts_with_all = ["exec"],
        conflicts_with_all = connect_conflicts()
    )]
    connect: Option<PathBuf>,
    #[command(flatten)]
    filters: FilterArgs,
    #[command(flatten)]
    executor: ExecutorArgs,
}

/// One line of the output.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line<'a, E: Serialize, S: Serialize> {
    Event(&'a E),
    Snapshot(&'a S),
}

/// Maximum duration or interval in seconds, about 31 years, far above any real run.
const MAX_SECONDS: f64 = 1e9;

pub fn seconds(value: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero() && value <= MAX_SECONDS)
        .with_context(|| {
            // A huge value printed in full would be hundreds of digits long.
            let value_text = if value.abs() <= MAX_SECONDS {
                value.to_string()
            } else {
                format!("{value:e}")
            };
            format!(
                "invalid {flag} `{value_text}`: give a number of seconds above 0 and at most \
                 {MAX_SECONDS:e}"
            )
        })
}

pub fn run(args: RecordArgs) -> anyhow::Result<()> {
    let duration = args
        .duration
        .map(|d| seconds(d, "--duration"))
        .transpose()?;
    let period = seconds(args.interval, "--interval")?;
    let options = ProbeOptions {
        // Every call becomes an event line unless only snapshots are wanted.
        syscall_records: !args.snapshots_only,
        ..args.filters.probe_options()?
    };
    let executor = args.exec.then(|| args.executor.config());
    if let Some(config) = &executor {
        config.validate()?;
    }
    let out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(
            File::create(path)
                .with_context(|| format!("failed to create the output file {}", path.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = BufWriter::new(out);
    let mut write_error: Option<std::io::Error> = None;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    if let Some(socket) = &args.connect {
        let write_line = |line: &str| writeln!(out, "{line}");
        runtime.block_on(record_from_agent(
            socket,
            duration,
            args.snapshots_only,
            write_line,
        ))?;
        out.flush().context("failed to flush the recording")?;
        return Ok(());
    }
    runtime.block_on(async {
        let mut session = Session::start(&options, executor)?;
        let (_controls, controls_rx) = tokio::sync::mpsc::unbounded_channel();
        let snapshots_only = args.snapshots_only;
        let out = &mut out;
        let write_error = &mut write_error;
        let mut write_line = move |line: String| -> bool {
            if write_error.is_some() {
                return false;
            }
            match writeln!(out, "{line}") {
                Ok(()) => true,
                Err(e) => {
                    *write_error = Some(e);
                    false
                }
            }
        };
        let write_line = std::cell::RefCell::new(&mut write_line);
        session
            .run(
                period,
                duration,
                controls_rx,
                |snapshot| {
                    let line = serde_json::to_string(&Line::<(), _>::Snapshot(&snapshot));
                    line.is_ok_and(|l| (write_line.borrow_mut())(l))
                },
                |event| {
                    if snapshots_only {
                        return true;
                    }
                    let line = serde_json::to_string(&Line::<_, ()>::Event(&event));
                    line.is_ok_and(|l| (write_line.borrow_mut())(l))
                },
            )
            .await
    })?;
    if let Some(e) = write_error {
        return Err(e).context("failed to write the recording");
    }
    out.flush().context("failed to flush the recording")?;
    Ok(())
}

/// Writes the agent's snapshot and event lines as they arrive, until SIGINT, SIGTERM,
/// `duration` or the agent closing the connection.
async fn record_from_agent(
    socket: &std::path::Path,
    duration: Option<Duration>,
    snapshots_only: bool,
    mut write_line: impl FnMut(&str) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    let mut sigint = signal(SignalKind::interrupt()).context("failed to handle SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("failed to handle SIGTERM")?;
    let mut client = Client::connect(socket).await?;
    client
        .send(&Request::Subscribe {
            snapshots: true,
            events: !snapshots_only,
        })
        .await?;
    let deadline = tokio::time::sleep(duration.unwrap_or(Duration::MAX));
    tokio::pin!(deadline);

    loop {
        let text = tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = &mut deadline, if duration.is_some() => break,
            line = client.next_line() => match line? {
                Some(text) => text,
                None => {
                    info!("the agent closed the connection");
                    break;
                }
            },
        };
        match StreamLine::parse(&text) {
            Ok(StreamLine::Snapshot(_) | StreamLine::Event(_)) => {
                write_line(&text).context("failed to write the recording")?
            }
            Ok(StreamLine::Ok) => {}
            Ok(StreamLine::Error(message)) => warn!("the agent replied with an error: {message}"),
            Err(e) => warn!("skipped a line from the agent: {e}"),
        }
    }
    Ok(())
}
