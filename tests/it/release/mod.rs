//! Releases side by side: a schema a later release migrated, the previous release's binary
//! beside this one on one queue, and versions that tell releases apart.

mod mixed;
mod process;
mod schema;
mod traffic;
mod version;
