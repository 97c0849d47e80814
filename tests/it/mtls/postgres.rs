//! Postgres `cert` authentication through `DATABASE_URL`'s `sslcert`/`sslkey`/
//! `sslrootcert`, against a server of the test's own (`hostssl all all 127.0.0.1/32 cert`).

use super::nodes::{TlsPostgres, USER};
use super::{settings, shown};
use crate::support::{Ca, Dir, KeyForm};
use user_sync::store::{Store, config_problem};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts a Postgres server of its own (scripts/postgres-tls.sh)"]
async fn cert_authentication_logs_in_and_bad_certificates_are_configuration_errors() {
    let pki = Ca::new("usync mtls CA");
    let server = TlsPostgres::start(&pki).await;
    let files = Dir::new("usync-mtls-files");
    let ca = shown(&files.write("ca.pem", &pki.pem()));
    let url = |cert: &str, key: &str| {
        server.url(&format!(
            "sslmode=verify-full&sslrootcert={ca}&sslcert={cert}&sslkey={key}"
        ))
    };
    // An RSA key in PKCS#1 (`RSA PRIVATE KEY`), as `openssl genrsa -traditional` writes it.
    let (cert, key) = files.pair("usync", &pki.client(USER, KeyForm::Pkcs1));
    let (cert, key) = (shown(&cert), shown(&key));
    let good = store(&url(&cert, &key)).unwrap();
    let dn: String =
        sqlx::query_scalar("SELECT client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(good.pool())
            .await
            .unwrap();
    assert_eq!(dn, format!("/CN={USER}"));
    good.pool().close().await;

    let none = server.url(&format!("sslmode=verify-full&sslrootcert={ca}"));
    refused(&none, "requires a valid client certificate").await;
    let stranger = Ca::new("some other CA");
    let (foreign, foreign_key) = files.pair("foreign", &stranger.client(USER, KeyForm::Sec1));
    let foreign = url(&shown(&foreign), &shown(&foreign_key));
    refused(&foreign, "does not trust the CA").await;
    let (nobody, nobodys_key) = files.pair("nobody", &pki.client("nobody", KeyForm::Pkcs8));
    let (nobody, nobodys_key) = (shown(&nobody), shown(&nobodys_key));
    refused(
        &url(&nobody, &nobodys_key),
        "certificate authentication failed",
    )
    .await;

    let mismatched = store(&url(&cert, &nobodys_key)).err().unwrap();
    assert!(
        mismatched.contains("does not belong to the certificate"),
        "{mismatched}"
    );
    let missing = store(&url(&cert, "/nonexistent/client.key")).err().unwrap();
    let named = "sslkey in DATABASE_URL /nonexistent/client.key: cannot read it";
    assert!(missing.contains(named), "{missing}");
}

fn store(url: &str) -> Result<Store, String> {
    let settings = settings(&[("DATABASE_URL", url.to_string())]).unwrap();
    Store::new(&settings).map_err(|e| e.to_string())
}

/// The first connection fails with an error that start-up treats as a configuration
/// problem (an exit, never a pause) and that holds `why`.
async fn refused(url: &str, why: &str) {
    let store = store(url).unwrap();
    let error = store.ping().await.expect_err(why);
    let problem = config_problem(&error).unwrap_or_else(|| panic!("{why}: {error}"));
    eprintln!("refused: {problem}");
    assert!(problem.contains(why), "{why}: {problem}");
    assert!(!problem.contains("PRIVATE KEY"), "{problem}");
}
