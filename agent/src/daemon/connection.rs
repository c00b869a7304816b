//! One client connection: a reader that parses requests and a writer that sends replies and
//! the subscribed streams. A client that falls behind or stops reading is disconnected.

use std::{os::fd::AsFd as _, sync::Arc, time::Duration};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixStream, unix::OwnedWriteHalf},
    sync::{broadcast, mpsc},
};
use tracing::{debug, warn};

use super::{
    protocol::{self, ControlAction, MAX_REQUEST_BYTES, Request},
    server::{AgentRequest, Context},
};
use crate::executor::ExecutorControl;

/// How long one write to a client may block before the client counts as stuck.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Replies queued for the writer. Clients send one request at a time in practice.
const REPLY_QUEUE: usize = 64;

/// How often a client that half-closed its side is checked for having closed the socket.
const HANGUP_CHECK_PERIOD: Duration = Duration::from_secs(1);

/// Malformed requests logged at warn level per client. Later ones are logged at debug.
const LOGGED_BAD_REQUESTS: u32 = 5;

/// A message from the reader to the writer.
enum Outgoing {
    Line(String),
    Subscribe { snapshots: bool, events: bool },
}

/// Serves one client until it disconnects or is dropped, and returns why it ended.
pub async fn run(stream: UnixStream, id: u64, context: &Arc<Context>) -> String {
    let (read, write) = stream.into_split();
    let (outgoing_tx, outgoing_rx) = mpsc::channel(REPLY_QUEUE);
    let reader_context = Arc::clone(context);
    let mut reader = tokio::spawn(async move {
        read_requests(BufReader::new(read), id, &reader_context, outgoing_tx).await
    });
    let writer = write_lines(write, outgoing_rx, context);
    tokio::pin!(writer);

    // The writer goes on after the reader's end of file while the client has subscriptions,
    // so a client may half-close its side after subscribing. The reader is aborted when the
    // writer drops the client first.
    tokio::select! {
        reason = &mut writer => {
            reader.abort();
            reason
        }
        read_end = &mut reader => {
            let write_reason = writer.await;
            match read_end {
                Ok(None) => write_reason,
                Ok(Some(read_reason)) => read_reason,
                Err(e) => format!("reader task failed: {e}"),
            }
        }
    }
}

async fn read_requests(
    mut reader: impl AsyncBufRead + Unpin,
    id: u64,
    context: &Context,
    outgoing: mpsc::Sender<Outgoing>,
) -> Option<String> {
    let mut buf = Vec::new();
    let mut bad_requests = 0u32;
    loop {
        let line = match read_line(&mut reader, &mut buf).await {
            Ok(RequestLine::Line) => String::from_utf8_lossy(&buf).into_owned(),
            Ok(RequestLine::TooLong) => {
                bad_requests += 1;
                log_bad_request(id, bad_requests, "request line longer than 64 KiB");
                let reply = protocol::error_line(format!(
                    "request line longer than {MAX_REQUEST_BYTES} bytes; it was discarded"
                ));
                if outgoing.send(Outgoing::Line(reply)).await.is_err() {
                    return None;
                }
                continue;
            }
            Ok(RequestLine::Eof) => return None,
            Err(e) => return Some(format!("read failed: {e}")),
        };
        if line.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<Request>(&line) {
            Ok(request) => handle(request, id, context),
            Err(e) => {
                bad_requests += 1;
                log_bad_request(id, bad_requests, &e.to_string());
                Handled::Reply(protocol::error_line(format!("invalid request: {e}")))
            }
        };
        let message = match reply {
            Handled::Reply(line) => Outgoing::Line(line),
            Handled::Subscribe { snapshots, events } => {
                debug!(client = id, snapshots, events, "client subscribed");
                Outgoing::Subscribe { snapshots, events }
            }
        };
        if outgoing.send(message).await.is_err() {
            return None;
        }
    }
}

fn log_bad_request(id: u64, count: u32, reason: &str) {
    if count <= LOGGED_BAD_REQUESTS {
        warn!(client = id, count, "rejected a malformed request: {reason}");
    } else {
        debug!(client = id, count, "rejected a malformed request: {reason}");
    }
}

enum Handled {
    Reply(String),
    Subscribe { snapshots: bool, events: bool },
}

