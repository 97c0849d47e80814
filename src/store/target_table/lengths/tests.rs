use super::*;
use crate::target_table::{Case, Computed, Limit, TooLong, Value};

fn column(udt: &str, max_chars: Option<i32>) -> Column {
    Column {
        udt: udt.into(),
        udt_schema: "pg_catalog".into(),
        nullable: false,
        has_default: false,
        generated: false,
        max_chars,
    }
}

fn computed(field: Field, case: Option<Case>, max: Option<usize>) -> Source {
    Source::Computed(Computed {
        value: Value::Field(field),
        case,
        limit: max.map(|max| Limit {
            max,
            too_long: TooLong::Refuse,
        }),
    })
}

fn target(columns: Vec<(&str, Source)>, free_email: Option<&str>) -> TargetTable {
    TargetTable {
        schema: "public".into(),
        table: "users".into(),
        key: "auth_user_id".into(),
        email: "email".into(),
        columns: columns
            .into_iter()
            .map(|(c, s)| (c.to_string(), s))
            .collect(),
        deactivation: crate::target_table::Deactivation::Flag("active".into()),
        reason: None,
        free_email: free_email.map(Into::into),
        timestamp_value: None,
    }
}

#[test]
fn a_max_length_over_the_varchar_is_a_problem_and_none_a_warning() {
    let m = target(
        vec![
            ("email", computed(Field::Email, Some(Case::Lower), None)),
            ("username", computed(Field::Email, None, Some(200))),
            ("first_name", computed(Field::FirstName, None, Some(150))),
            (
                "password",
                Source::Field {
                    field: Field::PasswordHash,
                    prefix: "bcrypt$".into(),
                    bcrypt: None,
                },
            ),
            ("notes", computed(Field::Role, None, None)),
        ],
        None,
    );
    let types: Types = [
        ("email", column("varchar", Some(254))),
        ("username", column("varchar", Some(150))),
        ("first_name", column("bpchar", Some(150))),
        ("password", column("varchar", Some(66))),
        ("notes", column("text", None)),
    ]
    .into_iter()
    .map(|(c, t)| (c.to_string(), t))
    .collect();
    let (problems, warnings) = length_problems(&m, &types);
    assert_eq!(
        problems,
        [
            "column `username`: max_length 200 is over the column's varchar(150)",
            "column `password` is varchar(66): a bcrypt hash with its prefix takes 67 characters",
        ]
    );
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("column `email` is varchar(254) and has no max_length"),
        "{warnings:?}"
    );
}

#[test]
fn the_tombstone_must_fit_every_column_written_from_the_email() {
    // "deleted+" + 36 + "@invalid": 52 characters.
    let m = target(
        vec![
            ("email", computed(Field::Email, None, Some(50))),
            (
                "NormalizedEmail",
                computed(Field::Email, Some(Case::Upper), None),
            ),
            (
                "UserName",
                Source::Field {
                    field: Field::Email,
                    prefix: String::new(),
                    bcrypt: None,
                },
            ),
        ],
        Some("deleted+{auth_id}@invalid"),
    );
    let types: Types = [
        ("email", column("varchar", Some(256))),
        ("NormalizedEmail", column("varchar", Some(51))),
        ("UserName", column("varchar", Some(52))),
    ]
    .into_iter()
    .map(|(c, t)| (c.to_string(), t))
    .collect();
    let (problems, _) = length_problems(&m, &types);
    assert_eq!(
        problems,
        [
            "deactivation.free_email: the tombstone takes 52 characters, over column `email`'s \
             max_length 50",
            "deactivation.free_email: the tombstone takes 52 characters, over column \
             `NormalizedEmail`'s varchar(51)",
        ]
    );
}

/// A pattern holding `{auth_id}` twice takes two uuids: its length is counted with both,
/// so a tombstone the column cannot hold is refused at start, not at the first freed email.
#[test]
fn a_tombstone_with_the_auth_id_twice_counts_both() {
    // "{auth_id}" twice around "@": 36 + 1 + 36 = 73 characters.
    let email = Source::Field {
        field: Field::Email,
        prefix: String::new(),
        bcrypt: None,
    };
    let m = target(vec![("email", email)], Some("{auth_id}@{auth_id}"));
    let types: Types = [("email".to_string(), column("varchar", Some(60)))].into();
    let (problems, _) = length_problems(&m, &types);
    assert_eq!(
        problems,
        [
            "deactivation.free_email: the tombstone takes 73 characters, over column `email`'s \
          varchar(60)"
        ]
    );
}
