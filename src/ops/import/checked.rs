//! An import that knows what it will deactivate before it changes anything.
//!
//! With `--full --as-of T` the export holds every user as of T: a user of this service it
//! leaves out is deactivated, with reason `absent_from_export`, unless an event newer than T
//! stands on them (the watermark rule, as for events, which also makes workers consuming
//! meanwhile harmless). A record is the user's state at T, or at its own later timestamp.
//!
//! A first read puts the export's ids into a table of the run's own, and the deactivations
//! are counted against the watermarks in one set-based statement: past the brake, nothing
//! is changed unless the operator confirmed. Then the users left out are deactivated
//! (first: their emails may be what a listed user needs) and the records applied. Nothing
//! holds the export in memory. A plain import reads once and checks each batch instead
//! (`Run::import_records`).

use super::{ImportError, Reconcile, Run, Stage, Tally};
use crate::decide::{self, EventKey};
use crate::store::ExportIds;
use std::time::SystemTime;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

pub(super) async fn run<P: FnMut(Stage, u64)>(run: &mut Run<'_, P>) -> Result<(), ImportError> {
    let file = std::fs::metadata(&run.path)
        .map_err(|e| ImportError::File(format!("{}: {e}", run.path.display())))?;
    if !file.is_file() {
        if run.opts.full {
            return Err(ImportError::Refused(
                "--full reads the export twice: give it a file, not a pipe".into(),
            ));
        }
        // A pipe is read once: a plain import from it is applied as it comes.
        return run.import_records().await;
    }
    if !run.opts.full {
        // One read: each batch is checked against the brake before it is applied.
        return run.import_records().await;
    }
    if let Some(as_of) = run.as_of.filter(|_| run.opts.full)
        && as_of > OffsetDateTime::now_utc() + run.settings.max_future_skew
    {
        return Err(ImportError::Refused(format!(
            "--as-of {} is in the future: every user it leaves out would stay deactivated \
             against events until then",
            as_of.format(&Rfc3339).expect("formats")
        )));
    }
    let ids = ExportIds::create(run.store).await?;
    let result = passes(run, &ids, stamp(&file)).await;
    // The table goes whatever happened; a failure to drop it is only worth a warning (the
    // next run drops it after a day).
    if let Err(error) = ids.drop_table().await {
        tracing::warn!(%error, "could not drop the export's id table");
    }
    result
}

/// What tells that a file changed between two reads.
fn stamp(file: &std::fs::Metadata) -> (u64, Option<SystemTime>) {
    (file.len(), file.modified().ok())
}

async fn passes<P: FnMut(Stage, u64)>(
    run: &mut Run<'_, P>,
    ids: &ExportIds,
    before: (u64, Option<SystemTime>),
) -> Result<(), ImportError> {
    let valid = record_ids(run, ids).await?;
    unchanged_since(run, before)?;
    if valid == 0 {
        return Err(ImportError::Refused(
            "the export holds no valid record: a full reconcile would deactivate every user".into(),
        ));
    }
    ids.seal().await?;
    let as_of = run.as_of.expect("clap requires --as-of with --full");
    let left_out = decide::absent_from_export(Uuid::nil(), as_of).key;
    let would = ids.would_deactivate(Some(left_out)).await?;
    run.summary.would_deactivate = Some(would);
    run.summary.needs_yes = admit(run, would).await?;
    run.summary.reconcile = Some(Reconcile {
        as_of: as_of.format(&Rfc3339).expect("formats"),
        ..Default::default()
    });
    deactivate_left_out(run, ids, as_of, left_out, would).await?;
    run.import_records().await?;
    unchanged_since(run, before)
}

fn unchanged_since<P>(
    run: &Run<'_, P>,
    before: (u64, Option<SystemTime>),
) -> Result<(), ImportError> {
    let now = std::fs::metadata(&run.path)
        .map_err(|e| ImportError::File(format!("{}: {e}", run.path.display())))?;
    if stamp(&now) == before {
        return Ok(());
    }
    Err(ImportError::File(format!(
        "{} changed while it was being imported: rerun once it is complete",
        run.path.display()
    )))
}

/// The first read: every record's user (an invalid record's too, when its id can be read:
/// it is not left out). Returns how many records were valid.
async fn record_ids<P: FnMut(Stage, u64)>(
    run: &mut Run<'_, P>,
    ids: &ExportIds,
) -> Result<usize, ImportError> {
    let mut records = run.open()?;
    let mut valid = 0;
    while let Some(batch) = records.next().await {
        let (mut planned, mut present) = (Vec::new(), Vec::new());
        for (_, decoded) in batch.map_err(ImportError::File)? {
            match decoded {
                Ok(p) => {
                    valid += 1;
                    planned.push(p);
                }
                Err(invalid) => present.extend(invalid.user_id),
            }
        }
        ids.add(&planned, &present).await?;
        (run.progress)(Stage::Checking, records.bytes_read());
    }
    Ok(valid)
}

/// The users the export leaves out, a page at a time, through the same path as events.
async fn deactivate_left_out<P: FnMut(Stage, u64)>(
    run: &mut Run<'_, P>,
    ids: &ExportIds,
    as_of: OffsetDateTime,
    left_out: EventKey,
    would: u64,
) -> Result<(), ImportError> {
    let mut after = None;
    let mut done = 0;
    loop {
        let page = ids.absent(after, left_out, run.opts.batch_size).await?;
        let Some(&last) = page.last() else {
            return Ok(());
        };
        after = Some(last);
        let planned: Vec<_> = page
            .iter()
            .map(|&id| decide::absent_from_export(id, as_of))
            .collect();
        run.import_batch(&planned, None, Tally::LeftOut).await?;
        done += page.len() as u64;
        (run.progress)(Stage::Deactivating { of: would }, done);
    }
}

/// The deactivations go through the brake like any other: past `DEACTIVATION_BRAKE`, or
/// beyond the room its shared window has left now (the workers' deactivations count too,
/// and an engaged brake has none), nothing is changed unless the operator confirmed it
/// (`--yes`). The check takes no room: each applied batch counts what it deactivated.
/// Returns whether `--yes` is (or, in a dry run, would be) needed.
pub(super) async fn admit<P>(run: &Run<'_, P>, would: u64) -> Result<bool, ImportError> {
    let (limit, window) = (
        run.settings.deactivation_brake,
        run.settings.deactivation_brake_window,
    );
    if limit == 0 || would == 0 {
        return Ok(false);
    }
    let room = run.store.brake_room(limit, window).await? as u64;
    let needs_yes = would > room;
    if needs_yes && !run.opts.confirmed && !run.opts.dry_run {
        let why = if would > u64::from(limit) {
            format!("more than DEACTIVATION_BRAKE ({limit})")
        } else {
            format!(
                "more than the brake admits now ({room}: others within the last {} s, or the \
                 brake is engaged: `user-sync brake status`)",
                window.as_secs()
            )
        };
        return Err(ImportError::Refused(format!(
            "the export would deactivate {would} users, {why}; check the list with \
             --dry-run --json, then rerun with --yes"
        )));
    }
    Ok(needs_yes)
}
