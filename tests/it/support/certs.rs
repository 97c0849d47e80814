//! Certificates made at test time with rcgen (X.509 v3, with the key usages and extended
//! key usages a TLS stack checks), and the directory they are written to.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A CA that signs servers' and clients' certificates.
pub(crate) struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// How a client's private key is written: the three PEM forms a key file comes in.
#[derive(Debug, Clone, Copy)]
pub(crate) enum KeyForm {
    /// ECDSA P-256, `PRIVATE KEY`.
    Pkcs8,
    /// ECDSA P-256, `EC PRIVATE KEY`.
    Sec1,
    /// RSA 2048, `RSA PRIVATE KEY`.
    Pkcs1,
}

/// A certificate and its key as PEM.
pub(crate) struct Pem {
    pub cert: String,
    pub key: String,
}

impl Ca {
    pub(crate) fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name.push(DnType::CommonName, name);
        Ca {
            cert: params.self_signed(&key).unwrap(),
            key,
        }
    }

    pub(crate) fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    pub(crate) fn server(&self) -> Pem {
        let (mut params, key) = self.server_params();
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        self.sign(params, key, KeyForm::Pkcs8)
    }

    /// A server certificate for `localhost` alone (a client reaching 127.0.0.1 must refuse
    /// it) as DER, with its key (PKCS #8 DER), for a rustls server.
    pub(crate) fn server_der(&self) -> (Vec<u8>, Vec<u8>) {
        let (mut params, key) = self.server_params();
        params.key_usages = leaf_usages();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.der().to_vec(), key.serialize_der())
    }

    fn server_params(&self) -> (CertificateParams, KeyPair) {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        (params, KeyPair::generate().unwrap())
    }

    /// A client certificate whose common name is `cn` (the user RabbitMQ's EXTERNAL and
    /// Postgres's `cert` log in as), its key written in `form`.
    pub(crate) fn client(&self, cn: &str, form: KeyForm) -> Pem {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = match form {
            KeyForm::Pkcs8 | KeyForm::Sec1 => KeyPair::generate(),
            KeyForm::Pkcs1 => KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256),
        };
        self.sign(params, key.unwrap(), form)
    }

    fn sign(&self, mut params: CertificateParams, key: KeyPair, form: KeyForm) -> Pem {
        params.key_usages = leaf_usages();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let pkcs8 = key.serialize_pem();
        let key = match form {
            KeyForm::Pkcs8 => pkcs8,
            KeyForm::Sec1 => openssl(&["ec"], &pkcs8),
            KeyForm::Pkcs1 => openssl(&["rsa", "-traditional"], &pkcs8),
        };
        Pem {
            cert: cert.pem(),
            key,
        }
    }
}

fn leaf_usages() -> Vec<KeyUsagePurpose> {
    vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ]
}

/// `openssl ARGS` over `input` (the key form conversions rcgen does not write).
fn openssl(args: &[&str], input: &str) -> String {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the openssl command");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl {args:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// A directory of a test's own, removed when dropped.
pub(crate) struct Dir(pub PathBuf);

impl Dir {
    pub(crate) fn new(prefix: &str) -> Self {
        let id = &uuid::Uuid::new_v4().simple().to_string()[..10];
        let path = std::env::temp_dir().join(format!("{prefix}-{id}"));
        std::fs::create_dir_all(&path).unwrap();
        Dir(path)
    }

    /// Writes `text` to `name` (mode 0600: a key file as an operator keeps it).
    pub(crate) fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    /// Writes a certificate and its key as `NAME.pem` and `NAME.key`.
    pub(crate) fn pair(&self, name: &str, pem: &Pem) -> (PathBuf, PathBuf) {
        let cert = self.write(&format!("{name}.pem"), &pem.cert);
        let key = self.write(&format!("{name}.key"), &pem.key);
        (cert, key)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
