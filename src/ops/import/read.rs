//! Reading an export as a stream: a JSON array or JSON lines, parsed and decoded on a
//! thread of its own and handed over in batches through a bounded channel, so the whole
//! file is never in memory and parsing overlaps with the database's work.

use super::record::{Decoder, Invalid};
use crate::decide::Planned;
use serde::de::{Deserializer as _, SeqAccess, Visitor};
use serde_json::Value;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

/// A record's line in a JSON-lines file (or its 1-based item in an array), and the change
/// it stands for or why it is invalid.
pub type Numbered = (usize, Result<Planned, Invalid>);

/// A batch of records, or why the file cannot be read on (it ends the stream).
type Batch = Result<Vec<Numbered>, String>;

/// Batches in the channel at once: one being applied, one parsed ahead.
const AHEAD: usize = 2;

pub struct Records {
    rx: mpsc::Receiver<Batch>,
    /// A JSON array: records are numbered by item, not by line.
    pub array: bool,
    /// Bytes of the file read so far: the progress of a file whose record count is unknown.
    bytes: Arc<AtomicU64>,
}

impl Records {
    /// Starts reading `path` in batches of `batch` records.
    pub fn open(path: &Path, decoder: Decoder, batch: usize) -> io::Result<Self> {
        let file = File::open(path)?;
        let bytes = Arc::new(AtomicU64::new(0));
        let counted = Counted {
            inner: file,
            bytes: bytes.clone(),
        };
        let mut reader = BufReader::with_capacity(1 << 16, counted);
        let (first, blank_lines) = skip_space(&mut reader)?;
        let array = first == Some(b'[');
        let (tx, rx) = mpsc::channel(AHEAD);
        let batch = batch.max(1);
        std::thread::Builder::new()
            .name("import-read".into())
            .spawn(move || {
                let mut out = Sender {
                    tx,
                    decoder,
                    batch,
                    pending: Vec::with_capacity(batch),
                };
                let result = match first {
                    None => Ok(()),
                    Some(b'[') => read_array(reader, &mut out),
                    Some(_) => read_lines(reader, blank_lines, &mut out)
                        .map_err(|e| format!("cannot read the file: {e}")),
                };
                // What was read before an error is applied, then the error ends the stream.
                if out.flush()
                    && let Err(e) = result
                {
                    let _ = out.tx.blocking_send(Err(e));
                }
            })?;
        Ok(Self { rx, array, bytes })
    }

    /// The next batch; `None` at the end of the file.
    pub async fn next(&mut self) -> Option<Batch> {
        self.rx.recv().await
    }

    pub fn bytes_read(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

struct Counted {
    inner: File,
    bytes: Arc<AtomicU64>,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

struct Sender {
    tx: mpsc::Sender<Batch>,
    decoder: Decoder,
    batch: usize,
    pending: Vec<Numbered>,
}

impl Sender {
    /// Decodes one record; false once the importer has stopped listening.
    fn push(&mut self, line: usize, value: Result<Value, String>) -> bool {
        let decoded = self.decoder.decode(value);
        self.pending.push((line, decoded));
        if self.pending.len() < self.batch {
            return true;
        }
        self.flush()
    }

    fn flush(&mut self) -> bool {
        if self.pending.is_empty() {
            return !self.tx.is_closed();
        }
        let full = std::mem::replace(&mut self.pending, Vec::with_capacity(self.batch));
        self.tx.blocking_send(Ok(full)).is_ok()
    }
}

/// Consumes a UTF-8 byte-order mark (some Windows tools write one) and leading whitespace;
/// returns the first other byte (left unread), which tells an array from JSON lines, and
/// the line breaks passed, so that JSON lines keep their true line numbers.
fn skip_space(r: &mut impl BufRead) -> io::Result<(Option<u8>, usize)> {
    if r.fill_buf()?.starts_with(b"\xEF\xBB\xBF") {
        r.consume(3);
    }
    let mut newlines = 0;
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok((None, newlines));
        }
        let end = buf.iter().position(|b| !b.is_ascii_whitespace());
        let skipped = end.unwrap_or(buf.len());
        newlines += buf[..skipped].iter().filter(|&&b| b == b'\n').count();
        let first = end.map(|i| buf[i]);
        r.consume(skipped);
        if first.is_some() {
            return Ok((first, newlines));
        }
    }
}

fn read_lines(mut r: impl BufRead, before: usize, out: &mut Sender) -> io::Result<()> {
    // A record longer than a body may be is refused as soon as that much of it is read,
    // so one runaway line costs no more memory than one record may.
    let cap = out.decoder.rules.max_body;
    let mut line = Vec::new();
    let mut number = before;
    loop {
        line.clear();
        let Some(whole) = read_line(&mut r, &mut line, cap)? else {
            return Ok(());
        };
        number += 1;
        let parsed = if !whole {
            Err(format!("longer than MAX_BODY_BYTES ({cap} bytes)"))
        } else if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        } else {
            serde_json::from_slice(&line).map_err(|e| format!("not JSON: {e}"))
        };
        if !out.push(number, parsed) {
            return Ok(());
        }
    }
}

/// Reads up to the next line break, keeping at most `cap` bytes of the line in `line`:
/// `None` at the end of the file, otherwise whether the line fitted.
fn read_line(r: &mut impl BufRead, line: &mut Vec<u8>, cap: usize) -> io::Result<Option<bool>> {
    let mut read_any = false;
    let mut fits = true;
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(read_any.then_some(fits));
        }
        read_any = true;
        let end = buf.iter().position(|&b| b == b'\n');
        let part = &buf[..end.map_or(buf.len(), |i| i + 1)];
        if line.len() + part.len() > cap + 1 {
            fits = false;
        }
        if fits {
            line.extend_from_slice(part);
        }
        let used = part.len();
        r.consume(used);
        if end.is_some() {
            return Ok(Some(fits));
        }
    }
}

fn read_array(r: impl BufRead, out: &mut Sender) -> Result<(), String> {
    let mut de = serde_json::Deserializer::from_reader(r);
    let listening = (&mut de).deserialize_seq(Items { out, item: 0 });
    match listening {
        Ok(false) => Ok(()),
        Ok(true) => de
            .end()
            .map_err(|e| format!("not a JSON array: after the array: {e}")),
        Err(e) => Err(format!("not a JSON array: {e}")),
    }
}

/// Hands each item of the array to the importer as it is parsed; the value says whether
/// the importer still listened at the end.
struct Items<'a> {
    out: &'a mut Sender,
    item: usize,
}

impl<'de> Visitor<'de> for Items<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of user objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<bool, A::Error> {
        while let Some(value) = seq.next_element::<Value>()? {
            self.item += 1;
            if !self.out.push(self.item, Ok(value)) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
