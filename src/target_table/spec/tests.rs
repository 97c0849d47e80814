use super::*;
use config::{Config, File, FileFormat};

fn spec(toml: &str) -> TargetSpec {
    Config::builder()
        .add_source(File::from_str(toml, FileFormat::Toml))
        .build()
        .unwrap()
        .get::<TargetSpec>("target")
        .unwrap()
}

const DJANGO: &str = r#"
[target]
table = "public.auth_user"
key = "auth_user_id"
[target.columns]
email = "email"
username = "email"
first_name = "first_name"
last_name = "last_name"
password = { field = "password_hash", prefix = "bcrypt$" }
is_staff = { role_map = { admin = true, Teacher = true }, default = false }
is_superuser = { role_map = { admin = true }, default = false }
date_joined = "now_on_insert"
[target.deactivation]
flag = "is_active"
"#;

#[test]
fn a_django_target_table_resolves_with_every_kind_of_source() {
    let m = TargetTable::resolve(&spec(DJANGO)).unwrap();
    assert_eq!(
        (m.schema.as_str(), m.table.as_str()),
        ("public", "auth_user")
    );
    assert_eq!(m.email, "email");
    assert_eq!(m.deactivation, Deactivation::Flag("is_active".into()));
    let source = |c: &str| m.columns.iter().find(|(n, _)| n == c).unwrap().1.clone();
    assert_eq!(
        source("password"),
        Source::Field {
            field: Field::PasswordHash,
            prefix: "bcrypt$".into(),
            bcrypt: None,
        }
    );
    assert_eq!(source("date_joined"), Source::NowOnInsert);
    let Source::RoleMap { map, default } = source("is_staff") else {
        panic!("a role map")
    };
    assert_eq!(
        map.get("teacher").map(String::as_str),
        Some("true"),
        "roles compare lower-case"
    );
    assert_eq!(default.as_deref(), Some("false"));
    assert!(m.written().contains(&"is_active"));
}

#[test]
fn each_mistake_is_one_line_naming_its_column() {
    let cases = [
        (
            DJANGO.replace("public.auth_user", "auth_user"),
            "not schema-qualified",
        ),
        (
            DJANGO.replace("\"last_name\"\n", "\"surname\"\n"),
            "columns.last_name: `surname` is not an event field",
        ),
        (
            DJANGO.replace(
                "flag = \"is_active\"",
                "flag = \"is_active\"\ntimestamp = \"deleted_at\"",
            ),
            "exactly one of",
        ),
        (
            DJANGO.replace(
                "email = \"email\"\nusername = \"email\"",
                "username = { field = \"email\", prefix = \"x\" }",
            ),
            "no column is written from `email`",
        ),
        (
            DJANGO.replace("flag = \"is_active\"", "flag = \"email\""),
            "column `email` is written twice",
        ),
        (
            DJANGO.replace("key = \"auth_user_id\"", "key = 'a\"b'"),
            "key: `a\"b`",
        ),
        (
            DJANGO.replace("Teacher = true", "Teacher = true, teacher = false"),
            "names a role twice",
        ),
    ];
    for (toml, expected) in cases {
        let err = TargetTable::resolve(&spec(&toml)).unwrap_err().to_string();
        assert!(err.contains(expected), "{expected}: {err}");
        assert!(!err.contains('\n'), "{err}");
    }
}

#[test]
fn mixed_case_names_keep_their_case() {
    let m = TargetTable::resolve(&spec(
        r#"
[target]
table = "Identity.AspNetUsers"
key = "AuthUserId"
[target.columns]
Email = "email"
UserName = "email"
[target.deactivation]
flag = "IsActive"
"#,
    ))
    .unwrap();
    assert_eq!(
        (m.schema.as_str(), m.table.as_str()),
        ("Identity", "AspNetUsers")
    );
    assert_eq!(m.written(), ["Email", "UserName", "IsActive"]);
}

#[test]
fn free_email_is_a_pattern_holding_the_auth_id() {
    let with = |p: &str| spec(&format!("{DJANGO}free_email = \"{p}\"\n"));
    let m = TargetTable::resolve(&with("deleted+{auth_id}@invalid")).unwrap();
    assert_eq!(m.free_email.as_deref(), Some("deleted+{auth_id}@invalid"));
    assert_eq!(
        TargetTable::resolve(&spec(DJANGO)).unwrap().free_email,
        None
    );
    let err = TargetTable::resolve(&with("deleted@invalid")).unwrap_err();
    assert!(err.to_string().contains("deactivation.free_email"), "{err}");
}

const IDENTITY: &str = r#"
[target]
table = "public.AspNetUsers"
key = "auth_user_id"
[target.columns]
Id = "auth_id_on_insert"
Email = "email"
TwoFactorEnabled = { constant = false, insert_only = true }
LockoutEnabled = { constant = true }
[target.deactivation]
timestamp = "LockoutEnd"
timestamp_value = "9999-12-31T23:59:59+00:00"
"#;

#[test]
fn insert_only_sources_are_written_once() {
    let m = TargetTable::resolve(&spec(IDENTITY)).unwrap();
    let source = |c: &str| m.columns.iter().find(|(n, _)| n == c).unwrap().1.clone();
    assert_eq!(source("Id"), Source::AuthIdOnInsert);
    assert_eq!(
        source("TwoFactorEnabled"),
        Source::ConstantOnInsert("false".into())
    );
    assert_eq!(source("LockoutEnabled"), Source::Constant("true".into()));
    let insert_only: Vec<&str> = m
        .columns
        .iter()
        .filter(|(_, s)| s.insert_only())
        .map(|(c, _)| c.as_str())
        .collect();
    assert_eq!(insert_only, ["Id", "TwoFactorEnabled"]);
}

#[test]
fn timestamp_value_is_an_rfc3339_time_beside_a_timestamp() {
    let m = TargetTable::resolve(&spec(IDENTITY)).unwrap();
    assert_eq!(m.deactivation, Deactivation::Timestamp("LockoutEnd".into()));
    assert_eq!(
        m.timestamp_value.as_deref(),
        Some("9999-12-31T23:59:59Z"),
        "written back in one form"
    );
    assert_eq!(
        TargetTable::resolve(&spec(DJANGO)).unwrap().timestamp_value,
        None
    );
    let cases = [
        (
            IDENTITY.replace("+00:00", "' OR true --"),
            "is not an RFC 3339 time",
        ),
        (
            IDENTITY.replace("T23:59:59+00:00", ""),
            "is not an RFC 3339 time",
        ),
        (
            format!("{DJANGO}timestamp_value = \"9999-12-31T23:59:59Z\"\n"),
            "goes with `timestamp`",
        ),
    ];
    for (toml, expected) in cases {
        let err = TargetTable::resolve(&spec(&toml)).unwrap_err().to_string();
        assert!(err.contains(expected), "{expected}: {err}");
        assert!(err.contains("deactivation.timestamp_value"), "{err}");
    }
}
