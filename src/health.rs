//! Liveness: a watchdog the worker ticks, so `/healthz` says whether user-sync's own loops
//! make progress, and nothing about the broker, the database or the brake.
//!
//! Why not "200 while the process runs": a task wedged on a blocked thread, a runtime
//! starved by a busy loop, or a worker task that ended without ending the process would
//! all answer 200 for ever while nothing is consumed. Why not readiness's checks: in the
//! sidecar form a failing liveness probe restarts this container, and while it restarts
//! the Pod (backend included) is not Ready; restarting cannot fix an outage elsewhere.
//!
//! Who ticks: the worker, at every loop iteration (consume loop, reconnect loop, database
//! wait) and, through [`Watchdog::waiting`], every second of every wait on the broker or the
//! database. A wait on a dependency is progress as far as liveness goes (readiness reports
//! the dependency); a task whose thread is blocked, or that is never polled again, stops
//! ticking.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often a wait ticks. Far below any sensible `HEALTH_STALL_SECS` (at least 2).
const TICK_EVERY: Duration = Duration::from_secs(1);

pub struct Watchdog {
    origin: Instant,
    /// Milliseconds from `origin` to the last tick: an atomic, so ticking costs no lock
    /// on the hot path and a probe never waits for the worker.
    last_ms: AtomicU64,
    bound: Duration,
}

impl Watchdog {
    /// A watchdog ticked now, stale once no tick came for longer than `bound`.
    pub fn new(bound: Duration) -> Self {
        Self::started_at(Instant::now(), bound)
    }

    fn started_at(origin: Instant, bound: Duration) -> Self {
        Self {
            origin,
            last_ms: AtomicU64::new(0),
            bound,
        }
    }

    pub fn tick(&self) {
        self.tick_at(Instant::now());
    }

    fn tick_at(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.origin).as_millis();
        // fetch_max: a tick from a thread that read the clock earlier never moves it back.
        self.last_ms
            .fetch_max(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Time since the last tick, as of `now`.
    fn age_at(&self, now: Instant) -> Duration {
        let last = self.origin + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        now.saturating_duration_since(last)
    }

    /// `Some(age of the last tick)` when it is older than the bound: the loops are stuck.
    pub fn stalled(&self) -> Option<Duration> {
        self.stalled_at(Instant::now())
    }

    fn stalled_at(&self, now: Instant) -> Option<Duration> {
        let age = self.age_at(now);
        is_stale(age, self.bound).then_some(age)
    }

    /// Awaits `wait` (a wait on the broker or the database, or a sleep), ticking now and
    /// every second until it completes: the caller is alive while it waits, however long
    /// the dependency takes. Ticks come from this same task, so a blocked thread or a task
    /// that is no longer polled stops them.
    pub async fn waiting<F: Future>(&self, wait: F) -> F::Output {
        let mut wait = std::pin::pin!(wait);
        let mut every = tokio::time::interval(TICK_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                out = &mut wait => {
                    self.tick();
                    return out;
                }
                _ = every.tick() => self.tick(),
            }
        }
    }
}

/// `user-sync healthcheck`: asks the local `/healthz` at `addr` (an unspecified address,
/// `0.0.0.0` or `::`, meaning this host's loopback) with a plain HTTP/1.1 GET, all within
/// `limit`. `Ok` on a 200; otherwise what went wrong, in words.
pub async fn check(addr: SocketAddr, limit: Duration) -> Result<(), String> {
    let addr = probe_addr(addr);
    match tokio::time::timeout(limit, get_status(addr)).await {
        Ok(Ok(200)) => Ok(()),
        Ok(Ok(status)) => Err(format!("http://{addr}/healthz answered {status}")),
        Ok(Err(e)) => Err(format!("http://{addr}/healthz: {e}")),
        Err(_) => Err(format!("http://{addr}/healthz: no answer within {limit:?}")),
    }
}

