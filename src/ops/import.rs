//! `user-sync import FILE`: backfill the users that existed before this service joined.
//!
//! Each record becomes a `user.created` event at its own `timestamp` (or `--as-of`) and
//! goes through the worker's decoder, decision and SQL, so the watermarks protect every
//! newer live event: an import never overrides one, and a rerun is all `stale`.
//! `created` is also the weakest kind at an equal timestamp.

use crate::decide::{self, Planned};
use crate::event::{self, Decoded};
use crate::membership::Membership;
use crate::pipeline::{Trail, apply_isolated};
use crate::settings::Settings;
use crate::store::{Commit, EventMeta, EventResult, Store};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub struct ImportOptions {
    /// The time of records without their own `timestamp`.
    pub as_of: Option<OffsetDateTime>,
    pub dry_run: bool,
    pub batch_size: usize,
}

/// What an import did (or, in a dry run, would do). `line` is the line of a JSON-lines
/// file or the 1-based item of a JSON array.
#[derive(Debug, Default, Serialize)]
pub struct ImportSummary {
    pub records: usize,
    /// Per decision: applied, reactivated, deactivated, backfilled, not-for-this-service,
    /// absent, stale.
    pub outcomes: BTreeMap<&'static str, usize>,
    pub invalid: Vec<(usize, String)>,
    pub email_conflicts: Vec<usize>,
    pub dry_run: bool,
}

impl ImportSummary {
    pub fn changed(&self) -> usize {
        ["applied", "reactivated", "deactivated", "backfilled"]
            .iter()
            .filter_map(|k| self.outcomes.get(k))
            .sum()
    }

