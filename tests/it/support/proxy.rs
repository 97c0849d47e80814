//! TCP proxies in front of the local broker, for the tests that cut, silence or move one
//! worker's broker connection without touching anyone else's.

use super::{broker_addr, broker_credentials};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A TCP proxy in front of the local broker that the test can make unreachable: closing it
/// cuts every proxied connection and refuses new ones (accepted, then dropped at once)
/// until it is opened again. The machine's broker is never touched.
pub(crate) struct BrokerProxy {
    port: u16,
    open: Arc<AtomicBool>,
    cut: Arc<Mutex<CancellationToken>>,
}

impl BrokerProxy {
    pub(crate) async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(Mutex::new(CancellationToken::new()));
        let (is_open, cuts) = (open.clone(), cut.clone());
        let broker = broker_addr();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !is_open.load(Ordering::SeqCst) {
                    continue; // dropped: the worker's connect fails
                }
                let cut = cuts.lock().await.clone();
                let broker = broker.clone();
                tokio::spawn(async move {
                    let Ok(mut upstream) = tokio::net::TcpStream::connect(broker).await else {
                        return;
                    };
                    tokio::select! {
                        _ = cut.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                    }
                });
            }
        });
        Self { port, open, cut }
    }

    pub(crate) fn url(&self) -> String {
        format!(
            "amqp://{}@127.0.0.1:{}/%2f",
            broker_credentials(),
            self.port
        )
    }

    pub(crate) async fn close(&self) {
        self.open.store(false, Ordering::SeqCst);
        let mut cut = self.cut.lock().await;
        cut.cancel();
        *cut = CancellationToken::new();
    }

    pub(crate) fn reopen(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

/// A TCP forwarder on `listen` to the local broker. Connections accepted before `hold`
/// has passed are kept silent until then (a node that accepts TCP and answers nothing);
/// `open` counts the client connections not yet closed.
pub(crate) struct SilentProxy {
    pub(crate) addr: SocketAddr,
    pub(crate) open: Arc<AtomicUsize>,
}

pub(crate) async fn silent_proxy(listen: &str, hold: Duration) -> SilentProxy {
    let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let open = Arc::new(AtomicUsize::new(0));
    let counter = open.clone();
    let until = Instant::now() + hold;
    let broker = broker_addr();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let (counter, broker) = (counter.clone(), broker.clone());
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                // Silent until `until`, but noticing a client that gives up meanwhile.
                let (mut early, mut buf) = (Vec::new(), [0u8; 4096]);
                let gone = loop {
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => break false,
                        read = client.read(&mut buf) => match read {
                            Ok(0) | Err(_) => break true,
                            Ok(n) => early.extend_from_slice(&buf[..n]),
                        },
                    }
                };
                if !gone && let Ok(mut up) = tokio::net::TcpStream::connect(broker).await {
                    let _ = up.write_all(&early).await;
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
                }
                counter.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    SilentProxy { addr, open }
}
