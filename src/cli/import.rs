//! `user-sync import`: its arguments and its report.

use super::exit::Exit;
use super::{fail, json};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use user_sync::ops::import::{self, ImportError, Stage};
use user_sync::settings::Settings;

#[derive(Args)]
pub struct ImportArgs {
    /// The export: a JSON array, or JSON lines, of `user` objects. Read as a stream.
    file: PathBuf,
    /// The time of records without their own `timestamp` (RFC 3339), e.g. when the export
    /// was taken; with `--full`, required: an event after it stands over the export.
    #[arg(long, value_parser = parse_time, required_if_eq("full", "true"))]
    as_of: Option<time::OffsetDateTime>,
    /// The export holds every user: also deactivate this service's users it leaves out
    /// (reason `absent_from_export`), unless an event after `--as-of` stands on them.
    #[arg(long)]
    full: bool,
    /// Apply even when it deactivates more users than the mass-deactivation brake admits
    /// (check with `--dry-run` first).
    #[arg(long)]
    yes: bool,
    /// Count what would change, write nothing; with `--json`, list the auth ids of each
    /// change.
    #[arg(long)]
    dry_run: bool,
    /// The report as JSON.
    #[arg(long)]
    json: bool,
}

fn parse_time(s: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("not an RFC 3339 time: {e}"))
}

pub async fn import(settings: &Settings, args: ImportArgs) -> ExitCode {
    let size = match std::fs::metadata(&args.file) {
        Ok(m) => m.len(),
        Err(e) => return fail(format!("{}: {e}", args.file.display())),
    };
    // A bar on a terminal only: redirected output stays a clean summary.
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) && !args.json {
        let style = indicatif::ProgressStyle::with_template("{msg} [{wide_bar}] {percent}%")
            .expect("a valid template");
        indicatif::ProgressBar::new(size).with_style(style)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let opts = import::ImportOptions {
        as_of: args.as_of,
        dry_run: args.dry_run,
        batch_size: settings.batch_size,
        full: args.full,
        confirmed: args.yes,
        list_ids: args.dry_run && args.json,
    };
    let progress = |stage: Stage, done: u64| {
        let (message, length) = match stage {
            Stage::Checking => ("reading the export's ids", size),
            Stage::Importing => ("importing", size),
            Stage::Deactivating { of } => ("deactivating users left out", of),
        };
        bar.set_message(message);
        bar.set_length(length.max(done));
        bar.set_position(done);
    };
    let result = import::import(settings, &args.file, &opts, progress).await;
    bar.finish_and_clear();
    let summary = match result {
        Ok(summary) => summary,
        Err(e @ ImportError::Refused(_)) => return fail(format!("{e}; nothing was changed")),
        Err(e @ ImportError::Stopped(_)) => return fail(e),
        Err(ImportError::Config(problem)) => {
            eprintln!("user-sync: {problem}");
            return Exit::Usage.into();
        }
        Err(e) => return fail(e),
    };
    if args.json {
        println!("{}", json(&summary));
    } else {
        print!("{}", summary.to_text());
    }
    if summary.rejected() {
        Exit::SomeRejected.into()
    } else {
        ExitCode::SUCCESS
    }
}
