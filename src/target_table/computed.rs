//! Computed columns: a value made from event fields (a template, or one field), put in
//! lower or upper case, and held to a length limit. Rendered here, in Rust, so that the
//! length the refusal checks is the length written.
//!
//! Template rule, for `{a} sep {b}` and values that may be missing (absent, null, or blank):
//! the text before the first placeholder is written only when that placeholder has a value,
//! the text after the last only when that one has; the text between two placeholders is
//! a separator, written only between two values present, and when missing values leave
//! several separators side by side, only the one just before the later value is kept.
//! The result is trimmed of whitespace at both ends; nothing left is no value.
//!
//! Case: each character mapped by Rust's Unicode tables when it maps to exactly one
//! character, else kept (`ß` stays `ß` in upper case, as .NET's `ToUpperInvariant`
//! keeps it), so the case never changes a value's length.
//!
//! Length: in characters (Unicode scalar values, as Postgres's `char_length` counts them);
//! a truncated value is cut on a character boundary.

use super::Field;
use crate::decide::UserRow;

/// The fields a template or a case may use: never the password hash or the services.
pub const TEXT_FIELDS: [Field; 4] = [Field::Email, Field::FirstName, Field::LastName, Field::Role];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    Lower,
    Upper,
}

/// What a value longer than `max_length` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TooLong {
    /// Cut to `max_length` characters.
    Truncate,
    /// The event is dead-lettered (`permanent`), nothing of it applied.
    Refuse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// In characters.
    pub max: usize,
    pub too_long: TooLong,
}

/// `texts` around `fields`: `texts[i]` comes before `fields[i]`, and the last text after
/// the last field (`texts.len() == fields.len() + 1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub texts: Vec<String>,
    pub fields: Vec<Field>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// One field, as it is (an empty field stays empty; a missing one is no value).
    Field(Field),
    Template(Template),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Computed {
    pub value: Value,
    pub case: Option<Case>,
    pub limit: Option<Limit>,
}

/// A value over its `max_length` with `too_long = "refuse"`: the lengths only, never the
/// value (personal data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLongValue {
    pub length: usize,
    pub max: usize,
}

impl Computed {
    /// The value written for `row`, or the refusal of `too_long = "refuse"`.
    pub fn render(&self, row: &UserRow) -> Result<Option<String>, TooLongValue> {
        let Some(value) = self.unlimited(row) else {
            return Ok(None);
        };
        let Some(limit) = self.limit else {
            return Ok(Some(value));
        };
        match value.char_indices().nth(limit.max) {
            None => Ok(Some(value)),
            Some((cut, _)) => match limit.too_long {
                TooLong::Truncate => Ok(Some(value[..cut].to_string())),
                TooLong::Refuse => Err(TooLongValue {
                    length: value.chars().count(),
                    max: limit.max,
                }),
            },
        }
    }

    /// The value before its length limit.
    pub fn unlimited(&self, row: &UserRow) -> Option<String> {
        let value = match &self.value {
            Value::Field(f) => field(row, *f).map(str::to_string),
            Value::Template(t) => t.render(row),
        }?;
        Some(match self.case {
            None => value,
            Some(case) => cased(&value, case),
        })
    }

    /// Whether it is one field: the email column may be one with only a case.
    pub fn field(&self) -> Option<Field> {
        match self.value {
            Value::Field(f) => Some(f),
            Value::Template(_) => None,
        }
    }
}

impl Template {
    /// Parses `{field}` placeholders out of literal text; one line naming the mistake.
    pub fn parse(template: &str) -> Result<Template, String> {
        let mut texts = vec![String::new()];
        let mut fields = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find(['{', '}']) {
            if rest[open..].starts_with('}') {
                return Err("a `}` without its `{`".into());
            }
            texts.last_mut().expect("one text").push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let close = after
                .find(['{', '}'])
                .filter(|&c| after[c..].starts_with('}'))
                .ok_or("a `{` without its `}`")?;
            fields.push(placeholder(&after[..close])?);
            texts.push(String::new());
            rest = &after[close + 1..];
        }
        texts.last_mut().expect("one text").push_str(rest);
        if fields.is_empty() {
            return Err("no placeholder (e.g. \"{first_name} {last_name}\")".into());
        }
        Ok(Template { texts, fields })
    }

    fn render(&self, row: &UserRow) -> Option<String> {
        let values: Vec<Option<&str>> = self
            .fields
            .iter()
            .map(|f| field(row, *f).filter(|v| !v.trim().is_empty()))
            .collect();
        let mut out = String::new();
        let mut any = false;
        for (i, value) in values.iter().enumerate() {
            let Some(value) = value else { continue };
            if any || i == 0 {
                out.push_str(&self.texts[i]);
            }
            out.push_str(value);
            any = true;
        }
        if values.last().is_some_and(Option::is_some) {
            out.push_str(self.texts.last().expect("one text"));
        }
        let out = out.trim();
        (!out.is_empty()).then(|| out.to_string())
    }
}

fn placeholder(name: &str) -> Result<Field, String> {
    let allowed = TEXT_FIELDS.map(Field::name).join(", ");
    match Field::parse(name) {
        Some(f) if TEXT_FIELDS.contains(&f) => Ok(f),
        Some(f) => Err(format!(
            "`{{{}}}` may not be written into a template ({allowed} may)",
            f.name()
        )),
        None => Err(format!(
            "`{{{name}}}` is not an event field a template may use ({allowed})"
        )),
    }
}

/// The row's value of a text field.
fn field(row: &UserRow, f: Field) -> Option<&str> {
    match f {
        Field::Email => Some(row.email.as_str()),
        Field::FirstName => row.first_name.as_deref(),
        Field::LastName => row.last_name.as_deref(),
        Field::Role => row.role.as_deref(),
        Field::PasswordHash | Field::AllowedServices => None,
    }
}

/// `value` in `case`, one character for one.
pub fn cased(value: &str, case: Case) -> String {
    value
        .chars()
        .map(|c| match case {
            Case::Lower => one_for_one(c, c.to_lowercase()),
            Case::Upper => one_for_one(c, c.to_uppercase()),
        })
        .collect()
}

/// The mapping of `c` when it is one character, else `c`.
fn one_for_one(c: char, mut mapped: impl Iterator<Item = char>) -> char {
    match (mapped.next(), mapped.next()) {
        (Some(m), None) => m,
        _ => c,
    }
}

#[cfg(test)]
mod tests;
