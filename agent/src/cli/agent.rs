//! `mountscope agent`: loads the probes once and serves snapshots, events and executor
//! controls on a Unix socket, and Prometheus metrics over HTTP, until SIGTERM or SIGINT.

use std::{io::IsTerminal as _, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::Args;
use mountscope_agent::{
    collect::DRAIN_PERIOD,
    daemon::{
        http,
        metrics::Metrics,
        server::{self, AgentRequest, Hub},
        socket::{self, DEFAULT_SOCKET},
    },
    probes::ProbeOptions,
};
use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
    sync::mpsc,
    time::{MissedTickBehavior, interval},
};
use tracing::{debug, error, info, warn};
use tracing_subscriber::EnvFilter;

use super::{
    args::{ExecutorArgs, FilterArgs, executor_requires_exec},
    record::seconds,
    session::Session,
};

#[derive(Debug, Args)]
#[command(mut_args(executor_requires_exec))]
pub struct AgentArgs {
    /// Unix socket that clients such as `watch --connect` use. Its directory is created with
    /// mode 0700 when missing, and the socket gets mode 0600.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Serve Prometheus metrics at http://ADDR/metrics, for example 127.0.0.1:9464. Off
    /// unless given.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Seconds between snapshots.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Run the overlay executor, controllable from clients. The executor options need it.
    #[arg(long)]
    exec: bool,
    #[command(flatten)]
    filters: FilterArgs,
    #[command(flatten)]
    executor: ExecutorArgs,
}

pub fn run(args: AgentArgs, log_level: &str) -> anyhow::Result<()> {
    init_logging(log_level)?;
    start(args).map_err(|e| {
        error!("agent failed: {e:#}");
        super::Logged.into()
    })
}

fn start(args: AgentArgs) -> anyhow::Result<()> {
    let period = seconds(args.interval, "--interval")?;
    let options = args.filters.probe_options()?;
    if args.exec {
        args.executor.config().validate()?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    runtime.block_on(serve(args, options, period))
}

/// Sends plain log lines to stderr for journald or a terminal, with colors only on a terminal.
fn init_logging(level: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(level).with_context(|| {
        format!("invalid log filter `{level}`; use error, warn, info, debug or trace")
    })?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    Ok(())
}

/// The agent's socket file, removed when the agent returns, whether it stopped or failed.
struct SocketFile(std::path::PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0) {
            warn!(socket = %self.0.display(), error = %e, "failed to remove the socket file");
        }
    }
}

async fn serve(args: AgentArgs, options: ProbeOptions, period: Duration) -> anyhow::Result<()> {
    info!(
        socket = %args.socket.display(),
        executor = args.exec,
        "agent starting: loading the kernel programs"
    );
    // The socket and the metrics address are taken first, so that a second agent or a busy
    // port fails before any program loads or any executor mount is made.
    let listener = socket::bind(&args.socket)?;
    let _socket_file = SocketFile(args.socket.clone());
    let metrics_listener = match args.metrics_addr {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("failed to listen on --metrics-addr {addr}"))?,
        ),
        None => None,
    };

    let executor = args.exec.then(|| args.executor.config());
    let mut session = Session::start(&options, executor)?;
    let tier = &session.collector.probes().tier;
    info!(tier = tier.kind.label(), reason = %tier.reason, "kernel programs loaded");
    info!(socket = %args.socket.display(), "listening for clients");

    let metrics = Arc::new(Metrics::default());
    let metrics_server = metrics_listener.map(|listener| {
        if let Ok(local) = listener.local_addr() {
            info!("serving Prometheus metrics at http://{local}/metrics");
        }
        tokio::spawn(http::serve(listener, Arc::clone(&metrics)))
    });

    let hub = Arc::new(Hub::default());
    let (requests_tx, requests_rx) = mpsc::unbounded_channel();
    let context = Arc::new(server::Context::new(
        Arc::clone(&hub),
        session.executor_control(),
        requests_tx,
    ));
    let socket_server = tokio::spawn(server::serve(listener, Arc::clone(&context)));

    let result = collect(&mut session, period, requests_rx, &hub, &metrics).await;

    // Clients get up to a second to take the final snapshot and the last events before their
    // connections are closed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while hub.has_pending() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    socket_server.abort();
    if let Some(task) = metrics_server {
        task.abort();
    }
    drop(session);
    info!("agent stopped and unloaded the kernel programs");
    result
}

