//! A TCP proxy in front of the local broker, for the tests that cut one worker's broker
//! connection without touching anyone else's.

use crate::helpers::{broker_addr, broker_credentials};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// A TCP proxy in front of the local broker that the test can make unreachable: closing it
/// cuts every proxied connection and refuses new ones (accepted, then dropped at once)
/// until it is opened again. The machine's broker is never touched.
pub struct BrokerProxy {
    port: u16,
    open: Arc<AtomicBool>,
    cut: Arc<Mutex<CancellationToken>>,
}

impl BrokerProxy {
    pub async fn start() -> Self {
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

    pub fn url(&self) -> String {
        format!(
            "amqp://{}@127.0.0.1:{}/%2f",
            broker_credentials(),
            self.port
        )
    }

    pub async fn close(&self) {
        self.open.store(false, Ordering::SeqCst);
        let mut cut = self.cut.lock().await;
        cut.cancel();
        *cut = CancellationToken::new();
    }

    pub fn reopen(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}
