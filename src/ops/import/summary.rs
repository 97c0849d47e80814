//! What an import did (or, in a dry run, would do), for people and for scripts.

use serde::Serialize;
use std::collections::BTreeMap;
use uuid::Uuid;

/// Of the invalid records and email conflicts, at most this many are listed (all are
/// counted): the report stays small whatever the export.
pub const LISTED: usize = 1000;

/// The outcomes that change the table.
const CHANGES: [&str; 5] = [
    "created",
    "updated",
    "reactivated",
    "deactivated",
    "backfilled",
];

#[derive(Debug, Default, Serialize)]
pub struct ImportSummary {
    pub records: usize,
    /// How records are numbered below: by `line` (JSON lines) or by `item` (an array).
    pub numbered_by: &'static str,
    /// The export's records by outcome: created, updated, reactivated, deactivated,
    /// backfilled, not-for-this-service, absent, stale.
    pub outcomes: BTreeMap<&'static str, usize>,
    /// `line` (or array item) and why, the first `LISTED`.
    pub invalid: Vec<(usize, String)>,
    pub invalid_total: usize,
    /// Lines whose email another active user holds (not applied), the first `LISTED`.
    pub email_conflicts: Vec<usize>,
    pub email_conflicts_total: usize,
    /// Counted before any change (with `--full`, or the brake on): the active users the
    /// import was to deactivate, checked against the brake.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_deactivate: Option<u64>,
    /// More than the brake admits: applying it needs (or needed) `--yes`.
    pub needs_yes: bool,
    /// With `--full`: what became of the users the export leaves out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconcile: Option<Reconcile>,
    /// With `--dry-run --json`: the auth ids of each change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ids: Option<BTreeMap<&'static str, Vec<Uuid>>>,
    pub dry_run: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct Reconcile {
    /// The export's time (RFC 3339): an event after it stands.
    pub as_of: String,
    /// The users left out, by outcome: deactivated, stale (a newer event stands), absent.
    pub absent: BTreeMap<&'static str, usize>,
    /// Users left out whose deactivation the database refused, and why (the first
    /// `LISTED`); they stay as they were.
    pub failed: Vec<(Uuid, String)>,
    pub failed_total: usize,
}

impl ImportSummary {
    pub fn changed(&self) -> usize {
        let absent = self.reconcile.as_ref().map(|r| &r.absent);
        let count =
            |m: &BTreeMap<&str, usize>| -> usize { CHANGES.iter().filter_map(|k| m.get(k)).sum() };
        count(&self.outcomes) + absent.map_or(0, count)
    }

    /// Some records were not applied: invalid, or their email is held by another user.
    pub fn rejected(&self) -> bool {
        let failed = self.reconcile.as_ref().map_or(0, |r| r.failed_total);
        self.invalid_total > 0 || self.email_conflicts_total > 0 || failed > 0
    }

    pub(super) fn left_out_failed(&mut self, user: Uuid, why: String) {
        if let Some(r) = self.reconcile.as_mut() {
            r.failed_total += 1;
            if r.failed.len() < LISTED {
                r.failed.push((user, why));
            }
        }
    }

    pub(super) fn invalid(&mut self, line: usize, why: String) {
        self.invalid_total += 1;
        if self.invalid.len() < LISTED {
            self.invalid.push((line, why));
        }
    }

    pub(super) fn email_conflict(&mut self, line: usize) {
        self.email_conflicts_total += 1;
        if self.email_conflicts.len() < LISTED {
            self.email_conflicts.push(line);
        }
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
        if let Some(r) = &self.reconcile {
            out += &format!("left out of the export as of {}:\n", r.as_of);
            for (outcome, n) in &r.absent {
                out += &format!("  {outcome}: {n}\n");
            }
            if r.failed_total > 0 {
                out += &format!(
                    "  refused by the database (left as they were): {}\n",
                    r.failed_total
                );
                for (user, why) in &r.failed {
                    out += &format!("    {user}: {why}\n");
                }
                out += &more(r.failed_total, r.failed.len());
            }
        }
        if let (Some(n), true) = (self.would_deactivate, self.needs_yes) {
            out +=
                &format!("{n} deactivations: more than the brake admits; applying needs --yes\n");
        }
        let by = self.numbered_by;
        out += &format!("invalid: {}\n", self.invalid_total);
        for (line, why) in &self.invalid {
            out += &format!("  {by} {line}: {why}\n");
        }
        out += &more(self.invalid_total, self.invalid.len());
        if self.email_conflicts_total > 0 {
            let lines: Vec<String> = self.email_conflicts.iter().map(|l| l.to_string()).collect();
            out += &format!(
                "email held by another active user (not applied): {}: {by}s {}\n",
                self.email_conflicts_total,
                lines.join(", ")
            );
            out += &more(self.email_conflicts_total, self.email_conflicts.len());
        }
        if self.dry_run {
            out += "dry run: nothing was written\n";
        }
        out
    }
}

fn more(total: usize, listed: usize) -> String {
    if total > listed {
        format!("  ... and {} more\n", total - listed)
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_capped_but_counted_and_changes_add_up() {
        let mut s = ImportSummary::default();
        for line in 0..LISTED + 5 {
            s.invalid(line, "bad".into());
        }
        assert_eq!((s.invalid.len(), s.invalid_total), (LISTED, LISTED + 5));
        assert!(s.to_text().contains("  ... and 5 more\n"));
        assert!(s.rejected());
        s.outcomes.insert("created", 2);
        s.outcomes.insert("stale", 7);
        s.reconcile = Some(Reconcile {
            absent: [("deactivated", 3), ("stale", 1)].into(),
            ..Default::default()
        });
        assert_eq!(s.changed(), 5);
    }
}
