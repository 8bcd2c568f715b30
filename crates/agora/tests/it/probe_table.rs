//! `agora health` against the real grpc_health_probe v0.4.56: the same
//! command lines against the same servers (the suite, a TLS and an mTLS
//! host, a host NOT_SERVING, an HTTP/1 port, a port that never speaks, a
//! closed port) must exit with the same code, the one the probe documents.

use std::future::pending;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use agora::suite::{Service, Storage};
use agora_interceptors::auth::{KeySet, TokenSettings, TokenVerifier};
use agora_interceptors::health::HealthRegistry;
use agora_interceptors::metrics::{GrpcMetrics, serve_metrics};
use agora_interceptors::{ServeArgs, ServiceHost};
use agora_testkit::pki::TestPki;
use tokio::net::TcpListener;

use crate::tools;

/// A host serving only health and reflection, with `adjust`ed settings; its
/// health registry, so a test can turn it NOT_SERVING.
async fn plumbing_host(adjust: impl FnOnce(&mut ServeArgs)) -> (SocketAddr, HealthRegistry) {
    let mut settings = ServeArgs::default();
    adjust(&mut settings);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut host = ServiceHost::new(
        settings,
        TokenVerifier::new(KeySet::new(), &TokenSettings::default()),
    );
    let health = host.health();
    tokio::spawn(host.serve(listener, pending()));
    // SERVING is set before the first connection is accepted; wait for it.
    while health.status("") != Some(tonic_health::pb::health_check_response::ServingStatus::Serving)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (addr, health)
}

/// A port that accepts connections and never says a word.
async fn silent_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

/// A port nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

