//! Times user-sync's pattern (BEGIN, three 500-row UNNEST statements, COMMIT) with sqlx
//! 0.8.6 and 0.9.0 (rows of ~150 bytes), over TCP (127.0.0.1) and over the Unix socket, in one run.

use std::time::Instant;

const ROWS: i32 = 500;
const TXS: i32 = 200;

macro_rules! probe {
    ($sqlx:ident, $url:expr, $statements:expr) => {{
        use $sqlx::Connection as _;
        let mut c = $sqlx::PgConnection::connect($url).await.unwrap();
        $sqlx::query("DROP TABLE IF EXISTS nodelay_probe").execute(&mut c).await.unwrap();
        $sqlx::query("CREATE TABLE nodelay_probe (id int PRIMARY KEY, v text, n int)")
            .execute(&mut c)
            .await
            .unwrap();
        let started = Instant::now();
        for t in 0..TXS {
            let ids: Vec<i32> = (0..ROWS).map(|i| (t * 37 + i) % 20_000).collect();
            // About the size of a user row with its bcrypt hash, so one statement is ~80 KB
            // and spans several TCP segments, where Nagle and delayed ACKs can meet.
            let vs: Vec<String> = ids.iter().map(|i| format!("{i:0>150}{t}")).collect();
            let mut tx = c.begin().await.unwrap();
            for _ in 0..$statements {
                $sqlx::query(
                    "INSERT INTO nodelay_probe AS p (id, v, n) \
                     SELECT * , 1 FROM UNNEST($1::int[], $2::text[]) \
                     ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v, n = p.n + 1",
                )
                .bind(&ids)
                .bind(&vs)
                .execute(&mut *tx)
                .await
                .unwrap();
            }
            tx.commit().await.unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        $sqlx::query("DROP TABLE nodelay_probe").execute(&mut c).await.unwrap();
        secs
    }};
}

#[tokio::main]
async fn main() {
    let tcp = "postgres://postgres@127.0.0.1:5432/postgres";
    let unix = "postgres://postgres@localhost/postgres?host=/var/run/postgresql";
    println!("| sqlx | transport | statements per transaction | seconds | rows/s |");
    println!("|---|---|---:|---:|---:|");
    // 1 statement per transaction is the pattern an earlier probe saw stall
    // (docs/facts.md#why-sqlx-086-tcp_nodelay); 3 is like ours.
    for statements in [1, 3] {
        for round in 0..2 {
            let figures = [
                ("0.8.6", "tcp", probe!(sqlx08, tcp, statements)),
                ("0.8.6", "unix", probe!(sqlx08, unix, statements)),
                ("0.9.0", "tcp", probe!(sqlx09, tcp, statements)),
                ("0.9.0", "unix", probe!(sqlx09, unix, statements)),
            ];
            if round == 0 {
                continue; // warm-up: caches, plans
            }
            for (v, t, secs) in figures {
                let rows = f64::from(ROWS * TXS) * statements as f64 / secs;
                println!("| {v} | {t} | {statements} | {secs:.2} | {rows:.0} |");
            }
        }
    }
}
