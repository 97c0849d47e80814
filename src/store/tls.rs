//! The TLS files `DATABASE_URL` names as libpq does (`sslcert`, `sslkey`, `sslrootcert`;
//! sqlx reads them and their `ssl-cert` spellings): checked when the store is made, so that
//! a file that is missing, unreadable or holds the wrong key is a configuration error at
//! start, naming the file, instead of a connect failure that reads like an outage.

use crate::tls::{ClientIdentity, Hints, Named, certificate_problem};
use std::path::Path;

const HINTS: Hints<'static> = Hints {
    trust: "sslrootcert in DATABASE_URL",
    identity: "sslcert and sslkey in DATABASE_URL",
};

/// Checks the files the URL names; an inline PEM value is sqlx's to read.
pub(super) fn check_files(url: &str) -> Result<(), String> {
    let Ok(parsed) = url::Url::parse(url) else {
        return Ok(());
    };
    // The last of the spellings given wins, as in sqlx's parser.
    let value = |keys: &[&str]| {
        parsed
            .query_pairs()
            .filter(|(k, _)| keys.contains(&k.as_ref()))
            .map(|(_, v)| v.into_owned())
            .last()
            .filter(|v| !v.trim_start().starts_with("-----BEGIN"))
    };
    let cert = value(&["sslcert", "ssl-cert"]);
    let key = value(&["sslkey", "ssl-key"]);
    let root = value(&["sslrootcert", "ssl-root-cert", "ssl-ca"]);
    match (&cert, &key) {
        (Some(cert), Some(key)) => {
            let cert = Named {
                path: Path::new(cert),
                setting: "sslcert in DATABASE_URL",
            };
            let key = Named {
                path: Path::new(key),
                setting: "sslkey in DATABASE_URL",
            };
            ClientIdentity::load(cert, key)?;
        }
        (Some(_), None) => return Err("DATABASE_URL: sslcert needs sslkey beside it".into()),
        (None, Some(_)) => return Err("DATABASE_URL: sslkey needs sslcert beside it".into()),
        (None, None) => {}
    }
    if let Some(root) = root {
        std::fs::read(&root)
            .map_err(|e| format!("sslrootcert in DATABASE_URL {root}: cannot read it: {e}"))?;
    }
    Ok(())
}

/// A connect error that is about a certificate or the TLS setup, as a configuration
/// problem: sqlx's own TLS errors (a file it could not use, a server without TLS under
/// `sslmode=require`) and a certificate either side refused.
pub(super) fn refusal(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Io(io) => certificate_problem(io, &HINTS),
        sqlx::Error::Tls(tls) => {
            certificate_problem(tls.as_ref(), &HINTS).or_else(|| Some(tls.to_string()))
        }
        sqlx::Error::Configuration(why) => Some(why.to_string()),
        _ => None,
    }
}
