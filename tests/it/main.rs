//! One integration binary against the real local RabbitMQ and Postgres. Every test makes
//! its own database and broker names, so the tests run in parallel and leave nothing.

mod addresses;
mod attack;
mod attack2;
mod attack3;
mod attack4;
mod attack5;
mod attack6;
mod audit;
mod brake;
mod cli;
mod cluster;
mod convergence;
mod cost;
mod faults;
mod fixtures;
mod frameworks;
mod helpers;
mod import;
mod input;
mod isolation;
mod leaks;
mod lifecycle;
mod model;
mod observability;
mod ops;
mod pgbouncer;
mod pipeline;
mod probes;
mod process;
mod proxy;
mod reconcile;
mod release;
mod signed;
mod tls;
