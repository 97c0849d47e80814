//! How each column of a target table is written: the batch row's value (`i`), in the
//! column's form and cast to its type.

use super::q;
use crate::target_table::{AUTH_ID, Case, Computed, Deactivation, Field, Source, TargetTable};
use std::collections::HashMap;

/// A target column as the database describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Column {
    /// `information_schema.columns.udt_name`: `bool`, `text`, `varchar`, `_text`, `uuid`...
    pub udt: String,
    /// `information_schema.columns.udt_schema`: where the type lives (`pg_catalog`, or
    /// `public` for an extension's `citext`, or the backend's schema for an enum), since
    /// the service's `search_path` is its own schema only.
    pub udt_schema: String,
    pub nullable: bool,
    pub has_default: bool,
    /// GENERATED ALWAYS (a generated column or an identity): never written by us.
    pub generated: bool,
    /// `information_schema.columns.character_maximum_length`: the n of `varchar(n)`.
    pub max_chars: Option<i32>,
}

impl Column {
    /// The most characters a `varchar(n)` or `char(n)` column holds.
    pub fn char_limit(&self) -> Option<i32> {
        self.max_chars
            .filter(|_| matches!(self.udt.as_str(), "varchar" | "bpchar"))
    }
}

pub(super) type Types = HashMap<String, Column>;

/// A parameter beyond the batch's arrays.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Param {
    Text(Option<String>),
    Texts(Vec<String>),
    /// A computed column's values, rendered per batch row: an array beside the batch's,
    /// in its UNNEST as `i.c<N>` ($N this parameter).
    Rendered(Computed),
}

/// The alias of the batch's column for the computed parameter `$n`.
pub(super) fn rendered_alias(n: usize) -> String {
    format!("c{n}")
}

/// The auth id as the key column holds it (uuid, or its text form).
pub(super) fn key_of(m: &TargetTable, types: &Types, id: &str) -> String {
    if types[&m.key].udt == "uuid" {
        id.to_string()
    } else {
        format!("{id}::text")
    }
}

fn is_text(udt: &str) -> bool {
    matches!(udt, "text" | "varchar" | "bpchar" | "citext")
}

/// A written column's value from the batch row, cast to the column's type; constants and
/// role maps add parameters.
pub(super) fn column_value(source: &Source, column: &Column, params: &mut Vec<Param>) -> String {
    let raw = match source {
        Source::Field {
            field: Field::AllowedServices,
            ..
        } => services(&column.udt),
        _ => value(source, params),
    };
    // A text column that may not be NULL gets '' for a field the event left out
    // (Django's names): the backend's convention for "none".
    // The services are never NULL: the batch binds a JSON array for every row (and
    // '' is no JSON).
    let raw = match source {
        Source::Field {
            field: Field::AllowedServices,
            ..
        } => raw,
        Source::Field { .. } | Source::Computed(_) if !column.nullable && is_text(&column.udt) => {
            format!("coalesce({raw}, '')")
        }
        _ => raw,
    };
    cast(raw, column)
}

/// The allowed services in the column's form: an array, JSON, or JSON text.
fn services(udt: &str) -> String {
    match udt {
        "_text" | "_varchar" => "ARRAY(SELECT jsonb_array_elements_text(i.services::jsonb))".into(),
        _ => "i.services::jsonb".into(),
    }
}

/// `expr` as the column's type, named with its schema: the service's `search_path` holds
/// its own schema only.
pub(super) fn cast(expr: String, column: &Column) -> String {
    format!("({expr})::{}.{}", q(&column.udt_schema), q(&column.udt))
}

/// The reason as the reason column holds it: "no reason" is NULL, or '' in a column that
/// may not be NULL (Rails' `null: false, default: ""`).
pub(super) fn reason_value(reason: &str, column: &Column) -> String {
    let raw = if column.nullable {
        reason.to_string()
    } else {
        format!("coalesce({reason}, '')")
    };
    cast(raw, column)
}

