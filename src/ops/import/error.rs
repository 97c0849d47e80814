//! What stops an import, and what it tells the operator.

use crate::store::SetupError;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    File(String),
    /// Nothing was changed: the export, or what it would do, needs the operator first.
    #[error("refused: {0}")]
    Refused(String),
    /// The brake stopped a plain import partway: what came before is applied.
    #[error("stopped: {0}")]
    Stopped(String),
    /// A setting or the database's setup does not fit (a target table, a pooler in
    /// transaction mode): nothing was attempted.
    #[error("{0}")]
    Config(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<SetupError> for ImportError {
    fn from(e: SetupError) -> Self {
        match e {
            SetupError::Outage(e) | SetupError::Mismatch(e) => ImportError::Database(e),
            SetupError::TargetTable(problems) => {
                let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
                ImportError::Config(lines.join("\n"))
            }
            config => ImportError::Config(config.to_string()),
        }
    }
}
