use super::*;
use crate::settings::Settings;
use std::cell::RefCell;
use std::collections::BTreeSet;

fn file(toml: &str) -> Map<String, Value> {
    File::from_str(toml, FileFormat::Toml).collect().unwrap()
}

fn refused(toml: &str) -> SettingsError {
    check(&file(toml)).unwrap_err()
}

#[test]
fn distance_counts_edits() {
    assert_eq!(distance("prefetch", "prefetch"), 0);
    assert_eq!(distance("event_signing_key", "event_signing_keys"), 1);
    assert_eq!(distance("batch_sise", "batch_size"), 1);
    assert_eq!(distance("log_fromat", "log_format"), 2);
    assert_eq!(distance("", "abc"), 3);
    assert_eq!(distance("kitten", "sitting"), 3);
}

#[test]
fn the_nearest_name_is_suggested_only_when_near() {
    let known = || SETTINGS.iter().copied();
    assert_eq!(
        nearest("event_signing_key", known()),
        Some("event_signing_keys")
    );
    assert_eq!(
        nearest("EVENT_SIGNING_KEYS", known()),
        Some("event_signing_keys")
    );
    assert_eq!(nearest("prefech", known()), Some("prefetch"));
    // A third of a long name: three edits away is still suggested.
    assert_eq!(
        nearest("deactivation_brake_window_sec", known()),
        Some("deactivation_brake_window_s")
    );
    assert_eq!(nearest("colour", known()), None);
    assert_eq!(nearest("debug", known()), None);
    assert_eq!(hint("colour", known()), "");
}

#[test]
fn a_top_level_typo_is_refused_with_the_nearest_name() {
    let e = refused("service_name = \"lms\"\nevent_signing_key = \"0123456789abcdef\"\n");
    assert_eq!(e.var, "CONFIG_FILE");
    assert_eq!(
        e.to_string(),
        "invalid configuration: CONFIG_FILE: unknown setting `event_signing_key` \
         (did you mean `event_signing_keys`?)"
    );
    let e = refused("colour = \"blue\"");
    assert_eq!(e.problem, "unknown setting `colour`");
    // Keys are lower case: an upper-case one was never read.
    let e = refused("PREFETCH = 10");
    assert_eq!(
        e.problem,
        "unknown setting `PREFETCH` (did you mean `prefetch`?)"
    );
    let e = refused("[taget]\ntable = \"public.users\"");
    assert_eq!(
        e.problem,
        "unknown setting `taget` (did you mean `target`?)"
    );
}

#[test]
fn of_several_typos_the_first_in_order_is_reported() {
    for _ in 0..5 {
        let e = refused("zz_last = 1\nbatch_sise = 5\nlog_fromat = \"json\"");
        assert!(e.problem.contains("`batch_sise`"), "{}", e.problem);
    }
}

#[test]
fn a_typo_in_a_column_source_is_refused() {
    let toml = "[target]\ntable = \"public.accts\"\nkey = \"auth_user_id\"\n\
                [target.columns]\nemail = \"email\"\n\
                pw = { field = \"password_hash\", prefx = \"bcrypt$\" }\n";
    let e = refused(toml);
    assert_eq!(e.var, "[target]");
    assert_eq!(
        e.problem,
        "unknown field `prefx` in column `pw` (did you mean `prefix`?)"
    );
    let e = refused("[target.columns]\nstaff = { role_map = { admin = true }, defualt = false }");
    assert!(
        e.problem.contains("(did you mean `default`?)"),
        "{}",
        e.problem
    );
    // A key of another kind of source is as unknown: serde would drop it.
    let e = refused("[target.columns]\nnote = { constant = \"x\", default = \"y\" }");
    assert_eq!(e.problem, "unknown field `default` in column `note`");
    let e = refused("[target.columns]\nname = { template = \"{email}\", max_lenght = 9 }");
    assert_eq!(
        e.problem,
        "unknown field `max_lenght` in column `name` (did you mean `max_length`?)"
    );
    let e = refused("[target.columns]\nlogin = { field = \"email\", cas = \"lower\" }");
    assert!(
        e.problem.contains("(did you mean `case`?)"),
        "{}",
        e.problem
    );
}

