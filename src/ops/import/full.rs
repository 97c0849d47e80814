//! `import --full --as-of T`: the export holds every user as of `T`, so a user of this
//! service it leaves out (or lists as no longer for this service) is deactivated, with
//! reason `absent_from_export`, unless an event newer than `T` stands on them: the
//! watermark rule, as for events, which also makes workers consuming meanwhile harmless.
//!
//! Three passes, none holding the export in memory: the export's ids go into a table of
//! their own and the deactivations are counted before anything changes (the brake, and
//! an empty export, refuse here); then the records are applied as by a plain import; then
//! the users left out are deactivated, a page at a time, found by one set-based statement.

use super::{ImportError, Reconcile, Run, Stage, Tally};
use crate::decide;
use crate::store::ExportIds;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

pub(super) async fn reconcile<P: FnMut(Stage, u64)>(
    run: &mut Run<'_, P>,
) -> Result<(), ImportError> {
    let as_of = run.opts.as_of.ok_or_else(|| {
        ImportError::Refused("--full needs --as-of: the time the export was taken".into())
    })?;
    if as_of > OffsetDateTime::now_utc() + run.settings.max_future_skew {
        return Err(ImportError::Refused(format!(
            "--as-of {} is in the future: every user it leaves out would stay deactivated \
             against events until then",
            as_of.format(&Rfc3339).expect("formats")
        )));
    }
    let ids = ExportIds::create(run.store).await?;
    let result = passes(run, &ids, as_of).await;
    // The table goes whatever happened; a failure to drop it is only worth a warning (the
    // next run drops it after a day).
    if let Err(error) = ids.drop_table().await {
        tracing::warn!(%error, "could not drop the export's id table");
    }
    result
}

async fn passes<P: FnMut(Stage, u64)>(
    run: &mut Run<'_, P>,
    ids: &ExportIds,
    as_of: OffsetDateTime,
) -> Result<(), ImportError> {
    let valid = record_ids(run, ids).await?;
    if valid == 0 {
        return Err(ImportError::Refused(
            "the export holds no valid record: a full reconcile would deactivate every user".into(),
        ));
    }
    ids.seal().await?;
    let left_out = decide::absent_from_export(Uuid::nil(), as_of).key;
    let would = ids.would_deactivate(left_out).await?;
    let needs_yes = admit(run, would).await?;
    run.summary.reconcile = Some(Reconcile {
        as_of: as_of.format(&Rfc3339).expect("formats"),
        would_deactivate: would,
        needs_yes,
        absent: Default::default(),
    });
    run.import().await?;

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
        run.apply(&planned, None, Tally::LeftOut).await?;
        done += page.len() as u64;
        (run.progress)(Stage::Deactivating { of: would }, done);
    }
}

/// The first read: every valid record's id and what it would do, into `ids`. A file that
/// cannot be read fails here, before any change. Returns the valid records' count.
async fn record_ids<P: FnMut(Stage, u64)>(
    run: &mut Run<'_, P>,
    ids: &ExportIds,
) -> Result<usize, ImportError> {
    let mut records = run.open()?;
    let mut valid = 0;
    while let Some(batch) = records.next().await {
        let planned: Vec<_> = batch
            .map_err(ImportError::File)?
            .into_iter()
            .filter_map(|(_, p)| p.ok())
            .collect();
        valid += planned.len();
        ids.add(&planned).await?;
        (run.progress)(Stage::Checking, records.bytes_read());
    }
    Ok(valid)
}

/// The deactivations go through the brake like any other: past `DEACTIVATION_BRAKE`, or
/// beyond the room its shared window has left, the reconcile is refused unless the
/// operator confirmed it (`--yes`). Admitted ones count in the window the workers share.
/// A dry run only reports whether `--yes` would be needed.
async fn admit<P>(run: &Run<'_, P>, would: u64) -> Result<bool, ImportError> {
    let (limit, window) = (
        run.settings.deactivation_brake,
        run.settings.deactivation_brake_window,
    );
    if limit == 0 || would == 0 {
        return Ok(false);
    }
    let over = would > u64::from(limit);
    if run.opts.dry_run {
        return Ok(over);
    }
    if over && !run.opts.confirmed {
        return Err(ImportError::Refused(format!(
            "the export would deactivate {would} users, more than DEACTIVATION_BRAKE \
             ({limit}); check the list with --dry-run --json, then rerun with --yes"
        )));
    }
    let want = usize::try_from(would).unwrap_or(usize::MAX);
    let granted = run.store.brake_admit(limit, window, want).await?;
    if granted < want && !run.opts.confirmed {
        return Err(ImportError::Refused(format!(
            "the deactivation brake admits {granted} of the {would} deactivations now \
             (others within the last {} s, or the brake is engaged: `user-sync brake status`); \
             wait, or rerun with --yes",
            window.as_secs()
        )));
    }
    Ok(over)
}