fn handle(request: Request, id: u64, context: &Context) -> Handled {
    match request {
        Request::Subscribe { snapshots, events } => Handled::Subscribe { snapshots, events },
        Request::Reset(false) => Handled::Reply(protocol::ok_line()),
        Request::Reset(true) => {
            if context.requests.send(AgentRequest::Reset).is_err() {
                return Handled::Reply(protocol::error_line("the agent is stopping"));
            }
            tracing::info!(client = id, "client reset the statistics");
            Handled::Reply(protocol::ok_line())
        }
        Request::Control(action) => {
            let Some(control) = &context.executor else {
                return Handled::Reply(protocol::error_line(
                    "the agent runs without the overlay executor; start it with --exec",
                ));
            };
            match apply(control, &action) {
                Ok(()) => {
                    tracing::info!(client = id, ?action, "client changed the executor");
                    Handled::Reply(protocol::ok_line())
                }
                Err(message) => {
                    warn!(
                        client = id,
                        ?action,
                        "rejected an executor change: {message}"
                    );
                    Handled::Reply(protocol::error_line(message))
                }
            }
        }
    }
}

/// Applies one executor change, returning the executor's reason when it rejects the value.
pub fn apply(control: &ExecutorControl, action: &ControlAction) -> Result<(), String> {
    let settings = control.settings();
    let result = match *action {
        ControlAction::ToggleStrategy => {
            control.set_strategy(settings.strategy.toggled());
            Ok(())
        }
        ControlAction::SetStrategy(strategy) => {
            control.set_strategy(strategy);
            Ok(())
        }
        ControlAction::SetBuilders(builders) => control.set_builders(builders),
        ControlAction::SetLayers(layers) => control.set_layers(layers),
        ControlAction::ToggleIdmap => control.set_idmap(!settings.idmap),
        ControlAction::SetIdmap(idmap) => control.set_idmap(idmap),
        ControlAction::SetMountApi(api) => {
            control.set_mount_api(api);
            Ok(())
        }
        ControlAction::NextMountApi => {
            control.set_mount_api(settings.mount_api.next());
            Ok(())
        }
        ControlAction::TogglePause => {
            control.set_paused(!settings.paused);
            Ok(())
        }
        ControlAction::SetPaused(paused) => {
            control.set_paused(paused);
            Ok(())
        }
    };
    result.map_err(|e| e.to_string())
}

/// Writes replies and subscribed lines until the client is gone or dropped, and returns why
/// it ended. After the reader's end of file it goes on while any subscription is active.
async fn write_lines(
    mut write: OwnedWriteHalf,
    mut outgoing: mpsc::Receiver<Outgoing>,
    context: &Context,
) -> String {
    let mut snapshots: Option<broadcast::Receiver<Arc<str>>> = None;
    let mut events: Option<broadcast::Receiver<Arc<str>>> = None;
    let mut reader_done = false;
    // After the reader's end of file, a client that only half-closed still reads. One that
    // closed the socket is found by polling for a hang-up, because no write may come to
    // fail while its subscriptions carry nothing.
    let mut hangup_check = tokio::time::interval(HANGUP_CHECK_PERIOD);
    loop {
        let line: Arc<str> = tokio::select! {
            message = outgoing.recv(), if !reader_done => match message {
                Some(Outgoing::Line(line)) => line.into(),
                Some(Outgoing::Subscribe { snapshots: want_snapshots, events: want_events }) => {
                    resubscribe(&mut snapshots, want_snapshots, || context.hub.subscribe_snapshots());
                    resubscribe(&mut events, want_events, || context.hub.subscribe_events());
                    context.hub.sync_subscriptions(want_events).await;
                    protocol::ok_line().into()
                }
                None if snapshots.is_none() && events.is_none() => {
                    return "closed by the client".into();
                }
                None => {
                    reader_done = true;
                    continue;
                }
            },
            _ = hangup_check.tick(), if reader_done => {
                if peer_hung_up(&write) {
                    return "closed by the client".into();
                }
                continue;
            },
            received = recv(&mut snapshots) => match received {
                Ok(line) => line,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    return format!("dropped: {n} snapshot lines behind");
                }
                Err(broadcast::error::RecvError::Closed) => return "the agent is stopping".into(),
            },
            received = recv(&mut events) => match received {
                Ok(line) => line,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    return format!(
                        "dropped: {n} event lines behind; subscribe to snapshots only or read faster"
                    );
                }
                Err(broadcast::error::RecvError::Closed) => return "the agent is stopping".into(),
            },
        };
        match tokio::time::timeout(WRITE_TIMEOUT, write.write_all(line.as_bytes())).await {
            Ok(Ok(())) => {}
            Ok(Err(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                return "the client closed the connection".into();
            }
            Ok(Err(e)) => return format!("write failed: {e}"),
            Err(_) => {
                return format!("dropped: did not read for {} s", WRITE_TIMEOUT.as_secs());
            }
        }
    }
}

