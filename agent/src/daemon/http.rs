//! A minimal HTTP/1.1 server for `GET /metrics`: one request per connection, then close.

use std::{sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};
use tracing::{debug, error, warn};

use super::metrics::{CONTENT_TYPE, Metrics};

/// Maximum request head read. Scrapers send a few hundred bytes.
const MAX_HEAD_BYTES: usize = 8 * 1024;

/// Time a client has to send its request head and read the response.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `/metrics` on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                error!(error = %e, "failed to accept a metrics connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            match tokio::time::timeout(IO_TIMEOUT, respond(stream, &metrics)).await {
                Ok(Ok(status)) => debug!(%peer, status, "served a metrics request"),
                Ok(Err(e)) => warn!(%peer, error = %e, "metrics request failed"),
                Err(_) => warn!(%peer, "metrics request timed out after {IO_TIMEOUT:?}"),
            }
        });
    }
}

/// Reads one request head, writes the response and returns the status code sent.
async fn respond(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<u16> {
    let head = read_head(&mut stream).await?;
    let (status, reason, content_type, body) = match route(&head) {
        Route::Metrics => (200, "OK", CONTENT_TYPE, metrics.render()),
        Route::NotFound => (
            404,
            "Not Found",
            "text/plain",
            "only /metrics is served\n".into(),
        ),
        Route::MethodNotAllowed => (
            405,
            "Method Not Allowed",
            "text/plain",
            "only GET is supported\n".into(),
        ),
        Route::BadRequest => (400, "Bad Request", "text/plain", "invalid request\n".into()),
    };
    let allow = if status == 405 { "Allow: GET\r\n" } else { "" };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         {allow}Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await?;
    Ok(status)
}

/// Reads until the blank line that ends the head, or [`MAX_HEAD_BYTES`], or end of file.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD_BYTES {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

fn route(head: &str) -> Route {
    let request_line = head.lines().next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") {
        return Route::BadRequest;
    }
    let path = target.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET", "/metrics") => Route::Metrics,
        (_, "/metrics") => Route::MethodNotAllowed,
        _ => Route::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_route() {
        assert_eq!(
            route("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics
        );
    }

    #[test]
    fn query_string_ignored() {
        assert_eq!(route("GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Route::Metrics);
    }

    #[test]
    fn other_path_not_found() {
        assert_eq!(route("GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
    }

    #[test]
    fn post_not_allowed() {
        assert_eq!(
            route("POST /metrics HTTP/1.1\r\n\r\n"),
            Route::MethodNotAllowed
        );
    }

    #[test]
    fn garbage_is_bad_request() {
        assert_eq!(route("hello\r\n\r\n"), Route::BadRequest);
    }
}
