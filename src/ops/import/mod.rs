//! `user-sync import FILE`: backfill the users that existed before this service joined;
//! with `--full --as-of T`, also deactivate the users a full export leaves out.
//!
//! Each record becomes a `user.created` event at its own `timestamp` (or `--as-of`) and
//! goes through the worker's decoder, decision and SQL, so the watermarks protect every
//! newer live event: an import never overrides one, and a rerun is all `stale`.
//! `created` is also the weakest kind at an equal timestamp. The file is read as a stream
//! (`read`), so memory does not grow with the export.

mod checked;
mod error;
mod read;
mod record;
mod summary;

pub use error::ImportError;
pub use summary::{ImportSummary, LISTED, Reconcile};

use crate::decide::{self, Outcome, Planned};
use crate::event::Rules;
use crate::membership::Membership;
use crate::pipeline::{Trail, isolate_failures};
use crate::settings::Settings;
use crate::store::{Commit, EventMeta, EventResult, Store, config_problem};
use read::Records;
use record::Decoder;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Debug, Default)]
pub struct ImportOptions {
    /// The time of records without their own `timestamp`; with `full`, the export's time.
    pub as_of: Option<OffsetDateTime>,
    pub dry_run: bool,
    pub batch_size: usize,
    /// The export holds every user: deactivate those it leaves out.
    pub full: bool,
    /// The operator confirmed deactivating more users than the brake allows.
    pub confirmed: bool,
    /// Collect the auth ids of each change (for `--dry-run --json`).
    pub list_ids: bool,
}

/// Where an import is, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `--full`, first read: the export's ids into the database; `done` is bytes read.
    Checking,
    /// Applying the records; `done` is bytes read.
    Importing,
    /// `--full`: deactivating the users left out; `done` of `of` users.
    Deactivating { of: u64 },
}

/// Imports `path`; `progress(stage, done)` is called after each batch.
pub async fn import(
    settings: &Settings,
    path: &Path,
    opts: &ImportOptions,
    progress: impl FnMut(Stage, u64),
) -> Result<ImportSummary, ImportError> {
    let store = Store::new(settings)?;
    if let Err(e) = store.ping().await {
        return Err(match config_problem(&e) {
            Some(problem) => ImportError::Config(problem),
            None => ImportError::Database(e),
        });
    }
    store.verify_session().await?;
    store.set_up().await?;
    let mut run = Run {
        settings,
        store: &store,
        opts,
        // Cut to the microsecond, down, as Postgres keeps times: an event even 1 us after
        // the export must stay newer than the export's deactivations.
        as_of: opts.as_of.map(|t| {
            t.replace_nanosecond(t.nanosecond() / 1000 * 1000)
                .expect("a whole microsecond")
        }),
        path: path.to_path_buf(),
        summary: ImportSummary {
            dry_run: opts.dry_run,
            ids: opts.list_ids.then(Default::default),
            ..Default::default()
        },
        progress,
    };
    let result = checked::run(&mut run).await;
    store.pool().close().await;
    result?;
    run.summary.invalid.sort();
    run.summary.email_conflicts.sort();
    Ok(run.summary)
}

/// One import's state: where it reads, what it has done.
struct Run<'a, P> {
    settings: &'a Settings,
    store: &'a Store,
    opts: &'a ImportOptions,
    as_of: Option<OffsetDateTime>,
    path: PathBuf,
    summary: ImportSummary,
    progress: P,
}

/// A plain import with the brake on, read once: before each batch, what it would
/// deactivate is counted against the room the brake's window has left; past it the import
/// stops (the batches before stay applied) unless the operator confirmed. A dry run counts
/// all of it and says whether `--yes` would be needed.
struct BatchBrake {
    would: u64,
}

impl BatchBrake {
    fn new<P>(run: &Run<'_, P>) -> Option<Self> {
        let on = !run.opts.full && run.settings.deactivation_brake > 0 && !run.opts.confirmed;
        on.then_some(Self { would: 0 })
    }

    async fn check<P: FnMut(Stage, u64)>(
        &mut self,
        run: &mut Run<'_, P>,
        planned: &[Planned],
        first_line: Option<usize>,
    ) -> Result<(), ImportError> {
        let deactivating: Vec<&Planned> = planned.iter().filter(|p| p.deactivates()).collect();
        let n = run.store.would_deactivate(&deactivating).await?;
        self.would += n;
        run.summary.would_deactivate = Some(self.would);
        if n == 0 {
            return Ok(());
        }
        if run.opts.dry_run {
            run.summary.needs_yes = checked::admit(run, self.would).await?;
            return Ok(());
        }
        match checked::admit(run, n).await {
            Err(ImportError::Refused(why)) => Err(ImportError::Stopped(format!(
                "{why}; the records before {} {} are applied",
                run.summary.numbered_by,
                first_line.unwrap_or(0)
            ))),
            other => other.map(|_| ()),
        }
    }
}

