//! Helpers for Agora's integration tests.
//!
//! Every scenario runs against a real database: a fresh SQLite file always, and a
//! fresh PostgreSQL database too when `AGORA_TEST_POSTGRES_URL` points at a server
//! (for example `postgres://postgres@127.0.0.1:5432/test`). [`backend_test!`]
//! writes one scenario once and gets a test per backend.
#![forbid(unsafe_code)]

pub mod logs;
pub mod otlp;
pub mod pki;

use std::io::Write as _;
use std::sync::Once;
use std::time::Duration;

use agora_interceptors::auth::{KeySet, Role, SigningKey, TokenIssuer, TokenSettings};
use sqlx::Connection as _;
use tonic::transport::Channel;

/// The variable naming the PostgreSQL server tests may create databases on.
pub const POSTGRES_ENV: &str = "AGORA_TEST_POSTGRES_URL";

/// Prefix of every database the tests create, so leftovers can be swept.
pub const DATABASE_PREFIX: &str = "agora_t_";

/// A throwaway database for one test.
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    postgres: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    /// A fresh SQLite file in a temporary folder (WAL and all, like production).
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temporary folder");
        let url = format!("sqlite://{}/test.db?mode=rwc", dir.path().display());
        Self {
            url,
            postgres: None,
            _dir: Some(dir),
        }
    }

    /// A fresh PostgreSQL database, or `None` (with a note on the terminal) when
    /// `AGORA_TEST_POSTGRES_URL` is not set.
    pub async fn postgres() -> Option<Self> {
        let Ok(admin_url) = std::env::var(POSTGRES_ENV) else {
            static NOTE: Once = Once::new();
            NOTE.call_once(|| {
                // Written past the test harness's capture so it is seen.
                let _ = writeln!(
                    std::io::stderr(),
                    "note: PostgreSQL tests skipped ({POSTGRES_ENV} is not set); SQLite ran"
                );
            });
            return None;
        };
        let name = format!("{DATABASE_PREFIX}{}", uuid::Uuid::now_v7().simple());
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("{POSTGRES_ENV} is set but unreachable: {e}"));
        // The name is our prefix and a UUID in hex: nothing a caller controls.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let _ = admin.close().await;
        Some(Self {
            url: with_database(&admin_url, &name),
            postgres: Some((admin_url, name)),
            _dir: None,
        })
    }

    /// The URL a service should connect to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// "sqlite" or "postgres", for messages.
    pub fn backend(&self) -> &'static str {
        if self.postgres.is_some() {
            "postgres"
        } else {
            "sqlite"
        }
    }

    /// Drops the PostgreSQL database under a running service (terminating its
    /// connections), to test how the service behaves when its database is gone.
    /// Panics for SQLite, which cannot be taken away from an open connection.
    pub async fn take_offline(&self) {
        let (admin_url, name) = self.postgres.as_ref().expect("a PostgreSQL database");
        let mut admin = sqlx::PgConnection::connect(admin_url)
            .await
            .expect("admin connection");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {name} WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await
        .expect("drop test database");
        let _ = admin.close().await;
    }

    /// Creates the database again (empty) after [`TestDatabase::take_offline`].
    pub async fn bring_back(&self) {
        let (admin_url, name) = self.postgres.as_ref().expect("a PostgreSQL database");
        let mut admin = sqlx::PgConnection::connect(admin_url)
            .await
            .expect("admin connection");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let _ = admin.close().await;
    }

    /// Drops the PostgreSQL database (the SQLite folder goes with `self`).
    pub async fn cleanup(self) {
        let Some((admin_url, name)) = &self.postgres else {
            return;
        };
        if let Ok(mut admin) = sqlx::PgConnection::connect(admin_url).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut admin)
            .await;
            let _ = admin.close().await;
        }
    }
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    format!("{base}/{name}{query}")
}

/// Writes one async scenario taking `&TestDatabase` and expands to a `sqlite` and
/// a `postgres` test in a module of the scenario's name.
#[macro_export]
macro_rules! backend_test {
    (async fn $name:ident($db:ident: &TestDatabase) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn scenario($db: &$crate::TestDatabase) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = $crate::TestDatabase::sqlite();
                scenario(&db).await;
                db.cleanup().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(db) = $crate::TestDatabase::postgres().await {
                    scenario(&db).await;
                    db.cleanup().await;
                }
            }
        }
    };
}

/// A signing key with the matching verification key set, to mint tokens of any
/// role the way the user service would.
#[derive(Clone, Debug)]
pub struct TestKeys {
    /// The private key.
    pub signing: SigningKey,
    /// A key set trusting it.
    pub key_set: KeySet,
    /// Issuer and audience used.
    pub settings: TokenSettings,
    issuer: TokenIssuer,
}

impl TestKeys {
    /// A fresh random key.
    pub fn new() -> Self {
        let signing = SigningKey::generate("test-key").expect("key");
        let mut key_set = KeySet::new();
        key_set.insert(signing.public_jwk()).expect("jwk");
        let settings = TokenSettings::default();
        let issuer = TokenIssuer::new(&signing, settings.clone()).expect("issuer");
        Self {
            signing,
            key_set,
            settings,
            issuer,
        }
    }

    /// A token for `subject` with `role`, valid for an hour.
    pub fn token(&self, subject: &str, role: Role) -> String {
        self.issuer
            .issue(subject, role, Duration::from_secs(3600))
            .expect("token")
            .token
    }
}

impl Default for TestKeys {
    fn default() -> Self {
        Self::new()
    }
}

/// `message` with `authorization: Bearer <token>`.
pub fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    request
}

/// A lazy channel to a local server.
pub fn channel(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_lazy()
}

/// Polls grpc.health.v1 Check until `service` is SERVING (10 s at most), the
/// way a readiness probe would.
pub async fn wait_until_serving(channel: Channel, service: &str) {
    agora_interceptors::health::wait_until_serving(channel, service, Duration::from_secs(10))
        .await
        .expect("service became SERVING");
}

/// `GET path` over a fresh HTTP/1.1 connection to `addr` (a metrics
/// endpoint): status, head, body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the HTTP endpoint");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    let mut reply = Vec::new();
    stream
        .read_to_end(&mut reply)
        .await
        .expect("read the reply");
    let reply = String::from_utf8(reply).expect("a text reply");
    let (head, body) = reply.split_once("\r\n\r\n").expect("head and body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .expect("a status line");
    (status, head.to_owned(), body.to_owned())
}

/// The value of the sample `name{labels}` (`name` alone when `labels` is
/// empty) in a Prometheus text exposition.
pub fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database_name() {
        assert_eq!(
            with_database("postgres://u@h:5432/test", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h/test?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
    }
}
