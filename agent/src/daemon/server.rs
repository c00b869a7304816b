//! The socket server: accepts clients and fans each snapshot and event out to all of them
//! through broadcast channels, so a slow client never holds up the agent.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use mountscope_common::snapshot::Snapshot;
use serde::Serialize;
use tokio::{
    io::AsyncWriteExt as _,
    net::UnixListener,
    sync::{Notify, broadcast, mpsc, watch},
    task::JoinSet,
};
use tracing::{error, info, warn};

use super::{
    connection,
    protocol::{self, Reply},
};
use crate::executor::ExecutorControl;

/// Snapshot lines kept for a client that has not read them yet: a minute at the default
/// one-second interval.
const SNAPSHOT_BACKLOG: usize = 64;

/// Event lines kept for a client that has not read them yet. A client further behind is
/// disconnected.
const EVENT_BACKLOG: usize = 16 * 1024;

/// Maximum clients served at once. Further connections get an error line and are closed.
pub const MAX_CLIENTS: usize = 64;

/// Requests from clients that the agent's collection loop carries out.
#[derive(Debug, PartialEq, Eq)]
pub enum AgentRequest {
    /// Reset the statistics shown in snapshots.
    Reset,
}

/// How long a subscribe to events waits for the collection loop to turn the per-call
/// records on before it replies anyway.
const RECORDS_ON_TIMEOUT: Duration = Duration::from_secs(1);

/// The broadcast side: each published line is serialized once and shared by every client.
pub struct Hub {
    snapshots: broadcast::Sender<Arc<str>>,
    events: broadcast::Sender<Arc<str>>,
    /// Wakes the collection loop when subscriptions change.
    subscriptions_changed: Notify,
    /// Whether the kernel programs write per-call records, as last set by the loop.
    records_on: watch::Sender<bool>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            snapshots: broadcast::channel(SNAPSHOT_BACKLOG).0,
            events: broadcast::channel(EVENT_BACKLOG).0,
            subscriptions_changed: Notify::new(),
            records_on: watch::channel(false).0,
        }
    }
}

impl Hub {
    /// Sends a snapshot line to every client subscribed to snapshots.
    pub fn publish_snapshot(&self, snapshot: &Snapshot) {
        if self.snapshots.receiver_count() == 0 {
            return;
        }
        let reply: Reply<'_, ()> = Reply::Snapshot(snapshot);
        let line = protocol::line(&reply);
        // An error here only means the last subscriber left since the check above.
        let _ = self.snapshots.send(line.into());
    }

    /// Sends an event line to every client subscribed to events. Events are serialized only
    /// while someone subscribes.
    pub fn publish_event<E: Serialize>(&self, event: &E) {
        if self.events.receiver_count() == 0 {
            return;
        }
        let line = protocol::line(&Reply::Event(event));
        let _ = self.events.send(line.into());
    }

    /// Returns whether some client is subscribed to events.
    pub fn wants_events(&self) -> bool {
        self.events.receiver_count() > 0
    }

    /// Completes when a client's subscriptions changed since the last call.
    pub async fn subscriptions_changed(&self) {
        self.subscriptions_changed.notified().await;
    }

    /// Stores whether the kernel programs now write per-call records.
    pub fn set_records_on(&self, on: bool) {
        self.records_on.send_replace(on);
    }

    /// Wakes the collection loop after a client's subscriptions changed. With `events`, it
    /// also waits until the loop has turned the per-call records on (at most
    /// `RECORDS_ON_TIMEOUT`), so that the client's `ok` reply means events are flowing.
    pub(super) async fn sync_subscriptions(&self, events: bool) {
        self.subscriptions_changed.notify_one();
        if events {
            let mut records_on = self.records_on.subscribe();
            let _ = tokio::time::timeout(RECORDS_ON_TIMEOUT, records_on.wait_for(|on| *on)).await;
        }
    }

    /// Returns whether some client has not yet taken every published line.
    pub fn has_pending(&self) -> bool {
        !self.snapshots.is_empty() || !self.events.is_empty()
    }

    pub(super) fn subscribe_snapshots(&self) -> broadcast::Receiver<Arc<str>> {
        self.snapshots.subscribe()
    }

    pub(super) fn subscribe_events(&self) -> broadcast::Receiver<Arc<str>> {
        self.events.subscribe()
    }
}

/// State shared by every client task.
pub struct Context {
    pub hub: Arc<Hub>,
    /// `None` when the agent runs without the overlay executor.
    pub executor: Option<ExecutorControl>,
    pub requests: mpsc::UnboundedSender<AgentRequest>,
    clients: AtomicUsize,
    next_id: AtomicU64,
}

impl Context {
    pub fn new(
        hub: Arc<Hub>,
        executor: Option<ExecutorControl>,
        requests: mpsc::UnboundedSender<AgentRequest>,
    ) -> Context {
        Context {
            hub,
            executor,
            requests,
            clients: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
        }
    }

    /// Clients connected now.
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }
}

/// Accepts clients until the task is aborted, which also ends every client task.
pub async fn serve(listener: UnixListener, context: Arc<Context>) {
    let mut clients = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => accept(stream, &context, &mut clients).await,
                Err(e) => {
                    error!(error = %e, "failed to accept a client on the agent socket");
                    // Errors such as EMFILE repeat at once, so a short pause avoids a busy loop.
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            Some(joined) = clients.join_next(), if !clients.is_empty() => {
                if let Err(e) = joined
                    && e.is_panic()
                {
                    error!(error = %e, "a client task panicked, and the agent keeps serving");
                }
            }
        }
    }
}

async fn accept(
    mut stream: tokio::net::UnixStream,
    context: &Arc<Context>,
    clients: &mut JoinSet<()>,
) {
    let id = context.next_id.fetch_add(1, Ordering::Relaxed);
    if context.clients.load(Ordering::Relaxed) >= MAX_CLIENTS {
        warn!(
            client = id,
            max = MAX_CLIENTS,
            "rejected a client: too many clients connected"
        );
        let line = protocol::error_line(format!(
            "too many clients: the agent serves at most {MAX_CLIENTS} at once"
        ));
        let _ = stream.write_all(line.as_bytes()).await;
        return;
    }
    context.clients.fetch_add(1, Ordering::Relaxed);
    let peer = peer_label(&stream);
    info!(client = id, peer = %peer, "client connected");
    let context = Arc::clone(context);
    clients.spawn(async move {
        let reason = connection::run(stream, id, &context).await;
        context.clients.fetch_sub(1, Ordering::Relaxed);
        info!(client = id, reason = %reason, "client disconnected");
    });
}

/// Formats the connecting process as `pid:<n> uid:<n>`, from `SO_PEERCRED`.
fn peer_label(stream: &tokio::net::UnixStream) -> String {
    match stream.peer_cred() {
        Ok(cred) => match cred.pid() {
            Some(pid) => format!("pid:{pid} uid:{}", cred.uid()),
            None => format!("uid:{}", cred.uid()),
        },
        Err(e) => format!("unknown ({e})"),
    }
}
