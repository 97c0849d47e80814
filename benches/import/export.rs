//! Real-shaped exports for `import`: JSON lines of `user` objects as the auth system
//! exports them. Deterministic: user `i` is the same in every run and every size, so a
//! smaller export is a prefix of a larger one. Used by the import benchmark and by the
//! test that checks import's memory does not grow with the file.

use std::io::{BufWriter, Write};
use std::path::Path;

/// A bcrypt hash of the right shape (cost 12); never a real user's.
const HASH: &str = "$2b$12$C6UzMDM.H6dfI/f/IKxGhuZ7aYEv1eOL8xq9Pq1h5m4wE0JbQe1W2";
const SERVICES: [&str; 4] = [
    r#"["lms"]"#,
    r#"["lms","sat"]"#,
    r#"["sat"]"#,
    r#"["ielts","lms"]"#,
];
const ROLES: [&str; 10] = [
    "student", "student", "student", "student", "student", "student", "student", "student",
    "teacher", "curator",
];

/// User `i`'s auth id.
pub fn auth_id(i: u64) -> String {
    format!("{:08x}-0000-4000-8000-{:012x}", 0x5eed_0000u32, i)
}

/// Writes users `0..n` to `path`, one JSON object per line.
pub fn write_export(path: &Path, n: u64) -> std::io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    for i in 0..n {
        let role = ROLES[(i % 10) as usize];
        let services = SERVICES[(i / 10 % 4) as usize];
        let active = i % 97 != 0;
        let record = serde_json::json!({
            "id": auth_id(i),
            "email": format!("user{i}@example.com"),
            "first_name": format!("First{}", i % 1000),
            "last_name": format!("Last{i}"),
            "password_hash": HASH,
            "role": role,
            "is_active": active,
            "allowed_services_json": services,
            "created_at": "2023-09-01T08:00:00Z",
        });
        writeln!(out, "{record}")?;
    }
    out.flush()
}
