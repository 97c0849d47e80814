//! What an apply is told about its transactions (`Commit`) and what it returns per event
//! (`EventResult`): shared by `apply`, `attempt` and `classify`, which import only this.

use crate::decide::Outcome;

/// What became of one planned change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventResult {
    Done(Outcome),
    /// Its email is held by another active user; a later event may free it.
    EmailConflict,
    /// The database refused this one change for good (a constraint, a value out of range).
    Rejected(String),
}

/// Whether an apply keeps its work or rehearses it (`import --dry-run`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    Yes,
    RollBack,
}