#[test]
fn a_typo_in_a_target_table_is_refused_by_serde_as_before() {
    let toml = "[target]\ntable = \"public.accts\"\nkey = \"auth_user_id\"\n\
                [target.columns]\nemail = \"email\"\n[target.deactivation]\nflagg = \"active\"\n";
    assert!(check(&file(toml)).is_ok());
    let cfg = config::Config::builder()
        .add_source(File::from_str(toml, FileFormat::Toml))
        .build()
        .unwrap();
    let e = crate::settings::target_table(&cfg).unwrap_err();
    assert_eq!(e.var, "[target]");
    assert!(e.problem.contains("unknown field `flagg`"), "{}", e.problem);
}

#[test]
fn a_correct_file_is_accepted() {
    let mut toml: String = SETTINGS.iter().map(|k| format!("{k} = \"x\"\n")).collect();
    toml.push_str(
        "rabbitmq_addresses = [\"rabbit-0.example.com:5672\"]\n\
         [target]\ntable = \"public.accts\"\nkey = \"auth_user_id\"\n\
         [target.columns]\nemail = \"email\"\njoined = \"now_on_insert\"\n\
         pw = { field = \"password_hash\", prefix = \"bcrypt$\", bcrypt = \"2y\" }\n\
         kind = { constant = 1 }\n\
         name = { template = \"{first_name} {last_name}\", max_length = 9, too_long = \"truncate\" }\n\
         login = { field = \"email\", case = \"lower\" }\n\
         staff = { role_map = { admin = true, \"any key\" = 1 }, default = false }\n\
         [target.deactivation]\nflag = \"active\"\ntimestamp = \"gone_at\"\nreason = \"why\"\n",
    );
    let toml = toml.replacen("rabbitmq_addresses = \"x\"\n", "", 1);
    check(&file(&toml)).unwrap();
    check(&file("")).unwrap();
    assert!(check_file("/nonexistent/user-sync.toml").is_ok());
}

#[test]
fn every_setting_read_is_in_the_table_and_no_other() {
    let read = RefCell::new(BTreeSet::new());
    let base = [
        ("service_name", "lms"),
        ("database_url", "postgres://db.example.com/app"),
    ];
    Settings::from_lookup(|key| {
        read.borrow_mut().insert(key.to_string());
        base.iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.to_string())
    })
    .unwrap();
    let table: BTreeSet<String> = SETTINGS.iter().map(|k| k.to_string()).collect();
    assert_eq!(read.into_inner(), table);
    assert_eq!(table.len(), SETTINGS.len(), "a key listed twice");
}

/// Named in `.env.example` without being settings of the table.
const ENV_EXTRAS: &[&str] = &[
    // Read by the log filter (`telemetry`) from the environment, not a setting of the file.
    "RUST_LOG",
    // Names the settings file, so it cannot be one of its keys.
    "CONFIG_FILE",
    // Read by glibc at process start, and by main.rs to limit arenas when unset.
    "MALLOC_ARENA_MAX",
];

/// The names of `NAME=value` and `# NAME=value` lines.
fn env_example_names() -> Vec<&'static str> {
    include_str!("../../../.env.example")
        .lines()
        .map(|line| line.strip_prefix("# ").unwrap_or(line))
        .filter_map(|line| line.split_once('=').map(|(name, _)| name))
        .filter(|name| {
            name.starts_with(|c: char| c.is_ascii_uppercase())
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .collect()
}

#[test]
fn env_example_names_every_setting_and_nothing_else() {
    let names = env_example_names();
    let listed: BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(listed.len(), names.len(), "a name listed twice: {names:?}");
    let upper: Vec<String> = SETTINGS.iter().map(|k| k.to_uppercase()).collect();
    let expected: BTreeSet<&str> = upper
        .iter()
        .map(String::as_str)
        .chain(ENV_EXTRAS.iter().copied())
        .collect();
    let missing: Vec<_> = expected.difference(&listed).collect();
    let unknown: Vec<_> = listed.difference(&expected).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        ".env.example lacks {missing:?} and names unknown {unknown:?}"
    );
}