fn words(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agora_health_exits_as_grpc_health_probe_does() {
    let Some(probe) = tools::grpc_health_probe() else {
        return;
    };
    let agora = Path::new(env!("CARGO_BIN_EXE_agora"));
    let suite = crate::start(Storage::Ephemeral).await;
    let user = suite.addr(Service::User);
    let port = user.port();
    let pki = TestPki::new();
    let (tls, _) = plumbing_host(|settings| {
        settings.tls.tls_cert_file = Some(pki.path("server.pem"));
        settings.tls.tls_key_file = Some(pki.path("server.key"));
    })
    .await;
    let (mtls, _) = plumbing_host(|settings| {
        settings.tls.tls_cert_file = Some(pki.path("server.pem"));
        settings.tls.tls_key_file = Some(pki.path("server.key"));
        settings.tls.tls_client_ca_file = Some(pki.path("ca.pem"));
    })
    .await;
    let (down, down_health) = plumbing_host(|_| {}).await;
    down_health.set_all_serving(false);
    let http1 = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve_metrics(listener, GrpcMetrics::new(), pending()));
        addr
    };
    let silent = silent_port().await;
    let closed = closed_port().await;
    let ca = pki.path("ca.pem").display().to_string();
    let client_cert = pki.path("client.pem").display().to_string();
    let client_key = pki.path("client.key").display().to_string();
    let quick = "-connect-timeout 300ms";

    // (what, command line, the exit code grpc_health_probe documents)
    let cases: Vec<(&str, Vec<String>, i32)> = vec![
        ("serving", words(&format!("-addr {user}")), 0),
        ("host omitted", words(&format!("-addr :{port}")), 0),
        ("by name", words(&format!("-addr localhost:{port}")), 0),
        (
            "double dash, =value, a service",
            words(&format!(
                "--addr={user} --service agora.user.v1.UserService"
            )),
            0,
        ),
        ("gzip", words(&format!("-addr {user} -gzip")), 0),
        (
            "headers and user agent",
            vec![
                "-addr".into(),
                user.to_string(),
                "-rpc-header".into(),
                "x-probe: yes".into(),
                "-user-agent".into(),
                "kube-probe/1.30".into(),
            ],
            0,
        ),
        ("verbose", words(&format!("-addr {user} -v")), 0),
        ("version", words("-version"), 0),
        (
            "unknown service",
            words(&format!("-addr {user} -service nope")),
            3,
        ),
        (
            "1µs rpc timeout",
            words(&format!("-addr {user} -rpc-timeout 1us")),
            3,
        ),
        (
            "1ns connect timeout",
            words(&format!("-addr {user} -connect-timeout 1ns")),
            2,
        ),
        (
            "rpc timeout 0",
            words(&format!("-addr {user} -rpc-timeout 0")),
            1,
        ),
        (
            "negative connect timeout",
            words(&format!("-addr {user} -connect-timeout -1s")),
            1,
        ),
        (
            "duration without unit",
            words(&format!("-addr {user} -connect-timeout 1")),
            1,
        ),
        ("no -addr", words("-service x"), 1),
        ("unknown flag", words(&format!("-addr {user} -bogus")), 1),
        ("-h", words(&format!("-addr {user} -h")), 1),
        (
            "flag without its value",
            words(&format!("-addr {user} -service")),
            1,
        ),
        (
            "bad header",
            words(&format!("-addr {user} -rpc-header nocolon")),
            1,
        ),
        (
            "TLS option without -tls",
            words(&format!("-addr {user} -tls-no-verify")),
            1,
        ),
        (
            "client cert without key",
            words(&format!("-addr {tls} -tls -tls-client-cert {client_cert}")),
            1,
        ),
        (
            "no-verify with a CA",
            words(&format!(
                "-addr {tls} -tls -tls-no-verify -tls-ca-cert {ca}"
            )),
            1,
        ),
        (
            "CA file missing",
            words(&format!(
                "-addr {tls} -tls -tls-ca-cert /nonexistent/ca.pem"
            )),
            1,
        ),
        (
            "nothing listening",
            words(&format!("-addr {closed} {quick}")),
            2,
        ),
        (
            "an HTTP/1 port",
            words(&format!("-addr {http1} {quick}")),
            2,
        ),
        (
            "a port that never speaks",
            words(&format!("-addr {silent} {quick}")),
            2,
        ),
        ("no port", words(&format!("-addr 127.0.0.1 {quick}")), 2),
        ("NOT_SERVING", words(&format!("-addr {down}")), 4),
        (
            "TLS, CA given",
            words(&format!("-addr {tls} -tls -tls-ca-cert {ca}")),
            0,
        ),
        (
            "TLS, not verified",
            words(&format!("-addr {tls} -tls -tls-no-verify")),
            0,
        ),
        (
            "TLS, server name given",
            words(&format!(
                "-addr {tls} -tls -tls-ca-cert {ca} -tls-server-name localhost"
            )),
            0,
        ),
        (
            "TLS, wrong server name",
            words(&format!(
                "-addr {tls} -tls -tls-ca-cert {ca} -tls-server-name wrong.example {quick}"
            )),
            2,
        ),
        (
            "TLS server, plain probe",
            words(&format!("-addr {tls} {quick}")),
            2,
        ),
        (
            "plain server, TLS probe",
            words(&format!("-addr {user} -tls -tls-no-verify {quick}")),
            2,
        ),
        (
            "mTLS with a client certificate",
            words(&format!(
                "-addr {mtls} -tls -tls-ca-cert {ca} -tls-client-cert {client_cert} -tls-client-key {client_key}"
            )),
            0,
        ),
    ];

    let mut table = String::from("| case | grpc_health_probe | agora health |\n|---|---|---|\n");
    let mut differ = Vec::new();
    for (what, args, documented) in &cases {
        let (theirs, their_text) = tools::run(&probe, args).await;
        let mut ours_args = vec!["health".to_owned()];
        ours_args.extend(args.iter().cloned());
        let (ours, our_text) = tools::run(agora, &ours_args).await;
        table += &format!("| {what} | {theirs} | {ours} |\n");
        if theirs != *documented || ours != theirs {
            differ.push(format!(
                "{what} ({}): documented {documented}, grpc_health_probe {theirs}, agora health {ours}\n  probe: {}\n  agora: {}",
                args.join(" "),
                their_text.trim(),
                our_text.trim()
            ));
        }
    }
    println!("{table}");
    assert!(differ.is_empty(), "{}\n{table}", differ.join("\n"));
    suite.stop().await.expect("a clean stop");
}
