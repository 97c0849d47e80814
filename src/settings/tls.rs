//! The broker's TLS files: the CA to trust and the client certificate to present, from
//! their own variables or from `RABBITMQ_URL`'s query as the RabbitMQ URI spec names them
//! (`cacertfile`, `certfile`, `keyfile`). Paths only: the files are read at every connect,
//! so a renewed certificate is picked up by the next connection.

use super::{SettingsError, err};
use std::path::PathBuf;

/// A PEM file and the setting it came from, for errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemFile {
    pub path: PathBuf,
    pub setting: &'static str,
}

/// A client certificate (chain) and its private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFiles {
    pub cert: PemFile,
    pub key: PemFile,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerTls {
    /// The CA that signed the broker's certificate, instead of the system's roots.
    pub ca: Option<PemFile>,
    /// Presented to the broker when it asks (`ssl_options.verify = verify_peer`); with
    /// `auth_mechanism=external` in the URL it is the login too.
    pub client: Option<ClientFiles>,
}

/// Reads the three files from `var` (the variables' values) and the URL's query; a file
/// given both ways must be the same.
pub(super) fn read(
    var: impl Fn(&'static str) -> Option<String>,
    url: &str,
) -> Result<BrokerTls, SettingsError> {
    let parsed = url::Url::parse(url).ok();
    let query = |key: &str| {
        let pairs = parsed.as_ref()?.query_pairs();
        pairs
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
            .find(|v| !v.is_empty())
    };
    let pick = |name: &'static str, key: &'static str, from_url: &'static str| match (
        var(name),
        query(key),
    ) {
        (Some(a), Some(b)) if a != b => Err(err(
            name,
            format!("{a:?} differs from {from_url} ({b:?}): set one of them"),
        )),
        (Some(path), _) => Ok(Some(file(path, name))),
        (None, Some(path)) => Ok(Some(file(path, from_url))),
        (None, None) => Ok(None),
    };
    let ca = pick(
        "RABBITMQ_CA_FILE",
        "cacertfile",
        "cacertfile= in RABBITMQ_URL",
    )?;
    let cert = pick(
        "RABBITMQ_CERT_FILE",
        "certfile",
        "certfile= in RABBITMQ_URL",
    )?;
    let key = pick("RABBITMQ_KEY_FILE", "keyfile", "keyfile= in RABBITMQ_URL")?;
    let client = match (cert, key) {
        (Some(cert), Some(key)) => Some(ClientFiles { cert, key }),
        (Some(_), None) => {
            return Err(err(
                "RABBITMQ_KEY_FILE",
                "is required with a client certificate",
            ));
        }
        (None, Some(_)) => return Err(err("RABBITMQ_CERT_FILE", "is required with its key")),
        (None, None) => None,
    };
    if client.is_some() && !url.starts_with("amqps://") {
        return Err(err(
            "RABBITMQ_CERT_FILE",
            "a client certificate needs TLS: an amqps:// RABBITMQ_URL",
        ));
    }
    let external = query("auth_mechanism").is_some_and(|m| m.eq_ignore_ascii_case("external"));
    if external && client.is_none() {
        return Err(err(
            "RABBITMQ_URL",
            "auth_mechanism=external logs in with a client certificate: set \
             RABBITMQ_CERT_FILE and RABBITMQ_KEY_FILE",
        ));
    }
    Ok(BrokerTls { ca, client })
}

fn file(path: String, setting: &'static str) -> PemFile {
    PemFile {
        path: PathBuf::from(path),
        setting,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(vars: &[(&str, &str)], url: &str) -> Result<BrokerTls, SettingsError> {
        let lookup = |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        read(lookup, url)
    }

    const TLS_URL: &str = "amqps://u:p@rabbit.example.com/%2f";

    #[test]
    fn the_files_come_from_the_variables_or_the_urls_query() {
        let vars = [
            ("RABBITMQ_CERT_FILE", "/c.pem"),
            ("RABBITMQ_KEY_FILE", "/k.pem"),
        ];
        let client = tls(&vars, TLS_URL).unwrap().client.unwrap();
        assert_eq!(client.cert.path, PathBuf::from("/c.pem"));
        assert_eq!(client.key.setting, "RABBITMQ_KEY_FILE");
        let url = "amqps://rabbit.example.com/%2f?auth_mechanism=external\
                   &cacertfile=%2Fca.pem&certfile=/c.pem&keyfile=/k.pem";
        let read = tls(&[], url).unwrap();
        assert_eq!(read.ca.unwrap().path, PathBuf::from("/ca.pem"));
        let client = read.client.unwrap();
        assert_eq!(client.key.setting, "keyfile= in RABBITMQ_URL");
        let same = tls(&vars, &format!("{TLS_URL}?certfile=/c.pem")).unwrap();
        assert_eq!(same, tls(&vars, TLS_URL).unwrap());
    }

    #[test]
    fn half_a_pair_a_conflict_plain_amqp_and_external_without_a_certificate_are_refused() {
        let var = |vars: &[(&str, &str)], url: &str| tls(vars, url).unwrap_err().var;
        assert_eq!(
            var(&[("RABBITMQ_CERT_FILE", "/c")], TLS_URL),
            "RABBITMQ_KEY_FILE"
        );
        assert_eq!(
            var(&[("RABBITMQ_KEY_FILE", "/k")], TLS_URL),
            "RABBITMQ_CERT_FILE"
        );
        let both = [("RABBITMQ_CERT_FILE", "/c"), ("RABBITMQ_KEY_FILE", "/k")];
        let plain = "amqp://u:p@rabbit.example.com/%2f";
        assert_eq!(var(&both, plain), "RABBITMQ_CERT_FILE");
        let other = format!("{TLS_URL}?keyfile=/other");
        assert_eq!(var(&both, &other), "RABBITMQ_KEY_FILE");
        let external = format!("{TLS_URL}?auth_mechanism=EXTERNAL");
        assert_eq!(var(&[], &external), "RABBITMQ_URL");
        assert!(tls(&[], TLS_URL).unwrap().client.is_none());
    }

    #[test]
    fn the_debug_of_settings_names_the_key_file_never_its_content() {
        let key = std::env::temp_dir().join(format!("usync-key-{}.pem", uuid::Uuid::new_v4()));
        let secret = "-----BEGIN PRIVATE KEY-----\nTUlHSEFnRUFNQk1H\n-----END PRIVATE KEY-----\n";
        std::fs::write(&key, secret).unwrap();
        let vars = [
            ("service_name", "lms".to_string()),
            ("rabbitmq_url", TLS_URL.to_string()),
            (
                "rabbitmq_cert_file",
                "/etc/user-sync/client.pem".to_string(),
            ),
            ("rabbitmq_key_file", key.display().to_string()),
        ];
        let settings = crate::settings::Settings::from_lookup(|k| {
            vars.iter()
                .find(|(v, _)| *v == k)
                .map(|(_, value)| value.clone())
        })
        .unwrap();
        let shown = format!("{settings:?}");
        let _ = std::fs::remove_file(&key);
        assert!(shown.contains(&key.display().to_string()), "{shown}");
        assert!(
            !shown.contains("TUlHSEFnRUFNQk1H") && !shown.contains("PRIVATE"),
            "{shown}"
        );
    }
}
