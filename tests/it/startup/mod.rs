//! Starting up: one schema for one service, and no exit on a database or broker that
//! refuses, vanishes or goes read-only (docs/exits.md).

mod outages;
mod owner;
mod settings_file;
mod target_table_created_later;
