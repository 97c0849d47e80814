//! The `[target]` section as written in the settings file, and its resolution into a
//! [`TargetTable`] with one clear error per mistake.

mod computed;
mod deactivation;

use super::{Case, Field, Source, TargetTable, TargetTableError, Template, TooLong, Value};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};

/// Where `free_email` puts the deactivated row's auth id.
pub const AUTH_ID: &str = "{auth_id}";

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// `schema.table`.
    pub table: String,
    /// The column holding the auth user id.
    pub key: String,
    pub columns: BTreeMap<String, SourceSpec>,
    pub deactivation: DeactivationSpec,
}

/// A column's source as written: `"email"` (a field), `"now_on_insert"`, `"now"`, or a table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum SourceSpec {
    Name(String),
    Field {
        field: String,
        #[serde(default)]
        prefix: String,
        /// `2a`, `2b` or `2y`: the variant written in the stored bcrypt hash.
        bcrypt: Option<String>,
        #[serde(flatten)]
        shape: ShapeSpec,
    },
    Template {
        template: String,
        #[serde(flatten)]
        shape: ShapeSpec,
    },
    Constant {
        constant: toml_scalar::Scalar,
        /// Written on insert only.
        #[serde(default)]
        insert_only: bool,
    },
    RoleMap {
        role_map: BTreeMap<String, toml_scalar::Scalar>,
        default: Option<toml_scalar::Scalar>,
    },
}

/// A computed column's case and length limit, as written.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct ShapeSpec {
    /// `lower` or `upper`.
    pub case: Option<String>,
    /// In characters.
    pub max_length: Option<i64>,
    /// `truncate` or `refuse`: required with `max_length`.
    pub too_long: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DeactivationSpec {
    /// A boolean column, true while active.
    pub flag: Option<String>,
    /// A timestamp column, set while deactivated.
    pub timestamp: Option<String>,
    /// Where the reason (`deleted`, `access_revoked`, `inactive_upstream`, `absent_from_export`) goes.
    pub reason: Option<String>,
    /// A pattern holding `{auth_id}`: what a deactivated row's email becomes when another
    /// auth user claims that email.
    pub free_email: Option<String>,
    /// With `timestamp`: the value it gets on deactivation (RFC 3339) instead of the time,
    /// e.g. a far future for ASP.NET Identity's `LockoutEnd`.
    pub timestamp_value: Option<String>,
}

/// Constants and role-map values: a string, a number or a boolean, kept as text and cast
/// by the database to the column's type.
pub mod toml_scalar {
    use serde::Deserialize;

    #[derive(Debug, Clone, Deserialize, PartialEq)]
    #[serde(untagged)]
    pub enum Scalar {
        Bool(bool),
        Int(i64),
        Float(f64),
        Text(String),
    }

    impl Scalar {
        pub fn text(&self) -> String {
            match self {
                Scalar::Bool(b) => b.to_string(),
                Scalar::Int(i) => i.to_string(),
                Scalar::Float(f) => f.to_string(),
                Scalar::Text(s) => s.clone(),
            }
        }
    }
}

pub(super) fn resolve(spec: &TargetSpec) -> Result<TargetTable, TargetTableError> {
    let bad = |m: String| Err(TargetTableError(m));
    let Some((schema, table)) = spec.table.split_once('.') else {
        return bad(format!(
            "table: `{}` is not schema-qualified (e.g. public.users)",
            spec.table
        ));
    };
    for (what, name) in [
        ("table", schema),
        ("table", table),
        ("key", spec.key.as_str()),
    ] {
        identifier(what, name)?;
    }
    let mut columns = Vec::new();
    for (column, source) in &spec.columns {
        identifier(&format!("columns.{column}"), column)?;
        columns.push((column.clone(), source_of(column, source)?));
    }
    let deactivation = deactivation::resolve(&spec.deactivation)?;
    let email = email_column(&columns);
    let Some(email) = email else {
        return bad(
            "columns: no column is written from `email` as it is or only in a case (needed to \
             adopt rows and find conflicts)"
                .into(),
        );
    };
    let target_table = TargetTable {
        schema: schema.to_string(),
        table: table.to_string(),
        key: spec.key.clone(),
        email,
        columns,
        deactivation,
        reason: spec.deactivation.reason.clone(),
        free_email: spec.deactivation.free_email.clone(),
        timestamp_value: deactivation::timestamp_value(&spec.deactivation)?,
    };
    let mut seen = HashSet::new();
    for column in target_table
        .written()
        .into_iter()
        .chain([spec.key.as_str()])
    {
        identifier("deactivation", column)?;
        if !seen.insert(column) {
            return bad(format!("column `{column}` is written twice"));
        }
    }
    Ok(target_table)
}

