//! Input the worker must not trust: bodies it cannot decode or store, signatures,
//! headers only the service's own copies may carry. None of it may steer the worker, and
//! every refusal is a dead letter with its reason, never a stop.

mod fixtures;
mod headers;
mod signing;
mod timestamps;

use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);
