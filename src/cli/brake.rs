//! `user-sync brake`: its subcommands and their reports.

use super::exit::Exit;
use super::{Report, fail, json, usage};
use clap::Subcommand;
use std::process::ExitCode;
use user_sync::ops::brake;
use user_sync::settings::Settings;

#[derive(Subcommand)]
pub enum BrakeCommand {
    /// Whether the brake holds, its threshold and window, and how many deactivations it
    /// parked.
    Status {
        #[command(flatten)]
        report: Report,
    },
    /// Release the brake for every replica and move the parked deactivations back to the
    /// main queue, where they are applied.
    Release {
        #[command(flatten)]
        report: Report,
    },
}

pub async fn brake(settings: &Settings, command: BrakeCommand) -> ExitCode {
    match command {
        BrakeCommand::Status { report } => match brake::status(settings).await {
            Ok(s) if report.json => println!("{}", json(&s)),
            Ok(s) => println!(
                "brake {}; threshold {} deactivations per {} s; {} held",
                if s.engaged { "ENGAGED" } else { "not engaged" },
                s.threshold,
                s.window_s,
                s.held
            ),
            Err(e @ brake::BrakeError::Config(_)) => return usage(e),
            Err(e) => return fail(e),
        },
        // What was parked again is new deactivations beyond the threshold, never a moved
        // one (see `brake::Released`): the release itself is done, exit 0.
        BrakeCommand::Release { report } => match brake::release(settings).await {
            Ok(r) if report.json => println!("{}", json(&r)),
            Ok(r) => println!(
                "{}; moved {} held deactivation(s) back to the queue; {}",
                if r.was_engaged {
                    "brake released"
                } else {
                    "the brake was not engaged"
                },
                r.moved,
                match r.came_back {
                    Some(n) => format!("{n} parked again"),
                    None => "no worker consumes the queue yet".into(),
                }
            ),
            Err(e @ brake::BrakeError::Config(_)) => return usage(e),
            Err(e) => return fail(e),
        },
    }
    Exit::Done.into()
}
