//! The upsert of a target table: every written column from the batch row, and which of
//! the audit trail's fields each write changed.

use super::values::{
    Param, Types, column_value, deactivation, key_of, reason_value, rendered_alias, tombstone,
};
use super::{q, table};
use crate::store::audit::FIELDS;
use crate::store::upsert_sql::{Upsert, upsert_sql};
use crate::target_table::{Deactivation, Field, Source, TargetTable, Value};

/// The UNNEST of the batch, as alias `i`, with the computed columns' arrays after the nine.
fn batch(params: &[Param]) -> String {
    let rendered: Vec<usize> = params
        .iter()
        .enumerate()
        .filter(|(_, p)| matches!(p, Param::Rendered(_)))
        .map(|(j, _)| 10 + j)
        .collect();
    let arrays: String = rendered.iter().map(|n| format!(", ${n}::text[]")).collect();
    let aliases: String = rendered
        .iter()
        .map(|&n| format!(", {}", rendered_alias(n)))
        .collect();
    format!(
        "UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
         $7::text[], $8::bool[], $9::text[]{arrays}) AS i(auth_user_id, email, first_name, \
         last_name, password_hash, role, services, active, reason{aliases})"
    )
}

/// The upsert, returning per row its key, whether it was inserted, and the `FIELDS` bits
/// of the columns it changed. Constants and role maps go to `params`.
pub(super) fn upsert_changes(m: &TargetTable, types: &Types, params: &mut Vec<Param>) -> String {
    let mut insert_cols = vec![q(&m.key)];
    let mut insert_vals = vec![key_of(m, types, "i.auth_user_id")];
    let mut updates = Vec::new();
    // Columns set to `now()` change on every write: left out of "did anything change".
    let mut always_new = Vec::new();
    let mut bits = Vec::new();
    for (col, source) in &m.columns {
        insert_cols.push(q(col));
        insert_vals.push(column_value(source, &types[col], params));
        if !source.insert_only() {
            updates.push(update_of(m, col, source, params));
        }
        if *source == Source::Now {
            always_new.push(updates.len() - 1);
        }
        let bit = field_bits(source);
        if bit != 0 {
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
        updates.push(format!("{} = n.{}", q(r), q(r)));
        bits.push((r.clone(), bit_of("deactivation_reason")));
    }
    let changed: Vec<String> = bits
        .iter()
        .map(|(c, b)| {
            format!(
                "(CASE WHEN o.{0} IS DISTINCT FROM u.{0} THEN {b} ELSE 0 END)",
                q(c)
            )
        })
        .collect();
    let (olds, news): (Vec<String>, Vec<String>) = updates
        .iter()
        .enumerate()
        .filter(|(i, _)| !always_new.contains(i))
        .filter_map(|(_, u)| u.split_once(" = "))
        .map(|(c, v)| (format!("u.{c}"), v.to_string()))
        .unzip();
    let values: Vec<String> = insert_vals
        .iter()
        .zip(&insert_cols)
        .map(|(v, c)| format!("{v} AS {c}"))
        .collect();
    // A row whose every column already holds what it would be set to keeps its version
    // (no WAL, returned as unchanged).
    let batch = batch(params);
    upsert_sql(&Upsert {
        table: &table(m),
        key: &q(&m.key),
        batch: &batch,
        values: &values.join(", "),
        columns: &insert_cols.join(", "),
        sets: &updates.join(", "),
        olds: &olds.join(", "),
        news: &news.join(", "),
        changed: &changed.join(" | "),
    })
}

/// `col = n.col` (the batch row's value), but with `free_email` a row that holds its tombstone keeps it
/// while it stays deactivated: the email it had may belong to another user by now.
fn update_of(m: &TargetTable, col: &str, source: &Source, params: &mut Vec<Param>) -> String {
    let c = q(col);
    let plain = format!("{c} = n.{c}");
    let (Some(pattern), Some(case)) = (&m.free_email, source.email_case()) else {
        return plain;
    };
    params.push(Param::Text(Some(pattern.clone())));
    let stays_inactive = match &m.deactivation {
        Deactivation::Flag(d) => format!("NOT n.{}", q(d)),
        Deactivation::Timestamp(d) => format!("n.{} IS NOT NULL", q(d)),
    };
    let tomb = tombstone(
        &format!("${}", 9 + params.len()),
        &format!("u.{}", q(&m.key)),
        case,
    );
    format!("{c} = CASE WHEN {stays_inactive} AND u.{c}::text = {tomb} THEN u.{c} ELSE n.{c} END")
}

fn bit_of(name: &str) -> i16 {
    let i = FIELDS
        .iter()
        .position(|f| *f == name)
        .expect("a trail field");
    1 << i
}

/// The trail's fields a change of the column stands for. A template's change is told as
/// a change of each field in it: the column alone cannot say which one changed.
fn field_bits(source: &Source) -> i16 {
    match source {
        Source::Field { field, .. } => bit_of(field.name()),
        Source::RoleMap { .. } => bit_of(Field::Role.name()),
        Source::Computed(c) => match &c.value {
            Value::Field(f) => bit_of(f.name()),
            Value::Template(t) => t.fields.iter().fold(0, |m, f| m | bit_of(f.name())),
        },
        _ => 0,
    }
}
