//! What an operator watches: the probes, the metrics the alerts and the dashboard query,
//! and logs and outputs that never carry a secret.

mod alerts;
mod leaks;
mod probes;