/// A column's value from the batch row `i`; constants and role maps add parameters.
fn value(source: &Source, params: &mut Vec<Param>) -> String {
    let mut bind = |p: Param| {
        params.push(p);
        format!("${}", 9 + params.len())
    };
    match source {
        Source::Field {
            field,
            prefix,
            bcrypt,
        } => {
            let v = format!("i.{}", field.name()).replace("i.allowed_services", "i.services");
            let v = match bcrypt {
                None => v,
                Some(variant) => {
                    let variant = bind(Param::Text(Some(format!("${variant}$"))));
                    format!("regexp_replace({v}, '^\\$2[abxy]\\$', {variant})")
                }
            };
            if prefix.is_empty() {
                v
            } else {
                format!("{} || {v}", bind(Param::Text(Some(prefix.clone()))))
            }
        }
        Source::Constant(c) | Source::ConstantOnInsert(c) => {
            format!("{}::text", bind(Param::Text(Some(c.clone()))))
        }
        Source::AuthIdOnInsert => "i.auth_user_id::text".into(),
        Source::RoleMap { map, default } => {
            let roles = bind(Param::Texts(map.keys().cloned().collect()));
            let values = bind(Param::Texts(map.values().cloned().collect()));
            let default = bind(Param::Text(default.clone()));
            format!(
                "coalesce((SELECT m.v FROM UNNEST({roles}::text[], {values}::text[]) AS m(r, v) \
                 WHERE m.r = lower(i.role)), {default}::text)"
            )
        }
        Source::NowOnInsert | Source::Now => "now()".into(),
        Source::Computed(c) => {
            params.push(Param::Rendered(c.clone()));
            format!("i.{}", rendered_alias(9 + params.len()))
        }
    }
}

/// (column, value on insert, assignment on update) of the deactivation column. A
/// timestamp keeps the first deactivation's value while the user stays deactivated.
pub(super) fn deactivation(m: &TargetTable, types: &Types) -> (String, String, String) {
    match &m.deactivation {
        Deactivation::Flag(c) => (
            c.clone(),
            cast("i.active".into(), &types[c]),
            format!("{0} = n.{0}", q(c)),
        ),
        Deactivation::Timestamp(c) => (
            c.clone(),
            cast(
                format!(
                    "CASE WHEN i.active THEN NULL ELSE {} END",
                    deactivated_at(m)
                ),
                &types[c],
            ),
            format!(
                "{} = {}",
                q(c),
                timestamp_status(m, c, "n.{c} IS NULL", "n.{c}")
            ),
        ),
    }
}

/// What a deactivation timestamp gets: the time, or `timestamp_value`.
pub(super) fn deactivated_at(m: &TargetTable) -> String {
    match &m.timestamp_value {
        None => "now()".into(),
        Some(v) => format!("'{v}'::timestamptz"),
    }
}

/// The new value of timestamp column `c` of row `u` (`{c}` in the arguments stands for its
/// quoted name): when `active`, cleared if the sync had set it (a value the backend set
/// itself, any but `timestamp_value`, stays); else `deactivated`, unless the row is
/// deactivated already (its first deactivation's value stays). Without `timestamp_value`
/// any value is the sync's: cleared, or kept.
pub(super) fn timestamp_status(
    m: &TargetTable,
    c: &str,
    active: &str,
    deactivated: &str,
) -> String {
    let c = q(c);
    let sync_active = super::active(m, "u");
    format!(
        "CASE WHEN {} THEN (CASE WHEN {sync_active} THEN u.{c} END) \
         WHEN {sync_active} THEN {} ELSE u.{c} END",
        active.replace("{c}", &c),
        deactivated.replace("{c}", &c)
    )
}

/// The `free_email` tombstone of the row whose key is `key`, from the pattern `pattern`
/// (a parameter), in the case of the column it goes to (ASP.NET's upper-case
/// `NormalizedEmail`). Postgres's case mapping here: a pattern is plain ASCII in practice,
/// and the auth id's hex digits map alike in every locale.
pub(super) fn tombstone(pattern: &str, key: &str, case: Option<Case>) -> String {
    let tomb = format!("replace({pattern}::text, '{AUTH_ID}', {key}::text)");
    match case {
        None => tomb,
        Some(Case::Lower) => format!("lower({tomb})"),
        Some(Case::Upper) => format!("upper({tomb})"),
    }
}