/// Drains events and publishes a snapshot per `period` until SIGINT or SIGTERM.
///
/// This is `Session::run` with two additions for the agent: a map reading next to every
/// snapshot for the metrics' histograms, and a snapshot plus a reading right before each
/// statistics reset, so the exported counters continue across it.
async fn collect(
    session: &mut Session,
    period: Duration,
    mut requests: mpsc::UnboundedReceiver<AgentRequest>,
    hub: &Hub,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    let mut sigint = signal(SignalKind::interrupt()).context("failed to handle SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("failed to handle SIGTERM")?;
    let mut drain_tick = interval(DRAIN_PERIOD);
    drain_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut snapshot_tick = interval(period);
    snapshot_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    snapshot_tick.tick().await;

    loop {
        tokio::select! {
            _ = sigint.recv() => { info!("SIGINT received: stopping"); break; }
            _ = sigterm.recv() => { info!("SIGTERM received: stopping"); break; }
            Some(request) = requests.recv() => match request {
                AgentRequest::Reset => reset(session, hub, metrics)?,
            },
            readable = session.collector.ring_readable() => {
                readable.context("failed to wait on the ring buffer")?;
                drain(session, hub);
            }
            _ = drain_tick.tick() => drain(session, hub),
            () = hub.subscriptions_changed() => drain(session, hub),
            _ = snapshot_tick.tick() => publish(session, hub, metrics)?,
        }
    }
    publish(session, hub, metrics)
}

/// Reads the ring buffer into the event stream. Per-call syscall records are written only
/// while a client is subscribed to events, so the switch follows the subscriptions here.
fn drain(session: &mut Session, hub: &Hub) {
    let subscribed = hub.wants_events();
    match session.collector.set_syscall_records(subscribed) {
        Ok(()) => hub.set_records_on(subscribed),
        Err(e) => warn!("{e:#}"),
    }
    session.collector.drain(|event| {
        hub.publish_event(&event);
        true
    });
}

/// Publishes the snapshot of the interval so far to clients and to the metrics.
fn publish(session: &mut Session, hub: &Hub, metrics: &Metrics) -> anyhow::Result<()> {
    drain(session, hub);
    let mut snapshot = session
        .collector
        .snapshot(None)
        .context("failed to read the aggregate maps")?;
    if let Some(monitor) = &mut session.monitor {
        monitor.annotate(&mut snapshot);
    }
    let totals = session
        .collector
        .totals_since_reset()
        .context("failed to read the aggregate maps")?;
    let executor = session.executor.as_ref().map(|e| e.stats());
    metrics.update(totals, &snapshot, executor);
    hub.publish_snapshot(&snapshot);
    debug!(calls = snapshot.syscall_calls(), "published a snapshot");
    Ok(())
}

fn reset(session: &mut Session, hub: &Hub, metrics: &Metrics) -> anyhow::Result<()> {
    publish(session, hub, metrics)?;
    let totals = session
        .collector
        .totals_since_reset()
        .context("failed to read the aggregate maps")?;
    // NOTE: calls that complete between this reading and the one `reset` takes, a window of
    // microseconds, are missing from the exported counters.
    metrics.carry_before_reset(&totals);
    session
        .collector
        .reset()
        .context("failed to reset the statistics")?;
    if let Some(monitor) = &mut session.monitor {
        monitor.reset();
    }
    info!("statistics reset, while exported metrics keep counting");
    Ok(())
}
