use super::exit::Exit;
use super::{Cli, Command};
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};

/// Every subcommand and argument, positional ones included, of `cmd` and below without
/// help text, by path. clap's own `help` and `version` are left out.
fn undocumented(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if ["help", "version"].contains(&id) {
            continue;
        }
        if arg.get_help().is_none() && arg.get_long_help().is_none() {
            let name = match arg.get_long() {
                Some(long) => format!("--{long}"),
                None => format!("<{id}>"),
            };
            out.push(format!("{path} {name}"));
        }
    }
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        let sub_path = format!("{path} {}", sub.get_name());
        if sub.get_about().is_none() && sub.get_long_about().is_none() {
            out.push(sub_path.clone());
        }
        undocumented(sub, &sub_path, out);
    }
}

#[test]
fn every_command_and_argument_has_help() {
    let mut cli = Cli::command();
    cli.build();
    let mut missing = Vec::new();
    undocumented(&cli, "user-sync", &mut missing);
    assert!(
        missing.is_empty(),
        "no help text:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn the_walk_finds_what_has_no_help() {
    let bare = clap::Command::new("t")
        .arg(clap::Arg::new("file"))
        .subcommand(clap::Command::new("sub").arg(clap::Arg::new("n").long("n")));
    let mut missing = Vec::new();
    undocumented(&bare, "t", &mut missing);
    assert_eq!(missing, ["t <file>", "t sub", "t sub --n"]);
}

#[test]
fn the_definition_is_consistent() {
    Cli::command().debug_assert();
}

fn refused(args: &[&str]) -> clap::Error {
    let argv = [&["user-sync"], args].concat();
    match Cli::try_parse_from(argv) {
        Ok(_) => panic!("{args:?} parsed"),
        Err(e) => e,
    }
}

#[test]
fn a_typo_in_a_fixed_set_is_a_usage_error_listing_the_values() {
    let e = refused(&["dlq", "replay", "--kind", "permanant"]);
    assert_eq!(e.kind(), ErrorKind::InvalidValue);
    assert_eq!(e.exit_code(), Exit::Usage as i32);
    let text = e.to_string();
    for kind in [
        "permanent",
        "retries_exhausted",
        "email_conflict",
        "bad_signature",
    ] {
        assert!(text.contains(kind), "{text}");
    }
    let e = refused(&["send", "--type", "renamed"]);
    assert_eq!(e.exit_code(), Exit::Usage as i32);
    assert!(e.to_string().contains("created, updated, deleted"), "{e}");
}

#[test]
fn send_takes_a_type_with_or_without_its_prefix() {
    for typed in ["deleted", "user.deleted"] {
        let cli = Cli::try_parse_from(["user-sync", "send", "--type", typed]).unwrap();
        assert!(matches!(cli.command, Some(Command::Send(_))));
    }
}

#[test]
fn only_the_commands_that_touch_the_database_need_it() {
    let needs = |args: &[&str]| {
        let argv = [&["user-sync"], args].concat();
        let cli = Cli::try_parse_from(argv).unwrap();
        cli.command.unwrap_or(Command::Run).needs_database()
    };
    for args in [
        &[][..],
        &["run"],
        &["migrate"],
        &["import", "users.jsonl"],
        &["brake", "status"],
        &["brake", "release"],
        &["explain", "a@example.com"],
    ] {
        assert!(needs(args), "{args:?}");
    }
    for args in [
        &["migrate", "--print-target-sql"][..],
        &["status"],
        &["dlq", "list"],
        &["dlq", "purge"],
        &["send"],
        &["healthcheck"],
    ] {
        assert!(!needs(args), "{args:?}");
    }
}
