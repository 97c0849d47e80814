//! The socket under a lapin connection, made here so that an attempt given up on can be torn
//! down.
//!
//! lapin connects on an OS thread of its own (its I/O loop) and has no way to cancel a
//! half-made connection: dropping the future that awaits the handshake leaves that thread
//! and its socket waiting on a peer that accepted TCP and says nothing (a frozen node), for
//! as long as it stays silent. So we hand lapin the stream through `Connection::connector`
//! and keep a duplicate of its descriptor: `Attempt`, dropped before the handshake
//! finished, shuts the socket down, the I/O loop reads the end of the stream, fails the
//! handshake and exits, and the node sees the connection closed.

use lapin::tcp::{AMQPUriTcpExt, AsyncTcpStream, OwnedTLSConfig, TLSConfig};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Connection, ConnectionProperties};
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};
use tokio_util::sync::CancellationToken;

/// One connection attempt's socket; shut down when dropped unless `keep` was called.
pub(super) struct Attempt {
    shared: Arc<Shared>,
    kept: bool,
}

#[derive(Default)]
struct Shared {
    /// Fired when the attempt is abandoned: a TCP connect or TLS handshake still under way
    /// in lapin's thread stops too (a node that drops SYNs would hold it for minutes).
    abandoned: CancellationToken,
    /// A duplicate of the socket's descriptor, once connected.
    socket: Mutex<Option<OwnedFd>>,
}

impl Attempt {
    /// Connects to `uri` (its host and port as given), with TLS for `amqps://`.
    pub(super) async fn connect(
        uri: AMQPUri,
        tls: OwnedTLSConfig,
    ) -> (Self, lapin::Result<Connection>) {
        let shared = Arc::new(Shared::default());
        let attempt = Attempt {
            shared: shared.clone(),
            kept: false,
        };
        let runtime = match lapin::runtime::default_runtime() {
            Ok(runtime) => runtime,
            Err(e) => return (attempt, Err(e)),
        };
        // No auto-recover (`ConnectionProperties::default()`): our supervisor owns
        // reconnection (docs/facts.md#auto-recover-can-stall-silently), so a lost
        // connection surfaces as an error.
        let connected = Connection::connector(
            uri,
            runtime,
            async move |uri, runtime| {
                let open = async {
                    // Plain TCP first, so the descriptor is ours before any TLS handshake.
                    let mut plain = uri.clone();
                    plain.scheme = AMQPScheme::AMQP;
                    let stream = plain
                        .connect_with_config_async(TLSConfig::default(), &runtime)
                        .await?;
                    if let AsyncTcpStream::Plain(tcp) = &stream {
                        shared.keep_socket(tcp.get_ref().as_fd().try_clone_to_owned()?)?;
                    }
                    match uri.scheme {
                        AMQPScheme::AMQPS => {
                            stream.into_tls(&uri.authority.host, tls.as_ref()).await
                        }
                        AMQPScheme::AMQP => Ok(stream),
                    }
                };
                tokio::select! {
                    opened = open => opened.map_err(lapin::Error::from),
                    _ = shared.abandoned.cancelled() => Err(abandoned().into()),
                }
            },
            ConnectionProperties::default(),
        )
        .await;
        (attempt, connected)
    }

    /// The connection is made: the duplicate descriptor is closed, the socket left alone.
    pub(super) fn keep(mut self) {
        self.shared.socket().take();
        self.kept = true;
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        let mut socket = self.shared.socket();
        self.shared.abandoned.cancel();
        if let Some(fd) = socket.take() {
            // Shutdown, not close: lapin's thread holds the other descriptor; shut down,
            // its next read ends the stream and the thread goes.
            let _ = std::net::TcpStream::from(fd).shutdown(Shutdown::Both);
        }
    }
}

impl Shared {
    fn socket(&self) -> std::sync::MutexGuard<'_, Option<OwnedFd>> {
        self.socket.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `fd`, unless the attempt was abandoned meanwhile (the lock orders the two).
    fn keep_socket(&self, fd: OwnedFd) -> io::Result<()> {
        let mut socket = self.socket();
        if self.abandoned.is_cancelled() {
            return Err(abandoned());
        }
        *socket = Some(fd);
        Ok(())
    }
}

fn abandoned() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection attempt abandoned")
}
