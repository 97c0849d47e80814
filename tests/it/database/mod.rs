//! Reaching Postgres the ways backends run it: through PgBouncer, over TLS, as a role with
//! a connection limit. A configuration mistake exits 2 at start; an outage is waited for.

mod pgbouncer;
mod sessions;

use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);
