//! Signed events (opt-in, `EVENT_SIGNING_KEYS`): the producer puts an HMAC-SHA256 of the
//! exact body bytes, hex-encoded, in the `x-signature` header as `sha256=<hex>`. Several
//! keys may be configured at once, so a key can be rotated: publish with the new one once
//! every consumer knows both, then drop the old.

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

const PREFIX: &str = "sha256=";

/// Why a message's signature was not accepted (the dead letter's `x-error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadSignature {
    Missing,
    Malformed,
    NoKeyMatches,
}

impl BadSignature {
    pub fn text(&self) -> &'static str {
        match self {
            BadSignature::Missing => "no x-signature header",
            BadSignature::Malformed => "x-signature is not sha256=<64 hex digits>",
            BadSignature::NoKeyMatches => "x-signature matches none of EVENT_SIGNING_KEYS",
        }
    }
}

fn mac(key: &SecretString, body: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.expose_secret().as_bytes()).expect("any key length");
    mac.update(body);
    mac
}

/// `sha256=<hex>` for `body` under `key`: what a producer sends (and `user-sync send`).
pub fn sign(key: &SecretString, body: &[u8]) -> String {
    format!(
        "{PREFIX}{}",
        hex::encode(mac(key, body).finalize().into_bytes())
    )
}

/// Checks `header` against every key, each comparison in constant time.
pub fn verify(
    keys: &[SecretString],
    body: &[u8],
    header: Option<&str>,
) -> Result<(), BadSignature> {
    let header = header.ok_or(BadSignature::Missing)?;
    let digest = header
        .trim()
        .strip_prefix(PREFIX)
        .and_then(|h| hex::decode(h).ok())
        .filter(|d| d.len() == 32)
        .ok_or(BadSignature::Malformed)?;
    keys.iter()
        .any(|k| mac(k, body).verify_slice(&digest).is_ok())
        .then_some(())
        .ok_or(BadSignature::NoKeyMatches)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> SecretString {
        SecretString::from(s.to_string())
    }

    #[test]
    fn any_configured_key_verifies_and_nothing_else_does() {
        let (old, new) = (key("old-key-0123456789"), key("new-key-0123456789"));
        let body = br#"{"event_type":"user.created"}"#;
        let signed = sign(&new, body);
        assert_eq!(signed.len(), 7 + 64);
        assert_eq!(
            verify(&[old.clone(), new.clone()], body, Some(&signed)),
            Ok(())
        );
        assert_eq!(
            verify(std::slice::from_ref(&old), body, Some(&signed)),
            Err(BadSignature::NoKeyMatches)
        );
        let tampered = br#"{"event_type":"user.deleted"}"#;
        assert_eq!(
            verify(std::slice::from_ref(&new), tampered, Some(&signed)),
            Err(BadSignature::NoKeyMatches)
        );
        assert_eq!(
            verify(std::slice::from_ref(&new), body, None),
            Err(BadSignature::Missing)
        );
        for bad in ["", "sha256=", "sha256=zz", "md5=00", &signed[..60]] {
            assert_eq!(
                verify(std::slice::from_ref(&new), body, Some(bad)),
                Err(BadSignature::Malformed)
            );
        }
    }

    #[test]
    fn a_known_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            sign(&key("Jefe"), b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
