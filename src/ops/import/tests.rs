use super::read::Records;
use super::record::Decoder;
use crate::event::Rules;
use crate::membership::Membership;

fn decoder() -> Decoder {
    Decoder {
        as_of: Some("2024-01-01T00:00:00Z".into()),
        at_least: None,
        rules: Rules {
            max_body: 1 << 20,
            latest: None,
            signed: false,
        },
        membership: Membership::new("lms", &["teacher".to_string()]),
        target: None,
    }
}

/// Every record's number and whether it decoded, and the file error that ended it, if any.
async fn read(text: &str, batch: usize) -> (Vec<(usize, bool)>, Option<String>) {
    let dir = std::env::temp_dir().join(format!("usync-read-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("export");
    std::fs::write(&path, text).unwrap();
    let mut records = Records::open(&path, decoder(), batch).unwrap();
    let (mut seen, mut failed) = (Vec::new(), None);
    while let Some(b) = records.next().await {
        match b {
            Ok(b) => seen.extend(b.into_iter().map(|(l, r)| (l, r.is_ok()))),
            Err(e) => failed = Some(e),
        }
    }
    assert_eq!(records.bytes_read(), text.len() as u64);
    std::fs::remove_dir_all(&dir).unwrap();
    (seen, failed)
}

fn user(n: u32) -> String {
    format!(
        r#"{{"id":"00000000-0000-0000-0000-{n:012}","email":"u{n}@example.com","role":"teacher","is_active":true}}"#
    )
}

#[tokio::test]
async fn json_lines_keep_their_line_numbers_across_batches_and_blank_lines() {
    let text = format!(
        "\n\n{}\n\n  \nnot json\n{}\r\n{}",
        user(1),
        user(2),
        user(3)
    );
    let (seen, failed) = read(&text, 2).await;
    assert_eq!(seen, [(3, true), (6, false), (7, true), (8, true)]);
    assert_eq!(failed, None);
}

#[tokio::test]
async fn array_items_are_numbered_and_a_broken_array_ends_the_stream() {
    let text = format!(" [{}, 5, {}]\n", user(1), user(2));
    let (seen, failed) = read(&text, 1).await;
    assert_eq!(seen, [(1, true), (2, false), (3, true)]);
    assert_eq!(failed, None);

    let (seen, failed) = read(&format!("[{}, {}", user(1), user(2)), 10).await;
    assert_eq!(
        seen,
        [(1, true), (2, true)],
        "what was read before the error"
    );
    assert!(failed.unwrap().starts_with("not a JSON array"));
    let (_, failed) = read(&format!("[{}] trailing", user(1)), 10).await;
    assert!(failed.is_some());
}

#[tokio::test]
async fn a_byte_order_mark_is_skipped_and_an_overlong_line_is_refused_without_keeping_it() {
    let (seen, _) = read(&format!("\u{feff}{}\n{}\n", user(1), user(2)), 5).await;
    assert_eq!(seen, [(1, true), (2, true)]);
    let (seen, failed) = read(&format!("\u{feff}[{}]", user(1)), 5).await;
    assert_eq!((seen, failed), (vec![(1, true)], None));
    let long = format!("{{\"id\": \"{}\"}}", "x".repeat(2 << 20));
    let (seen, _) = read(&format!("{}\n{long}\n{}\n", user(1), user(2)), 5).await;
    assert_eq!(seen, [(1, true), (2, false), (3, true)]);
}

#[tokio::test]
async fn an_empty_file_has_no_records() {
    assert_eq!(read("", 3).await, (vec![], None));
    assert_eq!(read(" \n\n", 3).await, (vec![], None));
}

/// A record whose row a computed column refuses (too long) is an invalid record, naming the
/// column and not the value; the others import.
#[test]
fn a_record_a_computed_column_refuses_is_invalid() {
    let toml = "[target]\ntable = \"public.u\"\nkey = \"k\"\n[target.columns]\n\
                email = { field = \"email\", max_length = 14, too_long = \"refuse\" }\n\
                [target.deactivation]\nflag = \"active\"\n";
    let spec: crate::target_table::TargetSpec = config::Config::builder()
        .add_source(config::File::from_str(toml, config::FileFormat::Toml))
        .build()
        .unwrap()
        .get("target")
        .unwrap();
    let decoder = Decoder {
        target: Some(crate::target_table::TargetTable::resolve(&spec).unwrap()),
        ..decoder()
    };
    let record = |n| Ok(serde_json::from_str(&user(n)).unwrap());
    assert!(
        decoder.decode(record(1)).is_ok(),
        "u1@example.com: 14 characters"
    );
    let invalid = decoder.decode(record(10)).unwrap_err();
    assert!(
        invalid.why.contains("`email` would hold 15 characters"),
        "{}",
        invalid.why
    );
    assert!(!invalid.why.contains("u10@"), "{}", invalid.why);
}
