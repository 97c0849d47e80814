use super::*;
use proptest::prelude::*;
use time::OffsetDateTime;

fn row(first: Option<&str>, last: Option<&str>) -> UserRow {
    UserRow {
        email: "Ada.Lovelace@Example.com".into(),
        first_name: first.map(Into::into),
        last_name: last.map(Into::into),
        password_hash: None,
        role: Some("student".into()),
        allowed_services: vec![],
        is_active: true,
        deactivation_reason: None,
        source_updated_at: OffsetDateTime::UNIX_EPOCH,
    }
}

fn template(t: &str) -> Computed {
    Computed {
        value: Value::Template(Template::parse(t).unwrap()),
        case: None,
        limit: None,
    }
}

fn limited(t: &str, max: usize, too_long: TooLong) -> Computed {
    Computed {
        limit: Some(Limit { max, too_long }),
        ..template(t)
    }
}

#[test]
fn a_missing_part_leaves_no_separator_behind() {
    let cases = [
        (
            "{first_name} {last_name}",
            Some("Ada"),
            Some("Lovelace"),
            Some("Ada Lovelace"),
        ),
        (
            "{first_name} {last_name}",
            None,
            Some("Lovelace"),
            Some("Lovelace"),
        ),
        (
            "{first_name} {last_name}",
            Some("Ada"),
            Some(""),
            Some("Ada"),
        ),
        ("{first_name} {last_name}", Some("  "), None, None),
        (
            "{last_name}, {first_name}",
            None,
            Some("Lovelace"),
            Some("Lovelace"),
        ),
        ("{last_name}, {first_name}", Some("Ada"), None, Some("Ada")),
        (
            "{last_name}, {first_name} ({role})",
            None,
            Some("Lovelace"),
            Some("Lovelace (student)"),
        ),
        (
            "Dr. {first_name} {last_name}",
            None,
            Some("Lovelace"),
            Some("Lovelace"),
        ),
        (
            "Dr. {first_name} {last_name}",
            Some("Ada"),
            None,
            Some("Dr. Ada"),
        ),
        ("<{first_name}>", None, None, None),
        (
            "{first_name}{last_name}",
            Some("Ada"),
            Some("L"),
            Some("AdaL"),
        ),
        (" {first_name} ", Some("Ada"), None, Some("Ada")),
    ];
    for (t, first, last, expected) in cases {
        let got = template(t).render(&row(first, last)).unwrap();
        assert_eq!(got.as_deref(), expected, "{t} with {first:?} {last:?}");
    }
}

#[test]
fn a_field_keeps_an_empty_value_and_a_missing_one_is_none() {
    let c = |f| Computed {
        value: Value::Field(f),
        case: Some(Case::Lower),
        limit: None,
    };
    let r = row(Some(""), None);
    assert_eq!(c(Field::FirstName).render(&r), Ok(Some(String::new())));
    assert_eq!(c(Field::LastName).render(&r), Ok(None));
    assert_eq!(
        c(Field::Email).render(&r),
        Ok(Some("ada.lovelace@example.com".into()))
    );
}

#[test]
fn case_maps_one_character_for_one() {
    assert_eq!(cased("Straße", Case::Upper), "STRAßE");
    assert_eq!(cased("ÉCOLE", Case::Lower), "école");
    // 'İ' lower-cases to two characters in full mapping: kept.
    assert_eq!(cased("İSTANBUL", Case::Lower), "İstanbul");
    assert_eq!(cased("ΟΔΟΣ", Case::Lower), "οδοσ");
}

#[test]
fn a_long_value_is_cut_on_a_character_boundary_or_refused() {
    let r = row(Some("Élodie"), Some("😀😀"));
    let t = "{first_name} {last_name}";
    assert_eq!(
        limited(t, 8, TooLong::Truncate).render(&r),
        Ok(Some("Élodie 😀".into()))
    );
    assert_eq!(
        limited(t, 9, TooLong::Truncate).render(&r),
        Ok(Some("Élodie 😀😀".into()))
    );
    assert_eq!(
        limited(t, 8, TooLong::Refuse).render(&r),
        Err(TooLongValue { length: 9, max: 8 })
    );
    assert_eq!(
        limited(t, 9, TooLong::Refuse)
            .render(&r)
            .unwrap()
            .unwrap()
            .chars()
            .count(),
        9
    );
}

#[test]
fn templates_refuse_what_they_cannot_render() {
    for (t, says) in [
        (
            "{first_name} {password_hash}",
            "`{password_hash}` may not be written",
        ),
        (
            "{allowed_services}",
            "`{allowed_services}` may not be written",
        ),
        ("{nickname}", "`{nickname}` is not an event field"),
        ("{first_name", "a `{` without its `}`"),
        ("{first_{name}}", "a `{` without its `}`"),
        ("first_name}", "a `}` without its `{`"),
        ("just text", "no placeholder"),
        ("", "no placeholder"),
    ] {
        let err = Template::parse(t).unwrap_err();
        assert!(err.contains(says), "{t}: {err}");
    }
    let t = Template::parse("a{email}b{role}").unwrap();
    assert_eq!(t.texts, ["a", "b", ""]);
    assert_eq!(t.fields, [Field::Email, Field::Role]);
}

proptest! {
    /// Truncation never splits a character and never leaves more than the limit; a value
    /// within the limit is kept whole, and refusal happens exactly when truncation cuts.
    #[test]
    fn truncation_keeps_whole_characters_within_the_limit(
        first in "\\PC{0,12}",
        last in "[a-zé😀\\u{301} ]{0,12}",
        max in 1usize..20,
        upper in any::<bool>(),
    ) {
        let r = row(Some(&first), Some(&last));
        let case = upper.then_some(Case::Upper);
        let mut cut = limited("{first_name} {last_name}", max, TooLong::Truncate);
        cut.case = case;
        let whole = cut.unlimited(&r);
        let got = cut.render(&r).unwrap();
        match (&whole, &got) {
            (Some(w), Some(g)) => {
                prop_assert!(g.chars().count() <= max);
                prop_assert!(w.starts_with(g.as_str()));
                prop_assert_eq!(w.chars().count() <= max, w == g);
                let refused = Computed { limit: Some(Limit { max, too_long: TooLong::Refuse }), ..cut.clone() };
                prop_assert_eq!(refused.render(&r).is_err(), w != g);
            }
            (None, None) => {}
            _ => prop_assert!(false, "{whole:?} {got:?}"),
        }
        if let Some(w) = &whole {
            // The case never changes the length.
            let plain = template("{first_name} {last_name}").unlimited(&r).unwrap();
            prop_assert_eq!(w.chars().count(), plain.chars().count());
        }
    }
}
