//! The client side of the agent socket, for `watch --connect` and `record --connect`.

use std::{
    io,
    path::{Path, PathBuf},
};

use thiserror::Error;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines},
    net::{
        UnixStream,
        unix::{OwnedReadHalf, OwnedWriteHalf},
    },
};

use super::protocol::Request;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error(
        "failed to connect to the agent socket `{path}`; start `mountscope agent` or pass \
         the socket it uses"
    )]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to send a request to the agent")]
    Send(#[source] io::Error),
    #[error("failed to read from the agent")]
    Read(#[source] io::Error),
}

/// A connection to a running agent.
pub struct Client {
    lines: Lines<BufReader<OwnedReadHalf>>,
    writer: OwnedWriteHalf,
}

impl Client {
    pub async fn connect(path: &Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| ClientError::Connect {
                path: path.to_path_buf(),
                source,
            })?;
        let (read, writer) = stream.into_split();
        Ok(Client {
            lines: BufReader::new(read).lines(),
            writer,
        })
    }

    /// Sends one request line.
    pub async fn send(&mut self, request: &Request) -> Result<(), ClientError> {
        let mut line =
            serde_json::to_string(request).map_err(|e| ClientError::Send(io::Error::other(e)))?;
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .await
            .map_err(ClientError::Send)
    }

    /// Returns the next line from the agent, or `None` once the agent closed the connection.
    /// Cancel-safe, so it can be one branch of a `select!`.
    pub async fn next_line(&mut self) -> Result<Option<String>, ClientError> {
        self.lines.next_line().await.map_err(ClientError::Read)
    }
}
