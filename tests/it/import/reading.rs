//! How an export is read: JSON lines or a JSON array, odd but readable files, a byte order
//! mark, a record too large to hold, and the line or item each problem is reported at.

use super::*;
use crate::support::*;

#[path = "../../../benches/import/export.rs"]
mod export;

/// Import reads its export as a stream: ten times the users, the same peak memory. (The
/// in-memory import it replaced peaked at about 6.5 times the file's size.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_memory_does_not_grow_with_the_export() {
    let env = Env::new().await.set("audit_retention_days", "0");
    let store = env.store();
    let dir = std::env::temp_dir().join(format!("usync-rss-{}", env.db.name));
    std::fs::create_dir_all(&dir).unwrap();
    let mut peaks = Vec::new();
    for n in [20_000u64, 200_000] {
        let file = dir.join(format!("{n}.jsonl"));
        export::write_export(&file, n).unwrap();
        let mut cmd = env.binary();
        cmd.args([
            "import",
            file.to_str().unwrap(),
            "--as-of",
            "2024-01-01T00:00:00Z",
        ]);
        let (code, peak) = peak_rss(cmd).await;
        assert_eq!(code, 0, "import of {n} users");
        std::fs::remove_file(&file).unwrap();
        peaks.push(peak);
    }
    std::fs::remove_dir_all(&dir).unwrap();
    let rows = count(&store, "SELECT count(*) FROM users").await;
    assert!(rows > 100_000, "the exports were applied: {rows} rows");
    let (small, large) = (peaks[0], peaks[1]);
    assert!(
        large < small + 8 * 1024,
        "peak RSS grew with the export: 20 000 users {small} KiB, 200 000 users {large} KiB"
    );
    eprintln!("peak RSS: 20 000 users {small} KiB, 200 000 users {large} KiB");
}

/// One 64 MiB line in a JSON-lines export (a runaway field, a blob pasted into a name, a
/// whole array written on one line) is refused as too large without being held in memory:
/// the peak stays within 32 MiB of the same import without it. Held whole, and copied
/// while parsed, such a line could take the sidecar's memory limit with it (the import
/// runs in the backend's Pod).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_huge_line_is_refused_without_being_held_in_memory() {
    let env = Env::new().await.set("audit_retention_days", "0");
    env.store().migrate().await.unwrap();
    // Thousands of ordinary records after it: the import lives on well past its peak.
    let tail: Vec<Value> = (0..5000u32)
        .map(|i| {
            let mut r = student(1);
            r["id"] = uuid::Uuid::from_u128(0xc000 + u128::from(i))
                .to_string()
                .into();
            r["email"] = format!("tail{i}@example.com").into();
            r
        })
        .collect();
    let tail = lines(&tail);
    let small = Export::new(&env, "small", format!("{}{tail}", lines(&[student(1)])));
    // Written in pieces, so that this process never holds the line.
    let big = Export::new(&env, "huge", lines(&[student(1)]));
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&big.0)
            .unwrap();
        let mut huge = student(3);
        huge["first_name"] = "FILL".into();
        let text = huge.to_string();
        let (head, rest) = text.split_once("FILL").unwrap();
        f.write_all(head.as_bytes()).unwrap();
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..64 {
            f.write_all(&chunk).unwrap();
        }
        f.write_all(rest.as_bytes()).unwrap();
        f.write_all(format!("\n{tail}").as_bytes()).unwrap();
    }
    let mut peaks = Vec::new();
    for file in [&small, &big] {
        let mut cmd = env.binary();
        cmd.args(["import", file.path(), "--as-of", T]);
        peaks.push(peak_rss(cmd).await);
    }
    let ((small_code, small_peak), (big_code, big_peak)) = (peaks[0], peaks[1]);
    assert_eq!(small_code, 0);
    assert_eq!(big_code, 3, "the huge record is rejected");
    assert!(
        big_peak < small_peak + 32 * 1024,
        "one 64 MiB record: peak RSS {big_peak} KiB against {small_peak} KiB without it"
    );
}

