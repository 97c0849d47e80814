//! `user-sync import`: its arguments and its report.

use super::{fail, json};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use user_sync::ops::import;
use user_sync::settings::Settings;

#[derive(Args)]
pub struct ImportArgs {
    file: PathBuf,
    /// The time of records without their own `timestamp` (RFC 3339), e.g. when the export
    /// was taken.
    #[arg(long, value_parser = parse_time)]
    as_of: Option<time::OffsetDateTime>,
    /// Count what would change, write nothing.
    #[arg(long)]
    dry_run: bool,
    #[arg(long)]
    json: bool,
}

fn parse_time(s: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("not an RFC 3339 time: {e}"))
}

pub async fn import(settings: &Settings, args: ImportArgs) -> ExitCode {
    let text = match std::fs::read_to_string(&args.file) {
        Ok(t) => t,
        Err(e) => return fail(format!("{}: {e}", args.file.display())),
    };
    let total = import::records(&text).map(|r| r.len()).unwrap_or(0);
    // A bar on a terminal only: redirected output stays a clean summary.
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) && !args.json {
        indicatif::ProgressBar::new(total as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let opts = import::ImportOptions {
        as_of: args.as_of,
        dry_run: args.dry_run,
        batch_size: settings.batch_size,
    };
    let result = import::import(settings, &text, &opts, |done| bar.set_position(done as u64)).await;
    bar.finish_and_clear();
    match result {
        Ok(summary) if args.json => println!("{}", json(&summary)),
        Ok(summary) => print!("{}", summary.to_text()),
        Err(e) => return fail(e),
    }
    ExitCode::SUCCESS
}
