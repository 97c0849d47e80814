//! Reading one setting of each kind from the raw text values: one helper per kind, so that
//! every setting is read in one line and every error names its variable the same way.

use super::{SettingsError, default, err};
use secrecy::SecretString;
use std::str::FromStr;
use std::time::Duration;

/// The raw values by lower-case key, trimmed, with the defaults filling in what is missing
/// or blank. Each helper takes the variable's name; its key is that name in lower case.
pub(super) struct Source<F> {
    get: F,
}

impl<F: Fn(&str) -> Option<String>> Source<F> {
    pub(super) fn new(get: F) -> Self {
        Source { get }
    }

    /// The value, or the default, or `None`.
    pub(super) fn text(&self, var: &str) -> Option<String> {
        let key = var.to_lowercase();
        (self.get)(&key)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .or_else(|| default(&key))
    }

    pub(super) fn string(&self, var: &'static str) -> Result<String, SettingsError> {
        self.text(var).ok_or_else(|| err(var, "is required"))
    }

    /// Any value with a `FromStr`; `what` completes "is not …" when it does not parse.
    pub(super) fn parsed<T: FromStr>(
        &self,
        var: &'static str,
        what: &str,
    ) -> Result<T, SettingsError> {
        let raw = self.string(var)?;
        raw.parse()
            .map_err(|_| err(var, format!("{raw:?} is not {what}")))
    }

    /// A whole number within `lo..=hi`, as whichever integer type the setting has.
    pub(super) fn number<T: TryFrom<u64>>(
        &self,
        var: &'static str,
        lo: u64,
        hi: u64,
    ) -> Result<T, SettingsError> {
        let v: u64 = self.parsed(var, "a whole number")?;
        match T::try_from(v) {
            Ok(n) if (lo..=hi).contains(&v) => Ok(n),
            _ => Err(err(var, format!("{v} is outside {lo}..={hi}"))),
        }
    }

    pub(super) fn millis(&self, var: &'static str) -> Result<Duration, SettingsError> {
        self.number(var, 0, u64::MAX).map(Duration::from_millis)
    }

    pub(super) fn secs(
        &self,
        var: &'static str,
        lo: u64,
        hi: u64,
    ) -> Result<Duration, SettingsError> {
        self.number(var, lo, hi).map(Duration::from_secs)
    }

    /// `true`/`1`/`yes` or `false`/`0`/`no`, in any case.
    pub(super) fn flag(&self, var: &'static str) -> Result<bool, SettingsError> {
        match self.string(var)?.to_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            other => Err(err(var, format!("{other:?} is not true or false"))),
        }
    }

    /// One of the named `options`, in any case.
    pub(super) fn choice<T: Copy>(
        &self,
        var: &'static str,
        options: &[(&str, T)],
    ) -> Result<T, SettingsError> {
        let raw = self.string(var)?.to_lowercase();
        match options.iter().find(|(name, _)| *name == raw) {
            Some((_, value)) => Ok(*value),
            None => {
                let names: Vec<&str> = options.iter().map(|(name, _)| *name).collect();
                Err(err(var, format!("{raw:?} is not {}", names.join(" or "))))
            }
        }
    }

    /// Comma-separated, each item trimmed, empty items dropped; absent: none.
    pub(super) fn list(&self, var: &str) -> Vec<String> {
        self.text(var)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// A list of keys, each at least `min` characters long.
    pub(super) fn secrets(
        &self,
        var: &'static str,
        min: usize,
    ) -> Result<Vec<SecretString>, SettingsError> {
        let keys = self.list(var);
        if keys.iter().any(|k| k.len() < min) {
            return Err(err(
                var,
                format!("each key needs at least {min} characters"),
            ));
        }
        Ok(keys.into_iter().map(SecretString::from).collect())
    }

    /// Comma-separated milliseconds: at least one, none zero.
    pub(super) fn delays_ms(&self, var: &'static str) -> Result<Vec<Duration>, SettingsError> {
        let delays = self
            .string(var)?
            .split(',')
            .map(|d| d.trim().parse::<u64>().map(Duration::from_millis))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| err(var, "must be comma-separated milliseconds"))?;
        if delays.is_empty() || delays.iter().any(Duration::is_zero) {
            return Err(err(var, "needs at least one delay, none zero"));
        }
        Ok(delays)
    }

    /// A URL holding credentials, which must start with one of `schemes`.
    pub(super) fn url(
        &self,
        var: &'static str,
        schemes: &[&str],
    ) -> Result<SecretString, SettingsError> {
        self.optional_url(var, schemes)?
            .ok_or_else(|| err(var, "is required"))
    }

    /// `url`, for a setting only some commands need: `None` when unset.
    pub(super) fn optional_url(
        &self,
        var: &'static str,
        schemes: &[&str],
    ) -> Result<Option<SecretString>, SettingsError> {
        let Some(url) = self.text(var) else {
            return Ok(None);
        };
        if schemes.iter().any(|s| url.starts_with(s)) {
            Ok(Some(url.into()))
        } else {
            Err(err(
                var,
                format!("must start with {}", schemes.join(" or ")),
            ))
        }
    }
}
