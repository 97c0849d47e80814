//! What the backend's DBA sees of the service's tables during the soak: sizes (whole,
//! heap, indexes), live and dead tuples, updates and how many were HOT, deletes, the
//! autovacuums so far, from `pg_stat_user_tables` and the size functions.

use sqlx::{PgPool, Row};

/// The service's tables, in the order printed.
pub(crate) const TABLES: [&str; 4] = ["users", "user_watermarks", "audit_trail", "brake_window"];

pub(crate) struct Table {
    pub name: String,
    pub total: i64,
    pub heap: i64,
    pub indexes: i64,
    pub live: i64,
    pub dead: i64,
    pub updates: i64,
    pub hot: i64,
    pub deletes: i64,
    pub autovacuums: i64,
    pub last_autovacuum: Option<String>,
}

pub(crate) struct Snapshot {
    pub label: String,
    pub tables: Vec<Table>,
    /// (table, index, bytes).
    pub indexes: Vec<(String, String, i64)>,
}

const TABLES_SQL: &str = "SELECT relname::text, pg_total_relation_size(relid), \
     pg_relation_size(relid), pg_indexes_size(relid), n_live_tup, n_dead_tup, n_tup_upd, \
     n_tup_hot_upd, n_tup_del, autovacuum_count, \
     to_char(last_autovacuum AT TIME ZONE 'UTC', 'HH24:MI:SS') \
   FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = ANY($2)";

const INDEXES_SQL: &str = "SELECT relname::text, indexrelname::text, \
     pg_relation_size(indexrelid) \
   FROM pg_stat_user_indexes WHERE schemaname = $1 AND relname = ANY($2) ORDER BY 1, 2";

pub(crate) async fn snapshot(pool: &PgPool, schema: &str, label: String) -> Snapshot {
    let names: Vec<String> = TABLES.iter().map(|t| t.to_string()).collect();
    let rows = sqlx::query(TABLES_SQL)
        .bind(schema)
        .bind(&names)
        .fetch_all(pool)
        .await
        .unwrap();
    let mut tables: Vec<Table> = rows
        .iter()
        .map(|r| Table {
            name: r.get(0),
            total: r.get(1),
            heap: r.get(2),
            indexes: r.get(3),
            live: r.get(4),
            dead: r.get(5),
            updates: r.get(6),
            hot: r.get(7),
            deletes: r.get(8),
            autovacuums: r.get(9),
            last_autovacuum: r.get(10),
        })
        .collect();
    tables.sort_by_key(|t| TABLES.iter().position(|n| *n == t.name));
    let indexes = sqlx::query(INDEXES_SQL)
        .bind(schema)
        .bind(&names)
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    Snapshot {
        label,
        tables,
        indexes,
    }
}

/// The tables' counters, to tell when the statistics have stopped moving.
pub(crate) async fn counters(pool: &PgPool, schema: &str) -> Vec<(i64, i64, i64, i64, i64)> {
    sqlx::query_as(
        "SELECT n_tup_ins, n_tup_upd, n_tup_del, n_live_tup, n_dead_tup FROM pg_stat_user_tables \
         WHERE schemaname = $1 ORDER BY relid",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Whether autovacuum has nothing left to do on any table: dead tuples under its
/// threshold at the defaults (50 + 20% of the live ones).
pub(crate) fn settled(s: &Snapshot) -> bool {
    s.tables
        .iter()
        .all(|t| (t.dead as f64) <= 50.0 + 0.2 * t.live as f64)
}

pub(crate) fn mib(bytes: i64) -> String {
    format!("{:.2}", bytes as f64 / (1024.0 * 1024.0))
}

pub(crate) fn header() {
    println!(
        "| after | table | total MiB | heap MiB | indexes MiB | live rows | dead rows | dead/live | updates (HOT %) | deletes | autovacuums (last, UTC) | B per live row |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|");
}

/// The snapshot's rows of the table, then its indexes on one line each per table.
pub(crate) fn print(s: &Snapshot) {
    for t in &s.tables {
        let ratio = match t.live {
            0 => "-".to_string(),
            live => format!("{:.3}", t.dead as f64 / live as f64),
        };
        let hot = match t.updates {
            0 => "0".to_string(),
            u => format!("{u} ({:.1}%)", 100.0 * t.hot as f64 / u as f64),
        };
        let per_row = match t.live {
            0 => "-".to_string(),
            live => format!("{:.0}", t.total as f64 / live as f64),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {ratio} | {hot} | {} | {} ({}) | {per_row} |",
            s.label,
            t.name,
            mib(t.total),
            mib(t.heap),
            mib(t.indexes),
            t.live,
            t.dead,
            t.deletes,
            t.autovacuums,
            t.last_autovacuum.as_deref().unwrap_or("never"),
        );
    }
}

pub(crate) fn print_indexes(s: &Snapshot) {
    let list: Vec<String> = s
        .indexes
        .iter()
        .map(|(t, i, b)| format!("{t}.{i} {} MiB", mib(*b)))
        .collect();
    println!("indexes after {}: {}", s.label, list.join(", "));
}
