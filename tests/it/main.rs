//! One integration binary against the real local RabbitMQ and Postgres. Every test makes
//! its own database and broker names, so the tests run in parallel and leave nothing.
//! One module per behaviour; `support` is what they share. The tests of `cluster` need a
//! three-node cluster and are ignored unless asked for (`.ci/run`).

mod brake;
mod broker;
mod cluster;
mod convergence;
mod cost;
mod database;
mod faults;
mod import;
mod input;
mod memory;
mod mtls;
mod observability;
mod ops;
mod pipeline;
mod release;
mod startup;
mod support;
mod target_table;