/// An export that starts with a UTF-8 byte order mark (Windows PowerShell's `Out-File
/// -Encoding utf8`, Excel, Notepad's "UTF-8 with BOM") is read whole: its first record
/// counts (under `--full` its user is not left out), and a JSON array behind a BOM is read
/// as an array.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_with_a_utf8_bom_keeps_its_first_record() {
    let env = Env::new().await;
    let store = env.store();
    seed(&env, [1, 2, 3]).await;

    let text = format!("\u{feff}{}", lines(&[student(1), student(2), student(3)]));
    let export = Export::new(&env, "bom", text);
    let out = full(&env, &export, T, &["--json"]).await;
    assert_eq!(
        row(&store, 1).await.map(|r| (r.0, r.1)),
        Some((true, None)),
        "user 1 is the export's first record: {}",
        out.text()
    );
    assert_eq!(out.code, 0, "every record is valid: {}", out.text());

    // A JSON array behind a BOM: read as JSON lines, nothing is imported.
    let array = serde_json::to_string_pretty(&vec![student(4), student(5)]).unwrap();
    let export = Export::new(&env, "bom-array", format!("\u{feff}{array}"));
    let out = env
        .command_within(&["import", export.path(), "--as-of", T, "--json"], LIMIT)
        .await;
    assert_eq!(out.code, 0, "a BOM'd array of two users: {}", out.text());
    assert_eq!(out.json()["outcomes"]["created"], 2, "{}", out.stdout);
}

/// A bad record of a JSON array is reported by its item, never as "line N": a
/// pretty-printed array spreads each user over ten lines, and "line 2" would send the
/// operator to the array's second line, not to its second record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn array_items_are_reported_as_items() {
    let env = Env::new().await;
    let mut bad = student(2);
    bad["password_hash"] = "plaintext".into();
    let text = serde_json::to_string_pretty(&vec![student(1), bad, student(3)]).unwrap();
    let on_line = text.lines().position(|l| l.contains("plaintext")).unwrap() + 1;
    let export = Export::new(&env, "array", &text);
    let out = env
        .command_within(&["import", export.path(), "--as-of", T], LIMIT)
        .await;
    assert_eq!(out.code, 3, "{}", out.text());
    assert!(
        !out.stdout.contains("  line 2:"),
        "the bad record is item 2, on line {on_line} of the file: {}",
        out.stdout
    );
}

/// Odd but readable exports: CRLF line ends, blank lines and leading blank lines keep
/// exact line numbers; ids that are not UUIDs, an array inside JSON lines and non-object
/// items are invalid with their numbers; braced and upper-case UUIDs are the same user;
/// one user twice with conflicting records ends the same whether the two meet in one batch
/// or in two (the digest breaks the tie at equal timestamps).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_exports_keep_line_numbers_and_duplicates_converge_across_batches() {
    let mut finals = Vec::new();
    for batch in ["1000", "1"] {
        let env = Env::new().await.set("batch_size", batch);
        let store = env.store();
        let mut a = student(1);
        a["last_name"] = "Alpha".into();
        let mut b = student(1);
        b["last_name"] = "Beta".into();
        let mut braced = student(2);
        braced["id"] = format!("{{{}}}", uid(2)).to_uppercase().into();
        let mut not_uuid = student(3);
        not_uuid["id"] = "12345".into();
        let text = format!(
            "\r\n\r\n{a}\r\n{not_uuid}\r\n\r\n[{c}]\r\n{b}\r\n42\r\n{braced}\r\n",
            c = student(4)
        );
        let export = Export::new(&env, "odd", text);
        let out = env
            .command_within(&["import", export.path(), "--as-of", T, "--json"], LIMIT)
            .await;
        assert_eq!(out.code, 3, "{}", out.text());
        let s = out.json();
        let lines: Vec<u64> = s["invalid"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e[0].as_u64().unwrap())
            .collect();
        assert_eq!(lines, [4, 6, 8], "{s}");
        assert_eq!(s["records"], 6, "{s}");
        let last: Vec<(uuid::Uuid, String)> =
            sqlx::query_as("SELECT auth_user_id, last_name FROM users ORDER BY auth_user_id")
                .fetch_all(store.pool())
                .await
                .unwrap();
        assert_eq!(last.len(), 2, "users 1 and 2: {last:?}");
        assert_eq!(last[1].0, uid(2));
        finals.push(last);
    }
    assert_eq!(finals[0], finals[1], "one batch or two: the same winner");

    // An array of arrays: every item is "not a JSON object", numbered.
    let env = Env::new().await;
    let nested = serde_json::to_string(&vec![vec![student(1)], vec![student(2)]]).unwrap();
    let export = Export::new(&env, "nested", nested);
    let out = env
        .command_within(&["import", export.path(), "--as-of", T, "--json"], LIMIT)
        .await;
    assert_eq!(out.code, 3, "{}", out.text());
    let s = out.json();
    assert_eq!(
        s["invalid"][0],
        serde_json::json!([1, "not a JSON object"]),
        "{s}"
    );
    assert_eq!(s["invalid"][1][0], 2, "{s}");
    let refused = full(&env, &export, T, &["--yes"]).await;
    assert_eq!(refused.code, 1, "no valid record: {}", refused.text());
}
