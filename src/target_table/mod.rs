//! Where the users go: the service's own `users` table, or a table of the backend's named
//! by the settings file's `[target]` section. Pure: what each target column is written
//! from; the store turns it into SQL and checks it against the database at start.
//!
//! ```toml
//! [target]
//! table = "public.auth_user"          # schema-qualified
//! key = "auth_user_id"                # holds the auth user id (uuid or text), unique
//! [target.columns]
//! email = "email"                     # an event field
//! username = "email"                  # the email as a username
//! password = { field = "password_hash", prefix = "bcrypt$" }   # or bcrypt = "2y"
//! is_staff = { role_map = { admin = true, teacher = true }, default = false }
//! date_joined = "now_on_insert"
//! name = { template = "{first_name} {last_name}", max_length = 150, too_long = "truncate" }
//! login = { field = "email", case = "lower", max_length = 150, too_long = "refuse" }
//! [target.deactivation]
//! flag = "is_active"                  # or: timestamp = "deleted_at"
//! # timestamp_value = "9999-12-31T23:59:59Z"  # optional, with `timestamp`: instead of now()
//! reason = "deactivation_reason"      # optional
//! free_email = "deleted+{auth_id}@invalid"  # optional: see `TargetTable::free_email`
//! ```

mod computed;
mod spec;

pub use computed::{Case, Computed, Limit, Template, TooLong, TooLongValue, Value, cased};
pub use spec::{AUTH_ID, DeactivationSpec, SourceSpec, TargetSpec};

use crate::decide::{Intent, Planned, Reason, UserRow};

use std::collections::BTreeMap;

/// An event field a column can be written from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Email,
    FirstName,
    LastName,
    Role,
    PasswordHash,
    AllowedServices,
}

impl Field {
    pub const ALL: [Field; 6] = [
        Field::Email,
        Field::FirstName,
        Field::LastName,
        Field::Role,
        Field::PasswordHash,
        Field::AllowedServices,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Field::Email => "email",
            Field::FirstName => "first_name",
            Field::LastName => "last_name",
            Field::Role => "role",
            Field::PasswordHash => "password_hash",
            Field::AllowedServices => "allowed_services",
        }
    }

    fn parse(s: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == s)
    }
}

/// What one target column is written from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// An event field as it is; the password hash behind an optional prefix (Django's
    /// `bcrypt$`), never re-hashed. `bcrypt` names the `$2?$` variant a backend insists on:
    /// `2a`, `2b` and `2y` are the same algorithm, but PHP's `password_get_info` (and so
    /// Laravel's hash check) knows a bcrypt hash only by `$2y$`.
    Field {
        field: Field,
        prefix: String,
        bcrypt: Option<String>,
    },
    /// The same value on every row (as text, cast to the column's type).
    Constant(String),
    /// The user's role (case-insensitive) looked up in a map, `default` for any other.
    RoleMap {
        map: BTreeMap<String, String>,
        default: Option<String>,
    },
    /// `now()` when the row is inserted; never written again (`date_joined`).
    NowOnInsert,
    /// `now()` on every write (`updated_at`).
    Now,
    /// The auth id as text when the row is inserted; never written again, so a row the
    /// backend had keeps its own (ASP.NET Identity's `Id`, a string the application makes).
    AuthIdOnInsert,
    /// A constant written when the row is inserted only: a column the backend owns after
    /// that (Identity's `TwoFactorEnabled`, `AccessFailedCount`).
    ConstantOnInsert(String),
    /// A template or a field, with a case or a length limit (see the `computed` module).
    Computed(Computed),
}

impl Source {
    /// Written when the row is inserted, never on an update.
    pub fn insert_only(&self) -> bool {
        matches!(
            self,
            Source::NowOnInsert | Source::AuthIdOnInsert | Source::ConstantOnInsert(_)
        )
    }

    /// Written from the email field: with the case it is written in.
    pub fn email_case(&self) -> Option<Option<Case>> {
        match self {
            Source::Field {
                field: Field::Email,
                ..
            } => Some(None),
            Source::Computed(c) if c.field() == Some(Field::Email) => Some(c.case),
            _ => None,
        }
    }
}

/// How a target row says its user is deactivated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deactivation {
    /// A boolean column, true while the user is active (Django's `is_active`).
    Flag(String),
    /// A timestamp set when the user is deactivated, cleared on reactivation (Laravel's
    /// `deleted_at`); a deactivated row keeps its first deactivation time.
    Timestamp(String),
}

/// The target table as resolved: table, key, and every column this service writes. Columns it does
/// not name are never written.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetTable {
    pub schema: String,
    pub table: String,
    pub key: String,
    /// The column written from the email: used to adopt rows and to find conflicts.
    pub email: String,
    pub columns: Vec<(String, Source)>,
    pub deactivation: Deactivation,
    pub reason: Option<String>,
    /// A tombstone pattern (`{auth_id}` in it): when a user claims an email a deactivated
    /// row of another auth user holds, that row's email columns get the tombstone first,
    /// so a table with a unique email (Laravel, Devise, Django's username) takes the new
    /// user. `None`: the row keeps the email and the new user's insert is refused.
    pub free_email: Option<String>,
    /// With a timestamp deactivation: the value (RFC 3339) it gets instead of the time of
    /// deactivation. Only that value means "deactivated by the sync"; any other is the
    /// backend's (Identity's lockout after failed logins, which ends by itself, or an
    /// administrator's for good) and is neither lifted on activation nor taken for a
    /// deactivation.
    pub timestamp_value: Option<String>,
}

/// A `[target]` section the settings file got wrong, naming the column or key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[target] {0}")]
pub struct TargetTableError(pub String);

impl TargetTable {
    /// Resolves the settings file's `[target]` section.
    pub fn resolve(spec: &TargetSpec) -> Result<TargetTable, TargetTableError> {
        spec::resolve(spec)
    }

    /// Every column written, with the deactivation and reason columns, in a fixed order.
    pub fn written(&self) -> Vec<&str> {
        let mut cols: Vec<&str> = self.columns.iter().map(|(c, _)| c.as_str()).collect();
        cols.push(match &self.deactivation {
            Deactivation::Flag(c) | Deactivation::Timestamp(c) => c,
        });
        cols.extend(self.reason.as_deref());
        cols
    }

    /// Why the event must be refused (dead-lettered as `permanent`, nothing of it
    /// applied): a computed column's value over its `max_length` with `too_long =
    /// "refuse"`. The reason names the column and the lengths, never the value. An event
    /// that deactivates its user is never refused: it becomes a plain deactivation (the
    /// fields are not written), for a refusal would leave the user signing in.
    pub fn refuses(&self, planned: &mut Planned) -> Option<String> {
        let Intent::Upsert(row) = &planned.intent else {
            return None;
        };
        let why = self.too_long(row)?;
        if row.is_active {
            return Some(why);
        }
        planned.intent = Intent::Deactivate(Reason::InactiveUpstream);
        None
    }

    /// The first computed column whose value is over its `max_length` with `too_long =
    /// "refuse"`, said without the value.
    fn too_long(&self, row: &UserRow) -> Option<String> {
        self.columns.iter().find_map(|(column, source)| {
            let Source::Computed(c) = source else {
                return None;
            };
            let too_long = c.render(row).err()?;
            Some(format!(
                "column `{column}` would hold {} characters, over its max_length of {} \
                 (too_long = \"refuse\")",
                too_long.length, too_long.max
            ))
        })
    }
}
