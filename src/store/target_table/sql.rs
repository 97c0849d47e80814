//! Statement texts for a target table. The batch arrives as the same UNNEST arrays as for
//! the own table ($1 auth ids, $2 email, $3 first name, $4 last name, $5 password hash,
//! $6 role, $7 allowed services as JSON, $8 active, $9 reason); constants and role maps
//! follow as further parameters. Each value is cast to its column's type.

use super::{active, q, table};
use crate::store::audit::FIELDS;
use crate::target_table::{Deactivation, Field, Source, TargetTable};
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
}

type Types = HashMap<String, Column>;

/// A parameter beyond the batch's arrays.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Param {
    Text(Option<String>),
    Texts(Vec<String>),
}

/// The generated statements of one target table.
#[derive(Debug, Clone)]
pub(crate) struct TargetTableSql {
    /// The watermark guard, telling whether the table has rows without a key.
    pub advance: String,
    pub upsert_changes: String,
    pub adopt: String,
    pub conflicts: String,
    pub update_status: String,
    /// $1 auth ids: those that have a row (an import tells a created user from an update).
    pub existing: String,
    /// Bound after the batch's nine arrays, in order, by `upsert` and `upsert_changes`.
    pub params: Vec<Param>,
    /// No index serves `lower(email)`: each attempt lets the planner hash-join (one scan
    /// of the table per statement) instead of the nested loops the connection prefers,
    /// which would scan the table once per event.
    pub hash_joins: bool,
}

/// The UNNEST of the batch, as alias `i`.
const BATCH: &str = "UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], \
     $6::text[], $7::text[], $8::bool[], $9::text[]) AS i(auth_user_id, email, first_name, \
     last_name, password_hash, role, services, active, reason)";

impl TargetTableSql {
    /// `types`: each written column's type (`information_schema.columns.udt_name`).
    pub(crate) fn new(m: &TargetTable, types: &Types) -> Self {
        let mut params = Vec::new();
        let key = key_of(m, types, "i.auth_user_id");
        let mut insert_cols = vec![q(&m.key)];
        let mut insert_vals = vec![key.clone()];
        let mut updates = Vec::new();
        let mut bits = Vec::new();
        for (col, source) in &m.columns {
            let column = &types[col];
            let raw = match source {
                Source::Field {
                    field: Field::AllowedServices,
                    ..
                } => services(&column.udt),
                _ => value(source, &mut params),
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
                Source::Field { .. } if !column.nullable && is_text(&column.udt) => {
                    format!("coalesce({raw}, '')")
                }
                _ => raw,
            };
            let expr = cast(raw, column);
            insert_cols.push(q(col));
            insert_vals.push(expr);
            match source {
                Source::NowOnInsert => {}
                _ => updates.push(format!("{} = EXCLUDED.{}", q(col), q(col))),
            }
            if let Some(bit) = field_bit(source) {
                bits.push((col.clone(), bit));
            }
        }
        let (dcol, insert_d, update_d) = deactivation(m, types);
        insert_cols.push(q(&dcol));
        insert_vals.push(insert_d);
        updates.push(update_d);
        bits.push((dcol, bit_of("is_active")));
        if let Some(r) = &m.reason {
            insert_cols.push(q(r));
            insert_vals.push(reason_value("i.reason", &types[r]));
            updates.push(format!("{} = EXCLUDED.{}", q(r), q(r)));
            bits.push((r.clone(), bit_of("deactivation_reason")));
        }
        let base = format!(
            "INSERT INTO {} AS u ({}) SELECT {} FROM {BATCH} ON CONFLICT ({}) DO UPDATE SET {}",
            table(m),
            insert_cols.join(", "),
            insert_vals.join(", "),
            q(&m.key),
            updates.join(", ")
        );
        let returned_key = format!("u.{}::uuid", q(&m.key));
        let changed: Vec<String> = bits
            .iter()
            .map(|(c, b)| {
                format!(
                    "(CASE WHEN o.{0} IS DISTINCT FROM u.{0} THEN {b} ELSE 0 END)",
                    q(c)
                )
            })
            .collect();
        TargetTableSql {
            upsert_changes: format!(
                "{base} RETURNING {returned_key}, (u.xmax = 0), \
                 (SELECT ({}) FROM {} o WHERE o.{k} = u.{k})::int2",
                changed.join(" | "),
                table(m),
                k = q(&m.key)
            ),
            advance: crate::store::statements::advance_sql(&format!(
                "SELECT 1 FROM {} n WHERE n.{} IS NULL",
                table(m),
                q(&m.key)
            )),
            adopt: adopt(m, types),
            conflicts: conflicts(m, types),
            update_status: update_status(m, types),
            existing: format!(
                "SELECT x.{k}::uuid FROM {t} x JOIN UNNEST($1::uuid[]) AS i(auth_user_id) \
                 ON x.{k} = {key}",
                t = table(m),
                k = q(&m.key)
            ),
            params,
            hash_joins: false,
        }
    }
}

/// The auth id as the key column holds it (uuid, or its text form).
fn key_of(m: &TargetTable, types: &Types, id: &str) -> String {
    if types[&m.key].udt == "uuid" {
        id.to_string()
    } else {
        format!("{id}::text")
    }
}

