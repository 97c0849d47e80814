//! Logging in as each framework does, on the rows the sync wrote: the framework's own
//! lookup of what the user typed, its active check, and its password check, run by
//! Python's `bcrypt` (the C library Django, PHP, Ruby and BCrypt.Net agree with) or, for
//! Spring Security, by Java's jBCrypt.

use super::{Framework, run};
use sqlx::PgPool;
use std::process::Command;
use uuid::Uuid;

/// The password behind [`password_hash`]: what a user types at the backend.
pub(crate) const PASSWORD: &str = "correct horse battery staple";

/// The auth system's hash of [`PASSWORD`] (cost 4: the check runs in other processes).
pub(crate) fn password_hash() -> String {
    bcrypt::hash(PASSWORD, 4).unwrap()
}

/// Whose login this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Login {
    /// `ModelBackend`: `username` exact, password (`bcrypt$`), then `is_active`.
    Django,
    /// `EloquentUserProvider` with `SoftDeletes`: `email` exact among rows without
    /// `deleted_at`; `Hash::check` wants `$2y$`.
    Laravel,
    /// `case_insensitive_keys`: the login downcased (and stripped), then `email` exact;
    /// `active_for_authentication?` reads the active flag.
    Devise,
    /// `JdbcUserDetailsManager`: `username` exact, `enabled`;
    /// `DelegatingPasswordEncoder` (`{bcrypt}`) then jBCrypt. Spring refuses a user with
    /// no authority: the backend's `authoritiesByUsernameQuery` gives `ROLE_USER` to a
    /// synced user it has granted nothing yet, so every user found has one.
    Spring,
    /// `UserManager.FindByNameAsync`: `NormalizedUserName` = the login upper-cased; locked
    /// out while `LockoutEnabled` and `LockoutEnd >= now`; the bcrypt hasher the backend
    /// registers; a NULL `SecurityStamp` makes sign-in throw.
    AspNet,
}

/// What a login attempt gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Logged in as the row holding this auth id.
    In(Option<Uuid>),
    NoUser,
    Inactive,
    WrongPassword,
}

impl Login {
    /// (the value the framework looks up, the lookup: $1 that value; stored password,
    /// may authenticate, auth id, may sign in at all).
    fn lookup(self, table: &str, typed: &str) -> (String, String) {
        let (key, sql) = match self {
            Login::Django => (
                typed.to_string(),
                "SELECT password, is_active, auth_user_id, true FROM {t} WHERE username = $1",
            ),
            Login::Laravel => (
                typed.to_string(),
                "SELECT password, true, auth_user_id, true FROM {t} \
                 WHERE email = $1 AND deleted_at IS NULL",
            ),
            Login::Devise => (
                typed.trim().to_lowercase(),
                "SELECT encrypted_password, active, auth_user_id, true FROM {t} \
                 WHERE email = $1 LIMIT 1",
            ),
            Login::Spring => (
                typed.to_string(),
                "SELECT password, enabled, auth_user_id, true FROM {t} WHERE username = $1",
            ),
            Login::AspNet => (
                typed.to_uppercase(),
                r#"SELECT "PasswordHash", NOT ("LockoutEnabled" AND coalesce("LockoutEnd" >= now(), false)),
                   auth_user_id, "SecurityStamp" IS NOT NULL FROM {t} WHERE "NormalizedUserName" = $1"#,
            ),
        };
        (key, sql.replace("{t}", table))
    }
}

impl Framework {
    /// Logs in with `typed` and `password` as this framework does.
    pub(crate) async fn log_in(&self, db: &PgPool, typed: &str, password: &str) -> Outcome {
        let (key, sql) = self.login.lookup(self.table, typed);
        let row: Option<(Option<String>, bool, Option<Uuid>, bool)> = sqlx::query_as(&sql)
            .bind(&key)
            .fetch_optional(db)
            .await
            .unwrap();
        let Some((stored, may, auth_id, stamped)) = row else {
            return Outcome::NoUser;
        };
        if !may {
            return Outcome::Inactive;
        }
        assert!(
            stamped,
            "{typed}: Identity's sign-in throws on a NULL SecurityStamp"
        );
        match stored {
            Some(stored) if password_ok(self.login, &stored, password) => Outcome::In(auth_id),
            _ => Outcome::WrongPassword,
        }
    }
}

/// The framework's password check on `stored`.
fn password_ok(login: Login, stored: &str, password: &str) -> bool {
    let out = if login == Login::Spring {
        java_check(stored, password)
    } else {
        python_check(login, stored, password)
    };
    match out.as_str() {
        "ok" => true,
        "mismatch" => false,
        other => panic!("{login:?} refuses the stored hash: {other}"),
    }
}

/// Django's `BCryptPasswordHasher.verify`, PHP's `password_get_info` + `password_verify`,
/// or `checkpw` (Ruby's bcrypt, BCrypt.Net).
const PYTHON: &str = r#"
import sys, hmac, bcrypt
login, stored, password = sys.argv[1], sys.argv[2], sys.argv[3].encode()
if login == "Django":
    algorithm, data = stored.split("$", 1)
    if algorithm != "bcrypt":
        print("no hasher for " + algorithm); sys.exit()
    ok = hmac.compare_digest(bcrypt.hashpw(password, data.encode("ascii")), data.encode("ascii"))
elif login == "Laravel" and not stored.startswith("$2y$"):
    print("not a Bcrypt hash to PHP"); sys.exit()
else:
    ok = bcrypt.checkpw(password, stored.encode("ascii"))
print("ok" if ok else "mismatch")
"#;

fn python_check(login: Login, stored: &str, password: &str) -> String {
    let login = format!("{login:?}");
    let out = run(Command::new("python3").args(["-c", PYTHON, &login, stored, password]));
    assert!(
        out.success,
        "Python's bcrypt is needed for the frameworks' checks (pip install bcrypt): {}",
        out.stderr
    );
    out.stdout.trim().to_string()
}

/// jBCrypt from Debian's `libjbcrypt-java` (`.ci/run` installs it), run by Java's
/// source launcher.
fn java_check(stored: &str, password: &str) -> String {
    const JAR: &str = "/usr/share/java/jbcrypt.jar";
    let source = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/support/SpringCheck.java"
    );
    assert!(
        std::path::Path::new(JAR).exists(),
        "{JAR} is needed for Spring's check (apt-get install libjbcrypt-java)"
    );
    let out = run(Command::new("java").args(["-cp", JAR, source, stored, password]));
    assert!(out.success, "java: {}", out.stderr);
    out.stdout.trim().to_string()
}