/// Returns whether the client closed its socket (POLLHUP), as opposed to a half-close.
fn peer_hung_up(write: &OwnedWriteHalf) -> bool {
    let stream: &UnixStream = write.as_ref();
    let mut fds = [PollFd::new(stream.as_fd(), PollFlags::empty())];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
        && fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR))
}

fn resubscribe(
    slot: &mut Option<broadcast::Receiver<Arc<str>>>,
    wanted: bool,
    subscribe: impl FnOnce() -> broadcast::Receiver<Arc<str>>,
) {
    match (wanted, slot.is_some()) {
        (true, false) => *slot = Some(subscribe()),
        (false, true) => *slot = None,
        _ => {}
    }
}

/// Receives from a subscription, or waits forever when there is none.
async fn recv(
    slot: &mut Option<broadcast::Receiver<Arc<str>>>,
) -> Result<Arc<str>, broadcast::error::RecvError> {
    match slot {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

enum RequestLine {
    /// A complete line is in the buffer, without its newline.
    Line,
    /// The line passed [`MAX_REQUEST_BYTES`], so it was read up to its newline and discarded.
    TooLong,
    Eof,
}

/// Reads one line into `buf`, keeping at most [`MAX_REQUEST_BYTES`] of it in memory. A last
/// line without a newline counts as a line.
async fn read_line(
    reader: &mut (impl AsyncBufRead + Unpin),
    buf: &mut Vec<u8>,
) -> std::io::Result<RequestLine> {
    buf.clear();
    let mut too_long = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(match (too_long, buf.is_empty()) {
                (true, _) => RequestLine::TooLong,
                (false, true) => RequestLine::Eof,
                (false, false) => RequestLine::Line,
            });
        }
        let newline = available.iter().position(|&b| b == b'\n');
        let chunk = &available[..newline.unwrap_or(available.len())];
        if !too_long {
            if buf.len() + chunk.len() > MAX_REQUEST_BYTES {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        let used = newline.map_or(available.len(), |i| i + 1);
        reader.consume(used);
        if newline.is_some() {
            return Ok(if too_long {
                RequestLine::TooLong
            } else {
                RequestLine::Line
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8]) -> Vec<String> {
        let mut reader = BufReader::with_capacity(1024, input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        loop {
            match read_line(&mut reader, &mut buf).await.unwrap() {
                RequestLine::Line => out.push(String::from_utf8(buf.clone()).unwrap()),
                RequestLine::TooLong => out.push("<too long>".into()),
                RequestLine::Eof => return out,
            }
        }
    }

    #[tokio::test]
    async fn splits_lines() {
        assert_eq!(lines(b"a\nbc\n").await, ["a", "bc"]);
    }

    #[tokio::test]
    async fn keeps_last_line_without_newline() {
        assert_eq!(lines(b"a\nbc").await, ["a", "bc"]);
    }

    #[tokio::test]
    async fn discards_oversized_line_and_continues() {
        let mut input = vec![b'x'; MAX_REQUEST_BYTES + 10];
        input.extend_from_slice(b"\nnext\n");
        assert_eq!(lines(&input).await, ["<too long>", "next"]);
    }

    #[tokio::test]
    async fn line_of_exactly_the_limit_is_kept() {
        let mut input = vec![b'y'; MAX_REQUEST_BYTES];
        input.push(b'\n');
        let read = lines(&input).await;
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].len(), MAX_REQUEST_BYTES);
    }
}
