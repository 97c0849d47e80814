//! `user-sync dlq`: its subcommands and their reports.

use super::exit::Exit;
use super::{Report, fail, json, usage};
use clap::Subcommand;
use std::process::ExitCode;
use user_sync::disposition::DeadKind;
use user_sync::ops::dlq;
use user_sync::settings::Settings;

#[derive(Subcommand)]
pub enum DlqCommand {
    /// One line per dead letter, oldest first; nothing is consumed.
    List {
        /// Show at most this many letters, the oldest first.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        #[command(flatten)]
        report: Report,
    },
    /// Headers and body of the dead letter at a position of `list` (hashes masked).
    Show {
        /// The letter's position as `dlq list` numbers it (1 is the oldest).
        position: usize,
        #[command(flatten)]
        report: Report,
    },
    /// Move dead letters back to the main queue with their attempts reset. Exit 3 when
    /// some of them came straight back to the dead-letter queue: their cause is not fixed.
    Replay {
        /// Only letters of this `x-error-kind`.
        #[arg(long, value_enum)]
        kind: Option<DeadKind>,
        /// Move at most this many letters (of that kind), the oldest first; the rest stay.
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        report: Report,
    },
    /// Delete every dead letter.
    Purge {
        /// Required: purging cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}

pub async fn dlq(settings: &Settings, command: DlqCommand) -> ExitCode {
    match command {
        DlqCommand::List { limit, report } => match dlq::list(settings, limit).await {
            Ok(letters) if report.json => println!("{}", json(&letters)),
            Ok(letters) if letters.is_empty() => println!("the dead-letter queue is empty"),
            Ok(letters) => print!("{}", dlq::list_table(&letters)),
            Err(e) => return fail(e),
        },
        DlqCommand::Show { position, report } => match dlq::show(settings, position).await {
            Ok(Some(shown)) if report.json => println!("{}", json(&shown)),
            Ok(Some(shown)) => print!("{}", dlq::show_text(&shown)),
            Ok(None) => return fail(format!("no dead letter at position {position}")),
            Err(e) => return fail(e),
        },
        DlqCommand::Replay {
            kind,
            limit,
            report,
        } => return replay(settings, kind, limit, report).await,
        DlqCommand::Purge { yes: false } => {
            return usage("purge deletes every dead letter for good; add --yes");
        }
        DlqCommand::Purge { yes: true } => match dlq::purge(settings).await {
            Ok(n) => println!("purged {n} dead letter(s)"),
            Err(e) => return fail(e),
        },
    }
    Exit::Done.into()
}

async fn replay(
    settings: &Settings,
    kind: Option<DeadKind>,
    limit: Option<usize>,
    report: Report,
) -> ExitCode {
    let r = match dlq::replay(settings, kind, limit).await {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    if report.json {
        println!("{}", json(&r));
    } else {
        println!(
            "replayed {} dead letter(s) to the main queue; {} of other kinds left in place; {}",
            r.replayed,
            r.kept,
            r.came_back_text()
        );
    }
    if r.came_straight_back() {
        Exit::SomeRejected.into()
    } else {
        Exit::Done.into()
    }
}