/// The column written from the email that adoption and conflicts compare.
fn email_column(columns: &[(String, Source)]) -> Option<String> {
    // The email as it is first; else one written in a case (Devise's lower-cased email),
    // lower before upper, one whose too long email is refused last (a truncated one never):
    // adoption and conflicts compare lower() of both sides anyway.
    let rank = |s: &Source| match s {
        Source::Field {
            field: Field::Email,
            prefix,
            bcrypt: None,
        } if prefix.is_empty() => Some(0),
        Source::Computed(c) if c.field() == Some(Field::Email) => match c.limit {
            None if c.case == Some(Case::Lower) => Some(1),
            None => Some(2),
            Some(l) if l.too_long == TooLong::Refuse => Some(3),
            Some(_) => None,
        },
        _ => None,
    };
    columns
        .iter()
        .filter_map(|(c, s)| Some((rank(s)?, c)))
        .min()
        .map(|(_, c)| c.clone())
}

fn source_of(column: &str, spec: &SourceSpec) -> Result<Source, TargetTableError> {
    let unknown = |f: &str| {
        TargetTableError(format!(
            "columns.{column}: `{f}` is not an event field ({})",
            Field::ALL.map(Field::name).join(", ")
        ))
    };
    Ok(match spec {
        SourceSpec::Name(n) if n == "now_on_insert" => Source::NowOnInsert,
        SourceSpec::Name(n) if n == "now" => Source::Now,
        SourceSpec::Name(n) if n == "auth_id_on_insert" => Source::AuthIdOnInsert,
        SourceSpec::Name(n) => Source::Field {
            field: Field::parse(n).ok_or_else(|| unknown(n))?,
            prefix: String::new(),
            bcrypt: None,
        },
        SourceSpec::Field {
            field,
            prefix,
            bcrypt,
            shape,
        } if *shape != ShapeSpec::default() => {
            let field = Field::parse(field).ok_or_else(|| unknown(field))?;
            if !prefix.is_empty() || bcrypt.is_some() {
                return Err(TargetTableError(format!(
                    "columns.{column}: `prefix` and `bcrypt` do not go with `case` or `max_length`"
                )));
            }
            computed::resolve(column, Value::Field(field), shape)?
        }
        SourceSpec::Template { template, shape } => {
            let template = Template::parse(template).map_err(|e| {
                TargetTableError(format!("columns.{column}: template `{template}`: {e}"))
            })?;
            computed::resolve(column, Value::Template(template), shape)?
        }
        SourceSpec::Field {
            field,
            prefix,
            bcrypt,
            ..
        } => {
            let field = Field::parse(field).ok_or_else(|| unknown(field))?;
            let variant_ok = bcrypt
                .as_deref()
                .is_none_or(|v| ["2a", "2b", "2y"].contains(&v));
            if !variant_ok || (bcrypt.is_some() && field != Field::PasswordHash) {
                return Err(TargetTableError(format!(
                    "columns.{column}: `bcrypt` is one of 2a, 2b, 2y, and only for password_hash"
                )));
            }
            Source::Field {
                field,
                prefix: prefix.clone(),
                bcrypt: bcrypt.clone(),
            }
        }
        SourceSpec::Constant {
            constant,
            insert_only: false,
        } => Source::Constant(constant.text()),
        SourceSpec::Constant { constant, .. } => Source::ConstantOnInsert(constant.text()),
        SourceSpec::RoleMap { role_map, default } => {
            let map: BTreeMap<String, String> = role_map
                .iter()
                .map(|(r, v)| (r.to_lowercase(), v.text()))
                .collect();
            if map.len() != role_map.len() {
                return Err(TargetTableError(format!(
                    "columns.{column}: role_map names a role twice (roles compare case-insensitively)"
                )));
            }
            Source::RoleMap {
                map,
                default: default.as_ref().map(|d| d.text()),
            }
        }
    })
}

/// Identifiers are quoted in every statement, so any Postgres name fits (`"AspNetUsers"`);
/// a quote or NUL in one is refused rather than escaped, as no real schema has them.
fn identifier(what: &str, name: &str) -> Result<(), TargetTableError> {
    if !name.is_empty() && name.len() <= 63 && !name.contains(['"', '\0']) {
        Ok(())
    } else {
        Err(TargetTableError(format!(
            "{what}: `{name}` is not a Postgres identifier (1-63 bytes, no quote)"
        )))
    }
}

#[cfg(test)]
mod tests;
