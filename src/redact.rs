//! Everything that keeps secrets and personal data out of logs, errors and operator output:
//! URLs with their passwords, emails without `LOG_PII`, bcrypt hashes in any escaping, and
//! the hash field of a user, whose `Debug` never shows it.

use std::fmt;

/// A user's bcrypt hash as the auth system sent it, stored byte for byte. `Debug` masks it,
/// so no panic message or debug log can carry it; `as_str` is for storing and digesting it.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for PasswordHash {
    fn from(hash: String) -> Self {
        PasswordHash(hash)
    }
}

impl From<&str> for PasswordHash {
    fn from(hash: &str) -> Self {
        PasswordHash(hash.to_string())
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Written as the masked string it replaced, so debug output reads as before.
        fmt::Debug::fmt("***", f)
    }
}

/// A URL with its secrets replaced, for logs and errors: the password of the userinfo and
/// everything from the value of a query parameter that names a password, secret or token.
///
/// A password may hold `/`, `?`, `#`, `&` or `@` unescaped, which URL parsers read
/// differently, so both readings are masked: the userinfo runs to the last `@` of the URL,
/// and a secret query value runs to its end.
pub fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return if url.contains(['@', '?', ':']) {
            "***".into()
        } else {
            url.to_string()
        };
    };
    let mut hidden: Vec<(usize, usize)> = Vec::new();
    if let Some(at) = rest.rfind('@')
        && let Some(colon) = rest[..at].find(':')
    {
        hidden.push((colon + 1, at));
    }
    if let Some(value) = secret_query_value(rest) {
        hidden.push((value, rest.len()));
    }
    hidden.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::new();
    for (start, end) in hidden {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    let mut out = format!("{scheme}://");
    let mut shown = 0;
    for (start, end) in merged {
        out.push_str(&rest[shown..start]);
        out.push_str("***");
        shown = end;
    }
    out.push_str(&rest[shown..]);
    out
}

/// Where the value of the first secret-naming query parameter starts, if any.
fn secret_query_value(rest: &str) -> Option<usize> {
    let query = rest.find('?')? + 1;
    let mut offset = query;
    for pair in rest[query..].split('&') {
        if let Some((key, _)) = pair.split_once('=')
            && is_secret_key(key)
        {
            return Some(offset + key.len() + 1);
        }
        offset += pair.len() + 1;
    }
    None
}

/// Keys are compared percent-decoded, as the URL parsers of sqlx and lapin read them.
fn is_secret_key(key: &str) -> bool {
    let mut decoded = Vec::with_capacity(key.len());
    let b = key.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    let key = String::from_utf8_lossy(&decoded).to_lowercase();
    ["pass", "secret", "token"].iter().any(|s| key.contains(s))
}

/// An email as logs show it without `LOG_PII`: the first character and the domain.
pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".into(),
    }
}

/// A body for display: pretty JSON with `password_hash` values masked, or the raw text;
/// either way with anything shaped like a bcrypt hash masked too.
pub fn redact_body(body: &[u8]) -> String {
    fn mask_field(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    if k == "password_hash" && !v.is_null() {
                        *v = serde_json::Value::String("***".into());
                    } else {
                        mask_field(v);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(mask_field),
            _ => {}
        }
    }
    let text = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(mut v) => {
            mask_field(&mut v);
            serde_json::to_string_pretty(&v).unwrap_or_default()
        }
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    redact(&text)
}

