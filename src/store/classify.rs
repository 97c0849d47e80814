//! Whose fault a database error is: the database's (pause and wait), nobody's (try the
//! same transaction again at once), or one change's (isolate it, retry it, dead-letter it).

use super::result::EventResult;
use sqlx::postgres::{PgDatabaseError, PgSeverity};

/// What an error while applying a batch calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The server or the connection is unusable for every event alike: pause, keep the
    /// batch, never dead-letter.
    Outage,
    /// A deadlock or serialization failure between concurrent writers (two replicas
    /// swapping emails), or a lock wait cut short: the same transaction succeeds when
    /// tried again.
    Contention,
    /// Something about the rows of this batch: split it until the event stands alone.
    Event(EventResult),
}

/// Classifies by SQLSTATE. Only states that name the server or the session pause the
/// worker: a trigger's `RAISE EXCEPTION` (P0001), a row-level-security denial (42501), a
/// statement timeout (57014) or any code not listed here is tried on smaller sets until one
/// event is found to carry it, so one refused row never stalls the users behind it.
pub(crate) fn classify(e: &sqlx::Error) -> Fault {
    let Some(db) = e.as_database_error() else {
        // I/O, TLS, a pool timeout, a protocol error: the connection, not the data.
        return Fault::Outage;
    };
    // FATAL and PANIC end the session: refused at connect (a database not accepting
    // connections, too many clients) or terminated by the server. Never one row's doing.
    let ends_session = db
        .try_downcast_ref::<PgDatabaseError>()
        .is_some_and(|pg| matches!(pg.severity(), PgSeverity::Fatal | PgSeverity::Panic));
    let Some(code) = db.code().filter(|_| !ends_session) else {
        return Fault::Outage;
    };
    match code.as_ref() {
        // 55P03: a lock_timeout ran out while another session (a migration, VACUUM FULL)
        // held the table; nothing about the event, and waiting is the cure.
        "40P01" | "40001" | "55P03" => Fault::Contention,
        "23505" if db.constraint() == Some("users_active_email_key") => {
            Fault::Event(EventResult::EmailConflict)
        }
        c if server_state(c) => Fault::Outage,
        c => {
            let on = db
                .constraint()
                .map(|k| format!(", constraint {k}"))
                .unwrap_or_default();
            Fault::Event(EventResult::Rejected(format!(
                "database refused the change (SQLSTATE {c}{on})"
            )))
        }
    }
}

/// SQLSTATEs about the server's condition, which every event would meet alike: a connection
/// exception (08), insufficient resources (53: disk, memory, connections), operator
/// intervention other than a cancelled statement (57P01-57P05: shutdown, crash, not yet
/// accepting), a read-only transaction (25006: a failover left us on a standby), a system
/// or configuration file error (58), an internal error (XX), an authorization failure (28),
/// a database, schema, table, column or function that does not exist (the schema is not
/// what the statements expect: a migration is missing, not an event wrong).
fn server_state(code: &str) -> bool {
    const CLASSES: [&str; 6] = ["08", "53", "58", "XX", "28", "57P"];
    CLASSES.iter().any(|c| code.starts_with(c))
        || matches!(
            code,
            "25006" | "3D000" | "3F000" | "42P01" | "42703" | "42883"
        )
}

/// A connection refused for a reason no retry fixes: authentication (class 28), a database
/// that does not exist (3D000), a pooler refusing a startup parameter (08P01), a certificate
/// refused by either side or a TLS setup sqlx cannot use. At start these are configuration
/// errors, reported and exited on, never a pause that looks like an outage.
pub fn config_problem(e: &sqlx::Error) -> Option<String> {
    if let Some(why) = super::tls::refusal(e) {
        return Some(format!("DATABASE_URL: {why}"));
    }
    let db = e.as_database_error()?;
    let code = db.code()?;
    let config = code.starts_with("28") || code == "3D000" || code == "08P01";
    config.then(|| format!("DATABASE_URL: {} (SQLSTATE {code})", db.message()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_states_pause_and_row_errors_are_isolated() {
        for outage in [
            "08006", "53100", "57P01", "57P03", "25006", "XX000", "28P01", "42P01",
        ] {
            assert!(server_state(outage), "{outage}");
        }
        for row in ["P0001", "42501", "57014", "23514", "22008", "40P01"] {
            assert!(!server_state(row), "{row}");
        }
    }

    #[test]
    fn an_error_without_a_database_behind_it_is_an_outage() {
        assert_eq!(classify(&sqlx::Error::PoolTimedOut), Fault::Outage);
        assert_eq!(
            classify(&sqlx::Error::Io(std::io::ErrorKind::ConnectionReset.into())),
            Fault::Outage
        );
    }
}
