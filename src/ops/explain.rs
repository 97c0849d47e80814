//! `user-sync explain <email | auth id | local id>`: why a user is missing, inactive or
//! still active, from their row, their watermarks and their audit trail, and whether
//! events for them wait in the dead-letter queue.

use super::dlq::{self, DeadLetter};
use crate::settings::Settings;
use crate::store::{RowView, SetupError, Store, TrailEntry, WatermarkView};
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

/// Trail rows shown per user, newest first.
const TRAIL_LIMIT: i64 = 50;
/// Dead letters looked through for the user.
const DLQ_SCAN: usize = 10_000;

#[derive(Debug, Serialize)]
pub struct UserStory {
    pub auth_user_id: Uuid,
    pub row: Option<RowView>,
    pub watermark: Option<WatermarkView>,
    pub trail: Vec<TrailEntry>,
}

#[derive(Debug, Serialize)]
pub struct Explained {
    pub query: String,
    pub users: Vec<UserStory>,
    /// `None`: the broker could not be asked.
    pub dead_letters: Option<Vec<DeadLetter>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema belongs to another service: its users are not this service's.
    #[error("{0}")]
    Config(String),
}

impl From<SetupError> for ExplainError {
    fn from(e: SetupError) -> Self {
        match e {
            SetupError::Outage(e) | SetupError::Mismatch(e) => ExplainError::Database(e),
            config => ExplainError::Config(config.to_string()),
        }
    }
}

pub async fn explain(settings: &Settings, query: &str) -> Result<Explained, ExplainError> {
    let store = Store::new(settings)?;
    store.check_claim().await?;
    let mut users = Vec::new();
    for id in store.find_users(query.trim()).await? {
        users.push(UserStory {
            auth_user_id: id,
            row: store.row_view(id).await?,
            watermark: store.watermark_view(id).await?,
            trail: store.trail(id, TRAIL_LIMIT).await?,
        });
    }
    store.pool().close().await;
    // A UUID nobody has seen comes back as a story with nothing in it.
    users.retain(|u| u.row.is_some() || u.watermark.is_some() || !u.trail.is_empty());
    let ids: Vec<Uuid> = match query.trim().parse::<Uuid>() {
        Ok(id) => vec![id],
        Err(_) => users.iter().map(|u| u.auth_user_id).collect(),
    };
    let email = query.contains('@').then_some(query.trim());
    // Any broker failure only means the DLQ could not be looked at; the report says so.
    let dead_letters = dlq::find(settings, &ids, email, DLQ_SCAN).await.ok();
    Ok(Explained {
        query: query.trim().to_string(),
        users,
        dead_letters,
    })
}

/// Fixed width, to the second, UTC: the table lines up and reads at a glance.
fn at(t: OffsetDateTime) -> String {
    let utc = t.to_offset(time::UtcOffset::UTC);
    utc.format(time::macros::format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second]Z"
    ))
    .unwrap_or_default()
}

impl Explained {
    /// The readable report; the same facts as the JSON.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        if self.users.is_empty() {
            out += &never_seen(&self.query);
        }
        for u in &self.users {
            out += &user_text(u);
        }
        out += &dead_letters_text(self.dead_letters.as_deref());
        out
    }
}

fn never_seen(query: &str) -> String {
    let mut out = format!("{query}: never seen by this service.\n");
    if query.contains('@') {
        out += "No row has this email. Users who are not for this service get no \
                row (and no email is kept for them): try their auth id.\n";
    }
    out
}

/// One user: their row, their watermarks and their trail.
fn user_text(u: &UserStory) -> String {
    let mut out = format!("user {}\n", u.auth_user_id);
    out += &match &u.row {
        Some(r) => row_line(r),
        None => "  row: none (never for this service, or deleted before it had one)\n".into(),
    };
    if let Some(w) = &u.watermark {
        out += &watermark_line(w);
    }
    out += &trail_text(&u.trail);
    out
}

fn row_line(r: &RowView) -> String {
    let state = if r.is_active {
        "ACTIVE".to_string()
    } else {
        format!(
            "INACTIVE ({})",
            r.deactivation_reason.as_deref().unwrap_or("by the backend")
        )
    };
    format!(
        "  row #{}: {} ({}), services [{}], {}\n",
        r.id.map_or("-".to_string(), |id| id.to_string()),
        r.email.as_deref().unwrap_or("-"),
        r.role.as_deref().unwrap_or("-"),
        r.allowed_services.join(", "),
        state
    )
}

fn watermark_line(w: &WatermarkView) -> String {
    format!(
        "  status from {} of {} ({}); fields from {}\n",
        w.status_event_type,
        at(w.status_event_ts),
        if w.status_active {
            "active"
        } else {
            "inactive"
        },
        w.fields_event_ts
            .map_or("no event for this service".into(), at),
    )
}

fn trail_text(trail: &[TrailEntry]) -> String {
    if trail.is_empty() {
        return "  trail: empty (AUDIT_RETENTION_DAYS=0, or pruned)\n".into();
    }
    let rows: Vec<Vec<String>> = trail
        .iter()
        .map(|t| {
            vec![
                at(t.received_at),
                t.event_type.clone(),
                at(t.event_ts),
                t.decision.clone(),
                t.reason.clone().unwrap_or_default(),
                t.changed.join(","),
            ]
        })
        .collect();
    let header = [
        "received",
        "event",
        "event time",
        "decision",
        "reason",
        "changed",
    ];
    "  trail, newest first:\n".to_string() + &indented(&super::table(&header, &rows))
}

fn dead_letters_text(letters: Option<&[DeadLetter]>) -> String {
    match letters {
        None => "dead letters: the broker could not be asked\n".into(),
        Some([]) => "dead letters: none for this user\n".into(),
        Some(d) => {
            format!("dead letters: {} for this user\n", d.len()) + &indented(&dlq::list_table(d))
        }
    }
}

/// A table set under its heading: each line indented by four spaces.
fn indented(table: &str) -> String {
    table.lines().map(|line| format!("    {line}\n")).collect()
}
