//! The operator's commands through the real binary: the DLQ, `send`, `status`,
//! `explain` and its audit trail, and the exit codes and configuration errors scripts
//! rely on.

mod audit;
mod dlq;
mod exit_codes;
mod process;
mod send;
mod status;
mod trail_copy;
mod trail_storage;

use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);
