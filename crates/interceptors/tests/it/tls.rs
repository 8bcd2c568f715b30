//! TLS and mutual TLS over real connections: a TLS host refuses plain text, an
//! mTLS host refuses callers without a certificate its client CA signed, and a
//! downstream channel configured from files speaks mTLS.

use std::net::SocketAddr;
use std::time::Duration;

use agora_interceptors::auth::Role;
use agora_interceptors::client::Downstream;
use agora_interceptors::tls::ClientTlsArgs;
use agora_proto::user::v1 as pb;
use agora_proto::user::v1::user_service_client::UserServiceClient;
use agora_testkit::pki::TestPki;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::probe::ProbeApp;

/// A TLS channel trusting the CA, presenting the `identity` certificate.
fn tls_channel(pki: &TestPki, addr: SocketAddr, identity: Option<&str>) -> Channel {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pki.read("ca.pem")))
        .domain_name("127.0.0.1");
    if let Some(name) = identity {
        tls = tls.identity(Identity::from_pem(
            pki.read(&format!("{name}.pem")),
            pki.read(&format!("{name}.key")),
        ));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy()
}

async fn health(channel: Channel) -> Result<i32, tonic::Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|response| response.into_inner().status)
}

#[tokio::test]
async fn a_tls_host_answers_over_tls_and_refuses_plain_text() {
    let pki = TestPki::new();
    let app = ProbeApp::start(|settings| {
        settings.tls.tls_cert_file = Some(pki.path("server.pem"));
        settings.tls.tls_key_file = Some(pki.path("server.key"));
    })
    .await;
    agora_testkit::wait_until_serving(tls_channel(&pki, app.addr, None), "").await;

    let token = app.keys.token("tls-caller", Role::Customer);
    let answer = UserServiceClient::new(tls_channel(&pki, app.addr, None))
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
    let pki = TestPki::new();
    let app = ProbeApp::start(|settings| {
        settings.tls.tls_cert_file = Some(pki.path("server.pem"));
        settings.tls.tls_key_file = Some(pki.path("server.key"));
        settings.tls.tls_client_ca_file = Some(pki.path("ca.pem"));
    })
    .await;
    agora_testkit::wait_until_serving(tls_channel(&pki, app.addr, Some("client")), "").await;

    let anonymous = health(tls_channel(&pki, app.addr, None)).await;
    assert!(anonymous.is_err(), "no client certificate: {anonymous:?}");
    let rogue = health(tls_channel(&pki, app.addr, Some("rogue"))).await;
    assert!(
        rogue.is_err(),
        "a certificate from an untrusted CA: {rogue:?}"
    );
    app.stop().await.1.unwrap();
}

#[tokio::test]
async fn a_downstream_channel_configured_from_files_speaks_mtls() {
    let pki = TestPki::new();
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