fn is_text(udt: &str) -> bool {
    matches!(udt, "text" | "varchar" | "bpchar" | "citext")
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
fn cast(expr: String, column: &Column) -> String {
    format!("({expr})::{}.{}", q(&column.udt_schema), q(&column.udt))
}

/// The reason as the reason column holds it: "no reason" is NULL, or '' in a column that
/// may not be NULL (Rails' `null: false, default: ""`).
fn reason_value(reason: &str, column: &Column) -> String {
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
        Source::Constant(c) => format!("{}::text", bind(Param::Text(Some(c.clone())))),
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
    }
}

fn bit_of(name: &str) -> i16 {
    let i = FIELDS
        .iter()
        .position(|f| *f == name)
        .expect("a trail field");
    1 << i
}

fn field_bit(source: &Source) -> Option<i16> {
    match source {
        Source::Field { field, .. } => Some(bit_of(field.name())),
        Source::RoleMap { .. } => Some(bit_of(Field::Role.name())),
        _ => None,
    }
}

/// (column, value on insert, assignment on conflict) of the deactivation column. A
/// timestamp keeps the first deactivation's time while the user stays deactivated.
fn deactivation(m: &TargetTable, types: &Types) -> (String, String, String) {
    match &m.deactivation {
        Deactivation::Flag(c) => (
            c.clone(),
            cast("i.active".into(), &types[c]),
            format!("{0} = EXCLUDED.{0}", q(c)),
        ),
        Deactivation::Timestamp(c) => (
            c.clone(),
            cast(
                "CASE WHEN i.active THEN NULL ELSE now() END".into(),
                &types[c],
            ),
            format!(
                "{0} = CASE WHEN EXCLUDED.{0} IS NULL THEN NULL ELSE coalesce(u.{0}, EXCLUDED.{0}) END",
                q(c)
            ),
        ),
    }
}

/// Links a row the backend had before the sync (same email, no auth id), an active one
/// first, unless the auth user already has a row. As for the own table, a one-time filter
/// skips the per-row probes once no row lacks a key (the key's unique index finds a NULL).
/// `u.{k} IS NULL` is re-checked on a row another transaction linked meanwhile (see the
/// own table's `ADOPT_SQL`; here the new row version's ctid would also fail the match).
fn adopt(m: &TargetTable, types: &Types) -> String {
    let (t, k, e) = (table(m), q(&m.key), q(&m.email));
    let key = key_of(m, types, "i.auth_user_id");
    format!(
        "UPDATE {t} u SET {k} = {key} \
         FROM UNNEST($1::uuid[], $2::text[]) AS i(auth_user_id, email) \
         WHERE u.{k} IS NULL AND EXISTS (SELECT 1 FROM {t} n WHERE n.{k} IS NULL) \
           AND u.ctid = (SELECT l.ctid FROM {t} l WHERE l.{k} IS NULL \
                         AND lower(l.{e}) = lower(i.email) \
                         ORDER BY {} DESC, l.ctid LIMIT 1) \
           AND NOT EXISTS (SELECT 1 FROM {t} x WHERE x.{k} = {key}) \
         RETURNING i.auth_user_id",
        active(m, "l")
    )
}

fn conflicts(m: &TargetTable, types: &Types) -> String {
    let (t, k, e) = (table(m), q(&m.key), q(&m.email));
    format!(
        "SELECT i.auth_user_id FROM UNNEST($1::uuid[], $2::text[]) AS i(auth_user_id, email) \
         WHERE EXISTS (SELECT 1 FROM {t} c WHERE lower(c.{e}) = lower(i.email) AND {} \
                       AND c.{k} IS DISTINCT FROM {})",
        active(m, "c"),
        key_of(m, types, "i.auth_user_id")
    )
}

/// Gives existing rows the status their newest event set: $1 auth ids, $2 active, $3
/// reason, $4 event time.
fn update_status(m: &TargetTable, types: &Types) -> String {
    let mut sets = vec![match &m.deactivation {
        Deactivation::Flag(c) => format!("{} = {}", q(c), cast("s.active".into(), &types[c])),
        Deactivation::Timestamp(c) => format!(
            "{0} = CASE WHEN s.active THEN NULL ELSE coalesce(u.{0}, now()) END",
            q(c)
        ),
    }];
    if let Some(r) = &m.reason {
        sets.push(format!(
            "{} = {}",
            q(r),
            reason_value("s.reason", &types[r])
        ));
    }
    for (col, source) in &m.columns {
        if *source == Source::Now {
            sets.push(format!("{} = now()", q(col)));
        }
    }
    format!(
        "UPDATE {} u SET {} \
         FROM UNNEST($1::uuid[], $2::bool[], $3::text[], $4::timestamptz[]) \
           AS s(auth_user_id, active, reason, ts) \
         WHERE u.{k} = {} RETURNING u.{k}::uuid",
        table(m),
        sets.join(", "),
        key_of(m, types, "s.auth_user_id"),
        k = q(&m.key)
    )
}
