//! What the service costs the database: an event, a batch or a reconcile that changes
//! nothing leaves every row version as it was (no new version, not even a row lock, each
//! of which is a WAL record that replicas replay and backups archive).

mod target_table;
mod unchanged;
