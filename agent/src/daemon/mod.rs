//! The long-running agent's library side: the Unix socket that streams snapshots and events
//! to clients and takes their requests, and the Prometheus metrics it serves over HTTP.

pub mod client;
pub mod connection;
pub mod http;
pub mod metrics;
pub mod protocol;
pub mod server;
pub mod socket;
