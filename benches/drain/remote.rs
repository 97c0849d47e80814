//! A database on another host, simulated: a TCP proxy between user-sync and Postgres that
//! delays every byte by a fixed time in each direction (0.5 ms each way: a 1 ms round
//! trip, a database in the same availability zone).
//!
//! Threads rather than tasks: tokio's timer has a 1 ms resolution, which would round each
//! 0.5 ms delay up to between 1 and 2 ms; a thread's sleep is exact to tens of microseconds.
//! Each direction is a delay line: the reader stamps each chunk with the time it is due
//! and never waits, the writer sleeps until then, so delays do not add up along a stream.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub(crate) struct DelayProxy {
    pub port: u16,
}

impl DelayProxy {
    /// Listens on a free local port and forwards each connection to `upstream`.
    pub(crate) fn start(upstream: String, one_way: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                for s in [&client, &server] {
                    let _ = s.set_nodelay(true);
                }
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                delay_line(client, server, one_way);
                delay_line(s2, c2, one_way);
            }
        });
        Self { port }
    }
}

/// Copies `from` to `to`, each chunk `delay` after it was read.
fn delay_line(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    });
    std::thread::spawn(move || {
        for (due, chunk) in rx {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
