//! TLS and mutual TLS over real connections: a TLS host refuses plain text, an
//! mTLS host refuses callers without a certificate its client CA signed, and a
//! downstream channel configured from files speaks mTLS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use agora_interceptors::auth::Role;
use agora_interceptors::client::Downstream;
use agora_interceptors::tls::ClientTlsArgs;
use agora_proto::user::v1 as pb;
use agora_proto::user::v1::user_service_client::UserServiceClient;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::probe::ProbeApp;

/// A CA, a server certificate for 127.0.0.1, a client certificate from the
/// same CA and one from a CA nobody trusts, all written as PEM files.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        let ca = authority();
        write("ca.pem", &ca.pem());
        for (name, issuer) in [("server", &ca), ("client", &ca)] {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
                .unwrap()
                .signed_by(&key, issuer)
                .unwrap();
            write(&format!("{name}.pem"), &cert.pem());
            write(&format!("{name}.key"), &key.serialize_pem());
        }
        let rogue = authority();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &rogue)
            .unwrap();
        write("rogue.pem", &cert.pem());
        write("rogue.key", &key.serialize_pem());
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap()
    }

    /// A TLS channel trusting the CA, presenting the `identity` certificate.
    fn channel(&self, addr: SocketAddr, identity: Option<&str>) -> Channel {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.read("ca.pem")))
            .domain_name("127.0.0.1");
        if let Some(name) = identity {
            tls = tls.identity(Identity::from_pem(
                self.read(&format!("{name}.pem")),
                self.read(&format!("{name}.key")),
            ));
        }
        Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect_timeout(Duration::from_secs(2))
            .connect_lazy()
    }
}

fn authority() -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

async fn health(channel: Channel) -> Result<i32, tonic::Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|response| response.into_inner().status)
}

#[tokio::test]
async fn a_tls_host_answers_over_tls_and_refuses_plain_text() {
    let pki = Pki::new();
    let app = ProbeApp::start(|settings| {
        settings.tls.tls_cert_file = Some(pki.path("server.pem"));
        settings.tls.tls_key_file = Some(pki.path("server.key"));
    })
    .await;
    agora_testkit::wait_until_serving(pki.channel(app.addr, None), "").await;

    let token = app.keys.token("tls-caller", Role::Customer);
    let answer = UserServiceClient::new(pki.channel(app.addr, None))
        .get_user(agora_testkit::with_token(
            pb::GetUserRequest {
                user_id: "whoami".into(),
            },
            &token,
        ))
        .await
        .expect("a call over TLS");
    assert_eq!(answer.into_inner().user.unwrap().user_id, "tls-caller");

    let plain = health(agora_testkit::channel(app.addr)).await;
    assert!(plain.is_err(), "plain text must not be answered: {plain:?}");
    app.stop().await.1.unwrap();
}

#[tokio::test]
async fn an_mtls_host_requires_a_certificate_from_its_client_ca() {
    let pki = Pki::new();
    let app = ProbeApp::start(|settings| {
        settings.tls.tls_cert_file = Some(pki.path("server.pem"));
        settings.tls.tls_key_file = Some(pki.path("server.key"));
        settings.tls.tls_client_ca_file = Some(pki.path("ca.pem"));
    })
    .await;
    agora_testkit::wait_until_serving(pki.channel(app.addr, Some("client")), "").await;

    let anonymous = health(pki.channel(app.addr, None)).await;
    assert!(anonymous.is_err(), "no client certificate: {anonymous:?}");
    let rogue = health(pki.channel(app.addr, Some("rogue"))).await;
    assert!(
        rogue.is_err(),
        "a certificate from an untrusted CA: {rogue:?}"
    );
    app.stop().await.1.unwrap();
}

#[tokio::test]
async fn a_downstream_channel_configured_from_files_speaks_mtls() {
    let pki = Pki::new();
    let app = ProbeApp::start(|settings| {
        settings.tls.tls_cert_file = Some(pki.path("server.pem"));
        settings.tls.tls_key_file = Some(pki.path("server.key"));
        settings.tls.tls_client_ca_file = Some(pki.path("ca.pem"));
    })
    .await;
    let args = ClientTlsArgs {
        downstream_tls_ca_file: Some(pki.path("ca.pem")),
        downstream_tls_cert_file: Some(pki.path("client.pem")),
        downstream_tls_key_file: Some(pki.path("client.key")),
    };
    let tls = args.load().unwrap();
    assert!(
        Downstream::builder("probe", &format!("http://{}", app.addr))
            .tls(tls.clone())
            .build()
            .is_err(),
        "TLS settings with an http:// address are refused"
    );
    let channel = Downstream::builder("probe", &format!("https://{}", app.addr))
        .tls(tls)
        .build()
        .unwrap();
    let token = app.keys.token("mtls-caller", Role::Service);
    // The first calls may race the channel's first connection; poll.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let user = loop {
        let call = UserServiceClient::new(channel.clone())
            .get_user(agora_testkit::with_token(
                pb::GetUserRequest {
                    user_id: "whoami".into(),
                },
                &token,
            ))
            .await;
        match call {
            Ok(response) => break response.into_inner().user.unwrap(),
            Err(status) if tokio::time::Instant::now() < deadline => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("never reached the mTLS host: {status:?}"),
        }
    };
    assert_eq!(user.user_id, "mtls-caller");
    app.stop().await.1.unwrap();
}