    pub fn to_text(&self) -> String {
        let mut out = format!("records: {}\n", self.records);
        let verb = if self.dry_run {
            "would change"
        } else {
            "changed"
        };
        out += &format!("{verb}: {}\n", self.changed());
        for (outcome, n) in &self.outcomes {
            out += &format!("  {outcome}: {n}\n");
        }
        out += &format!("invalid: {}\n", self.invalid.len());
        for (line, why) in &self.invalid {
            out += &format!("  line {line}: {why}\n");
        }
        if !self.email_conflicts.is_empty() {
            let lines: Vec<String> = self.email_conflicts.iter().map(|l| l.to_string()).collect();
            out += &format!(
                "email held by another active user (not applied): lines {}\n",
                lines.join(", ")
            );
        }
        if self.dry_run {
            out += "dry run: nothing was written\n";
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    File(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// A record and its line (or item) number; unreadable JSON is a record that failed.
pub type Record = (usize, Result<Value, String>);

/// Splits the file into records: a JSON array, or one JSON object per line.
pub fn records(text: &str) -> Result<Vec<Record>, ImportError> {
    if text.trim_start().starts_with('[') {
        let items: Vec<Value> = serde_json::from_str(text)
            .map_err(|e| ImportError::File(format!("not a JSON array: {e}")))?;
        return Ok(items
            .into_iter()
            .enumerate()
            .map(|(i, v)| (i + 1, Ok(v)))
            .collect());
    }
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let parsed = serde_json::from_str(l).map_err(|e| format!("not JSON: {e}"));
            (i + 1, parsed)
        })
        .collect())
}

/// The event a record stands for, as the auth system would have published it.
fn as_event(record: &Value, as_of: Option<&str>) -> Result<Vec<u8>, String> {
    let user = record.as_object().ok_or("not a JSON object")?;
    let timestamp = match (user.get("timestamp"), as_of) {
        (Some(t), _) => t.clone(),
        (None, Some(t)) => Value::String(t.to_string()),
        (None, None) => return Err("no timestamp, and no --as-of given".into()),
    };
    let mut user = user.clone();
    user.remove("timestamp");
    let id = user.get("id").cloned().unwrap_or(Value::Null);
    let body =
        json!({"event_type": "user.created", "user_id": id, "user": user, "timestamp": timestamp});
    Ok(body.to_string().into_bytes())
}

/// Imports `text` in batches; `progress(done)` is called after each batch.
pub async fn import(
    settings: &Settings,
    text: &str,
    opts: &ImportOptions,
    mut progress: impl FnMut(usize),
) -> Result<ImportSummary, ImportError> {
    let as_of = opts.as_of.map(|t| t.format(&Rfc3339).expect("formats"));
    let membership = Membership::new(&settings.service_name, &settings.all_access_roles);
    let mut summary = ImportSummary {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    // The worker's rules but the signature: a record dated far ahead would freeze its user.
    let rules = event::Rules {
        max_body: settings.max_body_bytes,
        latest: Some(OffsetDateTime::now_utc() + settings.max_future_skew),
        signed: false,
    };
    let mut events: Vec<(usize, Planned)> = Vec::new();
    for (line, record) in records(text)? {
        summary.records += 1;
        let decoded = record
            .and_then(|r| as_event(&r, as_of.as_deref()))
            .and_then(|body| event::decode_with(&body, "user.created", &rules).map_err(|r| r.0));
        match decoded {
            Ok(Decoded::Event(e)) => events.push((line, decide::plan(&e, &membership))),
            Ok(Decoded::Unknown { .. }) => unreachable!("imports are user.created"),
            Err(why) => summary.invalid.push((line, why)),
        }
    }

    let store = Store::new(settings)?;
    store.migrate().await?;
    store.prepare_target().await.map_err(|p| {
        ImportError::File(
            p.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })?;
    let commit = if opts.dry_run {
        Commit::RollBack
    } else {
        Commit::Yes
    };
    let mut done = summary.invalid.len();
    for chunk in events.chunks(opts.batch_size.max(1)) {
        let planned: Vec<Planned> = chunk.iter().map(|(_, p)| p.clone()).collect();
        let (users, losers) = decide::reduce(&planned);
        let now = OffsetDateTime::now_utc();
        let meta: Vec<EventMeta> = planned
            .iter()
            .map(|_| EventMeta {
                event_id: None,
                event_type: "import",
                received_at: now,
            })
            .collect();
        let trail = (settings.audit_retention_days > 0).then(|| Trail {
            service: &settings.service_name,
            meta: &meta,
        });
        for (i, result) in apply_isolated(&store, &planned, &users, &losers, commit, trail).await? {
            match result {
                EventResult::Done(o) => *summary.outcomes.entry(o.as_str()).or_default() += 1,
                EventResult::EmailConflict => summary.email_conflicts.push(chunk[i].0),
                EventResult::Rejected(why) => summary.invalid.push((chunk[i].0, why)),
            }
        }
        done += chunk.len();
        progress(done);
    }
    store.pool().close().await;
    summary.invalid.sort();
    summary.email_conflicts.sort();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_and_arrays_number_their_records() {
        let lines = "{\"id\":1}\n\n  \nnot json\n{\"id\":2}\n";
        let r = records(lines).unwrap();
        let numbers: Vec<usize> = r.iter().map(|(l, _)| *l).collect();
        assert_eq!(numbers, [1, 4, 5]);
        assert!(r[1].1.is_err());
        let array = records("[{\"id\":1}, {\"id\":2}]").unwrap();
        assert_eq!(array.iter().map(|(l, _)| *l).collect::<Vec<_>>(), [1, 2]);
        assert!(records("[{\"id\":1},").is_err());
    }

    #[test]
    fn a_record_needs_a_timestamp_or_as_of() {
        let r = json!({"id": "x", "email": "a@example.com"});
        assert!(as_event(&r, None).is_err());
        let body: Value =
            serde_json::from_slice(&as_event(&r, Some("2024-01-01T00:00:00Z")).unwrap()).unwrap();
        assert_eq!(body["timestamp"], "2024-01-01T00:00:00Z");
        assert_eq!(body["user_id"], "x");
        let own = json!({"id": "x", "timestamp": "2023-05-05T00:00:00Z"});
        let body: Value =
            serde_json::from_slice(&as_event(&own, Some("2024-01-01T00:00:00Z")).unwrap()).unwrap();
        assert_eq!(
            body["timestamp"], "2023-05-05T00:00:00Z",
            "a record's own time wins"
        );
        assert!(body["user"].get("timestamp").is_none());
    }
}