/// Where to connect for a listener bound to `addr`: a wildcard is not an address to
/// connect to, and the probe runs inside the container, so it asks the loopback.
fn probe_addr(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

/// The status code of `GET /healthz`. A hand-written request rather than an HTTP client:
/// one GET does not justify a dependency in the image.
async fn get_status(addr: SocketAddr) -> std::io::Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    // The status line is all we need; a bounded read, whatever the peer sends.
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 1024 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    parse_status(&head)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response"))
}

/// The code of an `HTTP/1.x NNN ...` status line.
fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    let version = parts.next()?;
    let code = parts.next()?;
    (version.starts_with("HTTP/1.") && code.len() == 3)
        .then(|| code.parse().ok())
        .flatten()
}

/// The staleness rule: stale once the last tick is strictly older than the bound.
fn is_stale(age: Duration, bound: Duration) -> bool {
    age > bound
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUND: Duration = Duration::from_secs(60);

    #[test]
    fn stale_only_when_the_last_tick_is_older_than_the_bound() {
        let t0 = Instant::now();
        let dog = Watchdog::started_at(t0, BOUND);
        // Fresh at start, up to and including the bound.
        assert_eq!(dog.stalled_at(t0), None);
        assert_eq!(dog.stalled_at(t0 + BOUND), None);
        // One millisecond past it: stale, with the age.
        let late = t0 + BOUND + Duration::from_millis(1);
        assert_eq!(dog.stalled_at(late), Some(BOUND + Duration::from_millis(1)));
        // A tick makes it fresh again; the bound counts from the newest tick.
        dog.tick_at(t0 + Duration::from_secs(50));
        assert_eq!(dog.stalled_at(late), None);
        assert_eq!(dog.stalled_at(t0 + Duration::from_secs(110)), None);
        assert!(dog.stalled_at(t0 + Duration::from_secs(111)).is_some());
        // A tick read from the clock earlier never moves the last tick back.
        dog.tick_at(t0 + Duration::from_secs(10));
        assert_eq!(dog.stalled_at(t0 + Duration::from_secs(110)), None);
        // A probe whose clock reading precedes the tick is not stale (no underflow).
        assert_eq!(dog.stalled_at(t0), None);
    }

    #[test]
    fn the_probe_asks_the_loopback_for_a_wildcard_and_parses_the_status_line() {
        let probe = |a: &str| probe_addr(a.parse().unwrap()).to_string();
        assert_eq!(probe("0.0.0.0:8791"), "127.0.0.1:8791");
        assert_eq!(probe("[::]:8791"), "[::1]:8791");
        assert_eq!(probe("10.1.2.3:8791"), "10.1.2.3:8791");
        assert_eq!(
            parse_status(b"HTTP/1.1 200 OK\r\ncontent-length: 2"),
            Some(200)
        );
        assert_eq!(
            parse_status(b"HTTP/1.1 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status(b""), None);
    }

    #[test]
    fn the_rule_is_strict() {
        assert!(!is_stale(BOUND, BOUND));
        assert!(is_stale(BOUND + Duration::from_nanos(1), BOUND));
        assert!(!is_stale(Duration::ZERO, BOUND));
    }

    #[tokio::test]
    async fn a_long_wait_keeps_ticking_and_a_blocked_thread_does_not() {
        // Real time: a 3.2 s wait under a 1.5 s bound is never stale while it waits.
        let dog = Watchdog::new(Duration::from_millis(1500));
        let sample = async {
            for _ in 0..30 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                assert_eq!(dog.stalled(), None);
            }
        };
        tokio::join!(
            dog.waiting(tokio::time::sleep(Duration::from_millis(3200))),
            sample
        );
        // Nothing ticks while a thread is blocked, whatever it waits for.
        let dog = Watchdog::new(Duration::from_millis(50));
        std::thread::sleep(Duration::from_millis(120));
        assert!(dog.stalled().is_some());
    }
}
