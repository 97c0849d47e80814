use super::*;
use crate::target_table::Deactivation;
use crate::target_table::{Case, Computed, Limit};
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

const COMPUTED: &str = r#"
[target]
table = "public.users"
key = "auth_user_id"
[target.columns]
name = { template = "{first_name} {last_name}" }
username = { field = "email", case = "lower", max_length = 150, too_long = "refuse" }
email = { field = "email", case = "lower" }
NormalizedEmail = { field = "email", case = "upper" }
display = { template = "{last_name}, {first_name}", max_length = 30, too_long = "truncate" }
[target.deactivation]
flag = "is_active"
"#;

#[test]
fn computed_columns_resolve_and_a_cased_email_is_the_email_column() {
    let m = TargetTable::resolve(&spec(COMPUTED)).unwrap();
    assert_eq!(m.email, "email", "written in lower case, without a limit");
    let source = |c: &str| m.columns.iter().find(|(n, _)| n == c).unwrap().1.clone();
    assert_eq!(
        source("username"),
        Source::Computed(Computed {
            value: Value::Field(Field::Email),
            case: Some(Case::Lower),
            limit: Some(Limit {
                max: 150,
                too_long: TooLong::Refuse
            }),
        })
    );
    let Source::Computed(display) = source("display") else {
        panic!("computed")
    };
    assert_eq!(
        display.value,
        Value::Template(Template::parse("{last_name}, {first_name}").unwrap())
    );
    assert_eq!(
        source("NormalizedEmail").email_case(),
        Some(Some(Case::Upper))
    );
    // Only a cased email with a refusing limit: still the email column.
    let only = COMPUTED
        .replace("email = { field = \"email\", case = \"lower\" }\n", "")
        .replace(
            "NormalizedEmail = { field = \"email\", case = \"upper\" }\n",
            "",
        );
    assert_eq!(
        TargetTable::resolve(&spec(&only)).unwrap().email,
        "username"
    );
}

#[test]
fn each_computed_mistake_is_one_line_naming_its_column() {
    let name = "name = { template = \"{first_name} {last_name}\" }";
    let cases = [
        (
            "name = { template = \"{first_name} {password_hash}\" }",
            "columns.name: template `{first_name} {password_hash}`: `{password_hash}` may not be written",
        ),
        (
            "name = { template = \"{nick}\" }",
            "`{nick}` is not an event field",
        ),
        ("name = { template = \"{first_name\" }", "without its `}`"),
        ("name = { template = \"Anonymous\" }", "no placeholder"),
        (
            "name = { template = \"{first_name}\", case = \"title\" }",
            "columns.name: case `title`",
        ),
        (
            "name = { template = \"{first_name}\", max_length = 10 }",
            "`max_length` needs `too_long",
        ),
        (
            "name = { template = \"{first_name}\", too_long = \"refuse\" }",
            "`too_long` needs a `max_length`",
        ),
        (
            "name = { template = \"{first_name}\", max_length = 10, too_long = \"cut\" }",
            "too_long `cut`",
        ),
        (
            "name = { template = \"{first_name}\", max_length = 0, too_long = \"refuse\" }",
            "max_length 0",
        ),
        (
            "name = { field = \"password_hash\", case = \"lower\" }",
            "`password_hash` takes no `case`",
        ),
        (
            "name = { field = \"email\", prefix = \"x\", case = \"lower\" }",
            "`prefix` and `bcrypt` do not go with",
        ),
    ];
    for (line, expected) in cases {
        let err = TargetTable::resolve(&spec(&COMPUTED.replace(name, line)))
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{expected}: {err}");
        assert!(!err.contains('\n'), "{err}");
    }
    // A truncated email is no email to adopt rows or find conflicts by.
    let truncated = COMPUTED
        .replace("email = { field = \"email\", case = \"lower\" }\n", "")
        .replace(
            "NormalizedEmail = { field = \"email\", case = \"upper\" }\n",
            "",
        )
        .replace("\"refuse\" }", "\"truncate\" }");
    let err = TargetTable::resolve(&spec(&truncated)).unwrap_err();
    assert!(
        err.to_string()
            .contains("no column is written from `email`"),
        "{err}"
    );
}

/// `timestamp_value` is whole seconds: the sync knows its own deactivation by that exact
/// value, and a `timestamp(0)` column (Laravel's `deleted_at`) would round a fraction
/// into a value the sync no longer recognizes (never lifted on reactivation).
#[test]
fn timestamp_value_is_whole_seconds() {
    let toml = IDENTITY.replace("T23:59:59+00:00", "T23:59:59.5+00:00");
    assert_ne!(toml, IDENTITY);
    let err = TargetTable::resolve(&spec(&toml)).unwrap_err().to_string();
    assert!(err.contains("whole seconds"), "{err}");
}
