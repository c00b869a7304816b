//! One measuring session: the probes, an optional overlay executor, and the loop that drains
//! events and publishes a snapshot per interval until it is stopped.

use std::time::Duration;

use anyhow::Context as _;
use mountscope_agent::{
    collect::{Collector, DRAIN_PERIOD, event::EventRecord},
    executor::{Executor, ExecutorConfig, ExecutorControl},
    monitor::ExecutorMonitor,
    probes::{ProbeOptions, Probes},
};
use mountscope_common::snapshot::Snapshot;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
    time::{MissedTickBehavior, interval},
};
use tracing::info;

/// Requests to the running loop.
#[derive(Debug)]
pub enum Control {
    /// Forget all figures so far.
    Reset,
    /// Finish: drain, publish a last snapshot, return.
    Stop,
}

pub struct Session {
    pub collector: Collector,
    pub executor: Option<Executor>,
    pub monitor: Option<ExecutorMonitor>,
}

impl Session {
    /// Loads the probes, then starts the executor when given a configuration. The probes come
    /// first so the executor's first mounts are counted.
    pub fn start(
        options: &ProbeOptions,
        executor: Option<ExecutorConfig>,
    ) -> anyhow::Result<Session> {
        let probes = Probes::load(options).context("failed to load the kernel programs")?;
        for note in &probes.notes {
            info!("{note}");
        }
        let collector = Collector::new(probes)?;
        let (executor, monitor) = match executor {
            Some(config) => {
                let executor =
                    Executor::start(config).context("failed to start the overlay executor")?;
                let monitor = ExecutorMonitor::new(executor.control());
                (Some(executor), Some(monitor))
            }
            None => (None, None),
        };
        Ok(Session {
            collector,
            executor,
            monitor,
        })
    }

    pub fn executor_control(&self) -> Option<ExecutorControl> {
        self.executor.as_ref().map(Executor::control)
    }

    fn snapshot(&mut self) -> anyhow::Result<Snapshot> {
        let mut snapshot = self.collector.snapshot(None)?;
        if let Some(monitor) = &mut self.monitor {
            monitor.annotate(&mut snapshot);
        }
        Ok(snapshot)
    }

    fn reset(&mut self) -> anyhow::Result<()> {
        self.collector.reset()?;
        if let Some(monitor) = &mut self.monitor {
            monitor.reset();
        }
        Ok(())
    }

    /// Runs until `controls` sends `Stop`, SIGINT or SIGTERM arrives, `duration` passes, or
    /// `on_snapshot` returns false. Every record read goes to `on_event`, which returns false
    /// when it could not take one (the loss is counted in the snapshot's drops). The last
    /// snapshot is published after a final drain, so nothing read is lost.
    pub async fn run(
        &mut self,
        period: Duration,
        duration: Option<Duration>,
        mut controls: mpsc::UnboundedReceiver<Control>,
        mut on_snapshot: impl FnMut(Snapshot) -> bool,
        mut on_event: impl FnMut(EventRecord) -> bool,
    ) -> anyhow::Result<()> {
        let mut sigint = signal(SignalKind::interrupt()).context("failed to handle SIGINT")?;
        let mut sigterm = signal(SignalKind::terminate()).context("failed to handle SIGTERM")?;
        let mut drain_tick = interval(DRAIN_PERIOD);
        drain_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut snapshot_tick = interval(period);
        snapshot_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        snapshot_tick.tick().await;
        let deadline = duration.map(|d| tokio::time::Instant::now() + d);
        let until_deadline = async move {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(until_deadline);
        let mut last_snapshot: Option<tokio::time::Instant> = None;

        loop {
            tokio::select! {
                _ = sigint.recv() => { info!("SIGINT: stopping"); break; }
                _ = sigterm.recv() => { info!("SIGTERM: stopping"); break; }
                _ = &mut until_deadline => break,
                control = controls.recv() => match control {
                    Some(Control::Reset) => {
                        self.collector.drain(&mut on_event);
                        self.reset()?;
                    }
                    Some(Control::Stop) | None => break,
                },
                readable = self.collector.ring_readable() => {
                    readable.context("failed to wait on the ring buffer")?;
                    self.collector.drain(&mut on_event);
                }
                _ = drain_tick.tick() => {
                    self.collector.drain(&mut on_event);
                }
                _ = snapshot_tick.tick() => {
                    self.collector.drain(&mut on_event);
                    last_snapshot = Some(tokio::time::Instant::now());
                    if !on_snapshot(self.snapshot()?) {
                        return Ok(());
                    }
                }
            }
        }
        self.collector.drain(&mut on_event);
        // When the deadline and the last tick came together, the tick's snapshot already
        // covers the run, and a final one would be an empty interval of a few milliseconds.
        let covered = last_snapshot.is_some_and(|at| at.elapsed() < period / 10);
        if !covered {
            on_snapshot(self.snapshot()?);
        }
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(executor) = self.executor.take() {
            executor.stop();
        }
    }
}
