//! The raw values of `CONFIG_FILE` and the environment, as `Settings::load` reads them.
//!
//! Every setting is read as text, which is all the environment can give; a TOML file can
//! give more. The natural TOML for a list is an array (`rabbitmq_addresses = ["a:5672",
//! "b:5672"]`), and before this was read as "unset" without a word (`get_string` fails on
//! an array): a cluster configured that way connected to the URL's host alone. Now the list
//! settings take an array as their comma-separated text, and an array or a table anywhere
//! else is refused, naming the variable, instead of being dropped.

use super::{SettingsError, err};
use config::{Config, ConfigError, Value, ValueKind};
use std::cell::RefCell;

/// The settings that are lists (comma-separated in the environment).
const LISTS: &[&str] = &[
    "rabbitmq_addresses",
    "all_access_roles",
    "event_signing_keys",
    "retry_delays_ms",
];

/// Lookups into a built `Config`; a value of the wrong shape is kept as the error to return
/// once the settings are read (`finish`), since a lookup itself can only say "unset".
pub(super) struct Layered<'a> {
    cfg: &'a Config,
    refused: RefCell<Option<SettingsError>>,
}

impl<'a> Layered<'a> {
    pub(super) fn new(cfg: &'a Config) -> Self {
        Layered {
            cfg,
            refused: RefCell::new(None),
        }
    }

    /// The value of a (lower-case) key as text, `None` when unset or refused.
    pub(super) fn get(&self, key: &str) -> Option<String> {
        match text(self.cfg, key) {
            Ok(value) => value,
            Err(e) => {
                self.refused.borrow_mut().get_or_insert(e);
                None
            }
        }
    }

    /// `read` (the settings built from `get`), unless a value was refused: that error wins,
    /// being the cause of whatever `read` made of the value's absence.
    pub(super) fn finish<T>(&self, read: Result<T, SettingsError>) -> Result<T, SettingsError> {
        match self.refused.borrow_mut().take() {
            Some(e) => Err(e),
            None => read,
        }
    }
}

fn text(cfg: &Config, key: &str) -> Result<Option<String>, SettingsError> {
    let value = match cfg.get::<Value>(key) {
        Ok(value) => value,
        Err(ConfigError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(err(key.to_uppercase(), e.to_string())),
    };
    let var = || key.to_uppercase();
    match value.kind {
        ValueKind::Nil => Ok(None),
        ValueKind::Array(items) if LISTS.contains(&key) => {
            let items: Result<Vec<String>, _> = items.into_iter().map(scalar).collect();
            let items = items.map_err(|_| err(var(), "takes an array of strings or numbers"))?;
            Ok(Some(items.join(",")))
        }
        ValueKind::Array(_) => Err(err(var(), "is an array in CONFIG_FILE; it takes one value")),
        ValueKind::Table(_) => Err(err(var(), "is a table in CONFIG_FILE; it takes one value")),
        _ => Ok(value.into_string().ok()),
    }
}

/// An array item as text: a string, a number or a boolean, nothing nested.
fn scalar(item: Value) -> Result<String, ()> {
    match item.kind {
        ValueKind::Array(_) | ValueKind::Table(_) | ValueKind::Nil => Err(()),
        _ => item.into_string().map_err(drop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use config::{File, FileFormat};

    fn file(toml: &str) -> Config {
        Config::builder()
            .add_source(File::from_str(toml, FileFormat::Toml))
            .build()
            .unwrap()
    }

    #[test]
    fn a_list_setting_takes_an_array_as_its_text() {
        let cfg = file(
            "rabbitmq_addresses = [\"a:5672\", \"[::1]:5673\"]\nretry_delays_ms = [1000, 5000]",
        );
        let values = Layered::new(&cfg);
        assert_eq!(
            values.get("rabbitmq_addresses").as_deref(),
            Some("a:5672,[::1]:5673")
        );
        assert_eq!(values.get("retry_delays_ms").as_deref(), Some("1000,5000"));
        assert_eq!(values.get("prefetch"), None);
        assert!(values.finish(Ok(())).is_ok());
    }

    #[test]
    fn an_array_or_a_table_elsewhere_is_refused_by_name() {
        for toml in ["prefetch = [1, 2]", "prefetch = { a = 1 }"] {
            let cfg = file(toml);
            let values = Layered::new(&cfg);
            assert_eq!(values.get("prefetch"), None);
            let e = values.finish(Ok(())).unwrap_err();
            assert_eq!(e.var, "PREFETCH", "{toml}");
        }
        let cfg = file("all_access_roles = [[\"a\"]]");
        let values = Layered::new(&cfg);
        values.get("all_access_roles");
        assert_eq!(values.finish(Ok(())).unwrap_err().var, "ALL_ACCESS_ROLES");
    }

    #[test]
    fn scalars_read_as_before() {
        let cfg = file("prefetch = 10\nlog_pii = true\nservice_name = \"lms\"");
        let values = Layered::new(&cfg);
        assert_eq!(values.get("prefetch").as_deref(), Some("10"));
        assert_eq!(values.get("log_pii").as_deref(), Some("true"));
        assert_eq!(values.get("service_name").as_deref(), Some("lms"));
    }
}
