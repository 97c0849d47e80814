//! One schema, one service: the schema records the service it syncs for (and the `[target]`
//! table it converges), so that two services sharing a database and a default
//! `DATABASE_SCHEMA` cannot each deactivate the other's users as `access_revoked`.
//!
//! The claim is the schema's comment, not a table: a new migration would stop the release
//! before this one from starting (docs/migrations.md). The first claimant of a schema
//! without a claim (one migrated by an earlier release) wins; every claimant takes one
//! advisory lock for the whole database first, so two services starting at once cannot
//! both claim, on one schema or on one target table through two schemas.

use super::Store;
use super::setup::SetupError;
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, Transaction};

/// The advisory lock every claimant holds while it reads the claims and writes its own.
const CLAIM_LOCK: i64 = 0x7573_6572_7379_6e63;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Claim {
    service: String,
    /// The `[target]` table as `schema.table`, if the service converges one.
    #[serde(default)]
    target: Option<String>,
}

/// The comment's shape: one key, so that a comment of someone else's never parses as ours.
#[derive(Serialize, Deserialize)]
struct Comment {
    user_sync: Claim,
}

impl Claim {
    fn parse(comment: &str) -> Option<Claim> {
        serde_json::from_str::<Comment>(comment)
            .ok()
            .map(|c| c.user_sync)
    }

    fn text(&self) -> String {
        serde_json::to_string(&Comment {
            user_sync: self.clone(),
        })
        .unwrap_or_default()
    }
}

impl Store {
    fn own_claim(&self) -> Claim {
        Claim {
            service: self.service.clone(),
            target: self
                .target_table
                .as_ref()
                .map(|m| format!("{}.{}", m.schema, m.table)),
        }
    }

    /// Claims the schema (after the migrations created it) for `SERVICE_NAME`, or refuses
    /// it when another service holds it or the `[target]` table. Writes only when the
    /// claim is missing or names another target table, so a read-only database whose
    /// schema is already ours passes.
    pub async fn claim(&self) -> Result<(), SetupError> {
        self.settle_claim(true).await
    }

    /// The same refusal for a command that only reads (`explain`): nothing is written.
    pub async fn check_claim(&self) -> Result<(), SetupError> {
        self.settle_claim(false).await
    }

    async fn settle_claim(&self, write: bool) -> Result<(), SetupError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(CLAIM_LOCK)
            .execute(&mut *tx)
            .await?;
        let comments: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT nspname::text, obj_description(oid, 'pg_namespace') FROM pg_namespace",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mine = self.own_claim();
        let mut held = None;
        let mut foreign = None;
        for (schema, comment) in &comments {
            let Some(comment) = comment else { continue };
            match Claim::parse(comment) {
                Some(claim) if *schema == self.schema => held = Some(claim),
                None if *schema == self.schema => foreign = Some(comment),
                Some(other) => self.check_target(&mine, schema, &other)?,
                None => {}
            }
        }
        if let Some(comment) = foreign {
            // Someone else's comment is never overwritten; nor is a schema refused that ran
            // before claims existed (`public` has one): the schema stays unclaimed.
            tracing::warn!(
                schema = %self.schema,
                comment,
                "DATABASE_SCHEMA has a comment that is not user-sync's: the schema cannot \
                 record which service it syncs for, and another service could share it"
            );
            return Ok(());
        }
        match held {
            Some(held) if held.service != mine.service => Err(self.taken(&held)),
            // A command without the settings file's `[target]` (run by hand) keeps the
            // table the worker claimed: only a worker's own table replaces it.
            Some(held) if held == mine || !write || mine.target.is_none() => Ok(()),
            None if !write => Ok(()),
            _ => self.record(tx, &mine).await,
        }
    }

    /// Writes the claim and commits. A role that does not own the schema may not comment
    /// on it (42501): the schema stays unclaimed, said at every start, rather than a
    /// worker that exits on a setup that ran before this release.
    async fn record(
        &self,
        mut tx: Transaction<'_, Postgres>,
        mine: &Claim,
    ) -> Result<(), SetupError> {
        let text = mine.text().replace('\'', "''");
        let sql = format!("COMMENT ON SCHEMA \"{}\" IS '{text}'", self.schema);
        match sqlx::query(&sql).execute(&mut *tx).await {
            Ok(_) => {
                tx.commit().await?;
                tracing::info!(schema = %self.schema, service = %mine.service, target = ?mine.target, "schema claimed");
                Ok(())
            }
            Err(e) if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("42501") => {
                tracing::warn!(
                    schema = %self.schema,
                    "the database role does not own DATABASE_SCHEMA and cannot record which \
                     service it syncs for; as the schema's owner run: COMMENT ON SCHEMA {} IS '{text}'",
                    self.schema
                );
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    fn taken(&self, held: &Claim) -> SetupError {
        SetupError::Config(format!(
            "DATABASE_SCHEMA: schema \"{}\" syncs users for service \"{}\", not for SERVICE_NAME \
             \"{}\"; two services on one schema deactivate each other's users. Give each \
             service a schema of its own (DATABASE_SCHEMA, e.g. user_sync_{}), or correct \
             SERVICE_NAME",
            self.schema, held.service, self.service, self.service
        ))
    }

    fn check_target(&self, mine: &Claim, schema: &str, other: &Claim) -> Result<(), SetupError> {
        let same = mine.target.is_some() && mine.target == other.target;
        if !same || other.service == mine.service {
            return Ok(());
        }
        Err(SetupError::Config(format!(
            "[target]: table {} is converged for service \"{}\" through schema \"{}\"; \
             SERVICE_NAME \"{}\" (DATABASE_SCHEMA \"{}\") may not converge it too. Map this \
             service to its own table ([target] schema and table), or correct SERVICE_NAME",
            mine.target.as_deref().unwrap_or_default(),
            other.service,
            schema,
            mine.service,
            self.schema
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_reads_back_and_a_foreign_comment_does_not_parse() {
        let claim = Claim {
            service: "lms".into(),
            target: Some("public.users".into()),
        };
        assert_eq!(Claim::parse(&claim.text()), Some(claim));
        assert_eq!(Claim::parse("standard public schema"), None);
        assert_eq!(Claim::parse(r#"{"service":"lms"}"#), None);
    }
}
