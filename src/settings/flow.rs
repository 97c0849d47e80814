//! The throughput settings that depend on each other: `BATCH_SIZE`, `PIPELINE_DEPTH`, and
//! the `PREFETCH` and `DATABASE_MAX_CONNECTIONS` they size.

use super::source::Source;
use super::{SettingsError, err};

pub(super) struct Flow {
    pub prefetch: u16,
    pub batch_size: usize,
    pub depth: usize,
    pub connections: u32,
}

/// Read in the order the settings always were (`PREFETCH` first), so that of several
/// mistakes the same one is reported.
///
/// `PREFETCH` defaults to one batch more than are in flight: when a batch is acknowledged
/// the next is already delivered and is cut full. With only the batches in flight
/// prefetched, it was cut from whatever the broker had sent since the acknowledgement (in
/// the drain benchmark, batches far below `BATCH_SIZE`). At depth 1 that is twice the
/// batch, the default before there was a depth.
///
/// The price of a larger window: a broker node that freezes (rather than dies) keeps what
/// the queue had sent its consumer, up to `PREFETCH` deliveries, until the cluster drops
/// the node (`net_ticktime`, about a minute) or it runs again. They are not lost, only late.
///
/// `DATABASE_MAX_CONNECTIONS` defaults to one connection per batch in flight plus one, so
/// a `/readyz` probe never queues behind the batches. A pool smaller than the depth is
/// refused: a batch waiting for a connection past the pool's acquire timeout would look
/// like a database outage and pause the worker.
pub(super) fn read<F: Fn(&str) -> Option<String>>(src: &Source<F>) -> Result<Flow, SettingsError> {
    let given = |var: &'static str| src.text(var).is_some();
    let prefetch: Option<u16> = match given("PREFETCH") {
        true => Some(src.number("PREFETCH", 1, 65_535)?),
        false => None,
    };
    let batch_size: usize = src.number("BATCH_SIZE", 1, 10_000)?;
    let depth: usize = src.number("PIPELINE_DEPTH", 1, 8)?;
    let var = "DATABASE_MAX_CONNECTIONS";
    let connections = match given(var) {
        true => src.number(var, 1, 100)?,
        false => depth as u32 + 1,
    };
    if (connections as usize) < depth {
        let problem = format!(
            "{connections} is below PIPELINE_DEPTH ({depth}): each batch in flight needs a \
             connection of its own (and one more answers /readyz)"
        );
        return Err(err(var, problem));
    }
    let prefetch = prefetch.unwrap_or(((depth + 1) * batch_size).min(65_535) as u16);
    Ok(Flow {
        prefetch,
        batch_size,
        depth,
        connections,
    })
}

/// `MAX_HELD_BYTES`, read last: it must hold at least one body of `MAX_BODY_BYTES`, or a
/// body at the limit could never be taken.
pub(super) fn held_bytes<F: Fn(&str) -> Option<String>>(
    src: &Source<F>,
    max_body_bytes: usize,
) -> Result<usize, SettingsError> {
    let var = "MAX_HELD_BYTES";
    let held: usize = src.number(var, 1024, 1 << 40)?;
    if held < max_body_bytes {
        let problem = format!(
            "{held} cannot hold one body of MAX_BODY_BYTES ({max_body_bytes}): raise it or \
             lower MAX_BODY_BYTES"
        );
        return Err(err(var, problem));
    }
    Ok(held)
}