/// Replaces every bcrypt-shaped substring (`$2a$`/`$2b$`/`$2x$`/`$2y$`, two cost digits,
/// `$`, 53 characters of its alphabet) with `***`, in whatever escaping it is written: a body
/// that is not JSON (or not UTF-8) shows its escapes raw, so `\/`, `\u0024`, `\x24`,
/// doubled backslashes and `%24` spell the same hash.
pub fn redact(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        match bcrypt_at(b, i) {
            Some(end) => {
                out.push_str(&text[copied..i]);
                out.push_str("***");
                i = end;
                copied = end;
            }
            None => i += 1,
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// Where a bcrypt hash starting at `i` ends, reading escapes as the characters they stand for.
fn bcrypt_at(b: &[u8], mut i: usize) -> Option<usize> {
    let alphabet = |c: u8| c.is_ascii_alphanumeric() || c == b'.' || c == b'/';
    for pos in 0..60 {
        let (c, next) = unescaped_at(b, i)?;
        let ok = match pos {
            0 | 3 | 6 => c == b'$',
            1 => c == b'2',
            2 => matches!(c, b'a' | b'b' | b'x' | b'y'),
            4 | 5 => c.is_ascii_digit(),
            _ => alphabet(c),
        };
        if !ok {
            return None;
        }
        i = next;
    }
    Some(i)
}

/// The ASCII character at `i` and where the next one starts: a plain byte, or one written as
/// backslashes and then `/` (or any other character), `uXXXX` or `xXX`, or as `%XX`.
fn unescaped_at(b: &[u8], i: usize) -> Option<(u8, usize)> {
    let hex = |from: usize, len: usize| -> Option<u8> {
        let digits = std::str::from_utf8(b.get(from..from + len)?).ok()?;
        u8::try_from(u32::from_str_radix(digits, 16).ok()?).ok()
    };
    match *b.get(i)? {
        b'\\' => {
            let mut j = i;
            while b.get(j) == Some(&b'\\') {
                j += 1;
            }
            match *b.get(j)? {
                b'u' => Some((hex(j + 1, 4)?, j + 5)),
                b'x' => Some((hex(j + 1, 2)?, j + 3)),
                c => Some((c, j + 1)),
            }
        }
        b'%' => Some((hex(i + 1, 2)?, i + 3)),
        c => Some((c, i + 1)),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const HASH: &str = "$2b$12$zF7vDVD5e.4xzmEI05ezE.ruqh5Vux7K3MLMbdsBDCmcd.PIs8L/O";

    #[test]
    fn emails_are_masked_to_first_letter_and_domain() {
        assert_eq!(mask_email("student@example.com"), "s***@example.com");
        assert_eq!(mask_email("not an email"), "***");
    }

    /// Secret pieces are at least four characters and appear nowhere else in the URL, so a
    /// partial leak (the part after an unescaped `/`, `&` or `@`) is caught too.
    pub(crate) const URLS: &[(&str, &[&str])] = &[
        ("postgres://u:Zq7wKp3v@127.0.0.1:1/db", &["Zq7wKp3v"]),
        (
            "postgres://u@127.0.0.1:1/db?password=Zq7wKp3v",
            &["Zq7wKp3v"],
        ),
        (
            "postgresql://u@127.0.0.1:1/db?sslmode=prefer&password=Zq7wKp3v&application_name=x",
            &["Zq7wKp3v"],
        ),
        (
            "postgres://u@127.0.0.1:1/db?sslpassword=Zq7wKp3v&sslmode=prefer",
            &["Zq7wKp3v"],
        ),
        ("postgres://u:Zq7w/Kp3v@127.0.0.1:1/db", &["Zq7w", "Kp3v"]),
        ("postgres://u:Zq7w@Kp3v@127.0.0.1:1/db", &["Zq7w", "Kp3v"]),
        ("postgres://u:Zq7w:Kp3v@127.0.0.1:1/db", &["Zq7w", "Kp3v"]),
        ("postgres://u:Zq7w?Kp3v@127.0.0.1:1/db", &["Zq7w", "Kp3v"]),
        ("postgres://u:Zq7w#Kp3v@127.0.0.1:1/db", &["Zq7w", "Kp3v"]),
        (
            "postgres://u:Zq7w%2FKp3v%40@127.0.0.1:1/db",
            &["Zq7w", "Kp3v"],
        ),
        (
            "postgres://u@127.0.0.1:1/db?password=Zq7w&Kp3v",
            &["Zq7w", "Kp3v"],
        ),
        (
            "postgres://u@127.0.0.1:1/db?password=Zq7w#Kp3v",
            &["Zq7w", "Kp3v"],
        ),
        (
            "postgres://127.0.0.1:1/db?password=Zq7w@Kp3v",
            &["Zq7w", "Kp3v"],
        ),
        (
            "postgres://127.0.0.1:1/db?password=Zq7w:Kp3v@x",
            &["Zq7w", "Kp3v"],
        ),
        (
            "postgres://127.0.0.1:1/db?%70assword=Zq7wKp3v",
            &["Zq7wKp3v"],
        ),
        ("amqp://u:Zq7w/Kp3v@127.0.0.1:1/%2f", &["Zq7w", "Kp3v"]),
        ("amqp://u:Zq7w%2FKp3v@127.0.0.1:1/%2f", &["Zq7w", "Kp3v"]),
        ("amqps://u:Zq7w@Kp3v@127.0.0.1:1/vhost", &["Zq7w", "Kp3v"]),
        ("amqp://u:Zq7w?Kp3v#@127.0.0.1:1", &["Zq7w", "Kp3v"]),
    ];

    pub(crate) fn leaks<'a>(text: &str, secrets: &[&'a str]) -> Option<&'a str> {
        secrets.iter().copied().find(|s| text.contains(s))
    }

    #[test]
    fn no_url_form_shows_its_secret_in_mask_url() {
        for (url, secrets) in URLS {
            let masked = mask_url(url);
            assert_eq!(leaks(&masked, secrets), None, "{url} -> {masked}");
        }
        for plain in [
            "postgres://h/db",
            "postgresql://u@h:5432/db?sslmode=verify-full",
            "amqp://guest@h/%2f",
            "amqps://h:5671/vh?heartbeat=15",
        ] {
            assert_eq!(mask_url(plain), plain);
        }
        assert_eq!(
            mask_url("postgres://u@h/db?sslmode=require&password=x"),
            "postgres://u@h/db?sslmode=require&password=***"
        );
        assert_eq!(
            mask_url("postgres://u@h/db?password=x&sslmode=require"),
            "postgres://u@h/db?password=***"
        );
    }

    #[test]
    fn url_passwords_are_masked() {
        assert_eq!(
            mask_url("amqp://guest:guest@h:5672/%2f"),
            "amqp://guest:***@h:5672/%2f"
        );
        assert_eq!(mask_url("postgres://h/db"), "postgres://h/db");
        assert_eq!(mask_url("postgres://a:b@c@h/db"), "postgres://a:***@h/db");
    }

    #[test]
    fn a_password_hash_shows_only_stars_in_debug() {
        let hash = PasswordHash::from(HASH);
        assert_eq!(hash.as_str(), HASH);
        assert_eq!(format!("{:?}", Some(hash)), r#"Some("***")"#);
    }

    #[test]
    fn masks_the_hash_field_and_hash_shapes_anywhere() {
        let body = format!(
            r#"{{"user":{{"password_hash":"not-bcrypt","email":"a@example.com"}},"note":"{HASH}"}}"#
        );
        let shown = redact_body(body.as_bytes());
        assert!(
            !shown.contains("not-bcrypt") && !shown.contains(HASH),
            "{shown}"
        );
        assert!(shown.contains("a@example.com"));
        let raw = format!("{{broken json {HASH} tail");
        assert_eq!(redact_body(raw.as_bytes()), "{broken json *** tail");
    }

    #[test]
    fn leaves_text_without_hashes_alone() {
        for s in [
            "",
            "$2b$",
            "plain text",
            "ünïcödé $2b$12$short",
            r"\u0024 \/ %24 \",
            "100% \\",
        ] {
            assert_eq!(redact(s), s);
        }
    }

    #[test]
    fn masks_a_hash_in_any_escaping() {
        let escapings = [
            HASH.replace('/', r"\/"),
            HASH.replace('$', r"\u0024"),
            HASH.replace('$', r"\u0024").replace('/', r"\u002F"),
            HASH.replace('/', r"\\/"),
            HASH.replace('$', r"\\u0024"),
            HASH.replace('$', r"\x24"),
            HASH.replace('$', "%24").replace('/', "%2f"),
            HASH.replace('$', r"\$"),
            "$2y$10$".to_string() + &HASH[7..].replace('/', r"\/"),
        ];
        for escaped in escapings {
            let text = format!("{{not json: \"{escaped}\" tail");
            let shown = redact(&text);
            assert_eq!(shown, "{not json: \"***\" tail", "{escaped}");
        }
        let mut not_utf8 = b"\xff\xfe{\"note\":\"".to_vec();
        not_utf8.extend(HASH.replace('/', r"\/").as_bytes());
        not_utf8.extend(b"\"}");
        let shown = redact_body(&not_utf8);
        assert!(shown.ends_with("{\"note\":\"***\"}"), "{shown}");
    }
}
