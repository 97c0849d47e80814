//! Memory held by the worker: deliveries bounded in bytes (`MAX_HELD_BYTES`), whatever the
//! bodies' sizes.

mod flood;
