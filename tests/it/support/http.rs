//! The worker's HTTP endpoints as a probe or a scraper sees them.

use std::net::{SocketAddr, TcpListener};

/// A plain HTTP/1.1 GET: (status code, body).
pub(crate) async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

/// The value of the first line of `/metrics` that starts with `line_start` (a series
/// with its labels, or a name and a space).
pub(crate) async fn metric(http: SocketAddr, line_start: &str) -> Option<f64> {
    let (_, body) = http_get(http, "/metrics").await;
    body.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The node the worker says it consumes from: the `user_sync_broker_address` label.
pub(crate) async fn address_label(http: SocketAddr) -> Option<String> {
    let (_, metrics) = http_get(http, "/metrics").await;
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix("user_sync_broker_address{address=\"")?;
        Some(rest.split_once('"')?.0.to_string())
    })
}

/// How many times the worker's broker session was made again.
pub(crate) async fn reconnects(http: SocketAddr) -> u64 {
    metric(http, "user_sync_broker_reconnects_total ")
        .await
        .map_or(0, |n| n as u64)
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