/// Which tally a batch's results go to.
#[derive(Clone, Copy)]
enum Tally {
    Records,
    LeftOut,
}

impl<P: FnMut(Stage, u64)> Run<'_, P> {
    fn open(&self) -> Result<Records, ImportError> {
        let s = self.settings;
        let decoder = Decoder {
            as_of: self.as_of.map(|t| t.format(&Rfc3339).expect("formats")),
            at_least: self.as_of.filter(|_| self.opts.full),
            // The worker's rules but the signature: a record dated far ahead would freeze
            // its user.
            rules: Rules {
                max_body: s.max_body_bytes,
                latest: Some(OffsetDateTime::now_utc() + s.max_future_skew),
                signed: false,
            },
            membership: Membership::new(&s.service_name, &s.all_access_roles),
            target: s.target_table.clone(),
        };
        Records::open(&self.path, decoder, self.opts.batch_size)
            .map_err(|e| ImportError::File(format!("{}: {e}", self.path.display())))
    }

    /// Reads the export and applies its records, a batch at a time.
    async fn import_records(&mut self) -> Result<(), ImportError> {
        let mut records = self.open()?;
        self.summary.numbered_by = if records.array { "item" } else { "line" };
        let mut brake = BatchBrake::new(self);
        while let Some(batch) = records.next().await {
            let mut lines = Vec::new();
            let mut planned = Vec::new();
            for (line, decoded) in batch.map_err(ImportError::File)? {
                self.summary.records += 1;
                match decoded {
                    Ok(p) => {
                        lines.push(line);
                        planned.push(p);
                    }
                    Err(invalid) => self.summary.invalid(line, invalid.why),
                }
            }
            if let Some(brake) = brake.as_mut() {
                brake.check(self, &planned, lines.first().copied()).await?;
            }
            self.import_batch(&planned, Some(&lines), Tally::Records)
                .await?;
            (self.progress)(Stage::Importing, records.bytes_read());
        }
        Ok(())
    }

    /// Applies one batch as the worker would (isolating a failing record) and tallies the
    /// results; `lines` of the records, none for the users a reconcile left out. The
    /// deactivations it applied count in the brake's shared window.
    async fn import_batch(
        &mut self,
        planned: &[Planned],
        lines: Option<&[usize]>,
        tally: Tally,
    ) -> Result<(), ImportError> {
        if planned.is_empty() {
            return Ok(());
        }
        let ids: Vec<_> = planned.iter().map(|p| p.user_id).collect();
        let had_row = self.store.with_rows(&ids).await?;
        let (users, losers) = decide::reduce(planned);
        let meta = EventMeta {
            event_id: None,
            event_type: match tally {
                Tally::Records => "import",
                Tally::LeftOut => "reconcile",
            },
            received_at: OffsetDateTime::now_utc(),
        };
        let meta = vec![meta; planned.len()];
        let trail = (self.settings.audit_retention_days > 0).then(|| Trail {
            service: &self.settings.service_name,
            meta: &meta,
        });
        let commit = if self.opts.dry_run {
            Commit::RollBack
        } else {
            Commit::Yes
        };
        let results = isolate_failures(self.store, planned, &users, &losers, commit, trail).await?;
        let mut deactivated = 0;
        for (i, result) in results {
            let outcome = match result {
                EventResult::Done(Outcome::Applied) if !had_row.contains(&ids[i]) => "created",
                EventResult::Done(Outcome::Applied) => "updated",
                EventResult::Done(o) => o.as_str(),
                EventResult::EmailConflict => {
                    self.summary.email_conflict(lines.map_or(0, |l| l[i]));
                    continue;
                }
                EventResult::Rejected(why) => {
                    match lines {
                        Some(lines) => self.summary.invalid(lines[i], why),
                        None => self.summary.left_out_failed(ids[i], why),
                    }
                    continue;
                }
            };
            deactivated += usize::from(outcome == "deactivated");
            let counts = match (tally, self.summary.reconcile.as_mut()) {
                (Tally::LeftOut, Some(r)) => &mut r.absent,
                _ => &mut self.summary.outcomes,
            };
            *counts.entry(outcome).or_default() += 1;
            let listed = ["created", "updated", "reactivated", "deactivated"];
            if let (Some(ids_of), true) = (self.summary.ids.as_mut(), listed.contains(&outcome)) {
                ids_of.entry(outcome).or_default().push(ids[i]);
            }
        }
        if self.settings.deactivation_brake > 0 && !self.opts.dry_run {
            self.store.brake_count(deactivated).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
