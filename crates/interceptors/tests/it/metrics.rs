//! Metrics end to end: a real [`ServiceHost`] with a metrics listener, real
//! gRPC calls, and `/metrics` scraped over real HTTP.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use agora_interceptors::ServeArgs;
use agora_interceptors::ServiceHost;
use agora_interceptors::auth::{Access, KeySet, ServicePolicy, TokenSettings, TokenVerifier};
use agora_interceptors::db::{Database, PoolSettings};
use agora_interceptors::health::wait_until_serving;
use agora_interceptors::metrics::{CONTENT_TYPE, GrpcMetrics};
use agora_proto::user::v1::GetUserRequest;
use agora_proto::user::v1::user_service_client::UserServiceClient;
use agora_testkit::{http_get, sample};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Code;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest::{
    FileContainingSymbol, ListServices,
};

const TIMEOUT: Duration = Duration::from_secs(10);

const CHECK: &str = r#"grpc_type="unary",grpc_service="grpc.health.v1.Health",grpc_method="Check""#;
const WATCH: &str =
    r#"grpc_type="server_stream",grpc_service="grpc.health.v1.Health",grpc_method="Watch""#;
const UNKNOWN: &str = r#"grpc_type="unknown",grpc_service="unknown",grpc_method="unknown""#;

/// A host serving health and reflection, with metrics, on loopback.
struct Host {
    channel: Channel,
    metrics_addr: SocketAddr,
    metrics: GrpcMetrics,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Host {
    async fn start(readiness: Option<Database>) -> Self {
        Self::start_with(readiness, false).await
    }

    /// With `stub_users`, also serves a stand-in `agora.user.v1.UserService`
    /// whose GetUser requires a token.
    async fn start_with(readiness: Option<Database>, stub_users: bool) -> Self {
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc_addr = grpc.local_addr().unwrap();
        let metrics_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics_addr = metrics_listener.local_addr().unwrap();
        let verifier = TokenVerifier::new(KeySet::new(), &TokenSettings::default());
        let mut host = ServiceHost::new(ServeArgs::default(), verifier).metrics(metrics_listener);
        if stub_users {
            host = host.add_service(StubUsers, &STUB_USERS_POLICY);
        }
        if let Some(database) = readiness {
            host = host.database(database);
        }
        let metrics = host.grpc_metrics();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(host.serve(grpc, async move {
            let _ = stopped.await;
        }));
        let channel = Endpoint::from_shared(format!("http://{grpc_addr}"))
            .unwrap()
            .connect_lazy();
        wait_until_serving(channel.clone(), "", TIMEOUT)
            .await
            .unwrap();
        Self {
            channel,
            metrics_addr,
            metrics,
            stop: Some(stop),
            task,
        }
    }

    async fn scrape(&self) -> String {
        let (status, headers, body) = http_get(self.metrics_addr, "/metrics").await;
        assert_eq!(status, 200, "{headers}\n{body}");
        assert!(
            headers
                .to_ascii_lowercase()
                .contains(&format!("content-type: {CONTENT_TYPE}")),
            "{headers}"
        );
        body
    }

    /// Scrapes until `line` is exposed, for outcomes recorded after the client
    /// has already moved on (a cancelled stream).
    async fn scrape_until(&self, line: &str) -> String {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let text = self.scrape().await;
            if has_line(&text, line) || tokio::time::Instant::now() >= deadline {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn shut_down(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

/// Answers every call INTERNAL; only reached if auth lets a call through.
#[derive(Clone)]
struct StubUsers;

impl NamedService for StubUsers {
    const NAME: &'static str = "agora.user.v1.UserService";
}

impl tower::Service<http::Request<Body>> for StubUsers {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<Body>) -> Self::Future {
        std::future::ready(Ok(tonic::Status::internal("stub reached").into_http()))
    }
}

const STUB_USERS_POLICY: ServicePolicy = ServicePolicy {
    service: "agora.user.v1.UserService",
    methods: &[("GetUser", Access::Authenticated)],
};

fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

#[track_caller]
fn assert_line(text: &str, line: &str) {
    assert!(has_line(text, line), "missing line\n  {line}\nin\n{text}");
}

async fn check(channel: &Channel, service: &str) -> Result<(), tonic::Status> {
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(drop)
}

#[tokio::test]
async fn unary_calls_are_counted_by_code_with_go_grpc_prometheus_names() {
    let host = Host::start(None).await;
    // wait_until_serving has made OK checks already; count ours on top.
    let before = host.scrape().await;
    let ok_before = sample(
        &before,
        "grpc_server_handled_total",
        &format!(r#"{CHECK},grpc_code="OK""#),
    )
    .unwrap();
    let started_before = sample(&before, "grpc_server_started_total", CHECK).unwrap();

    check(&host.channel, "").await.unwrap();
    let refused = check(&host.channel, "nope").await.unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);

    let text = host.scrape().await;
    assert_line(
        &text,
        r#"grpc_server_handled_total{grpc_type="unary",grpc_service="grpc.health.v1.Health",grpc_method="Check",grpc_code="NotFound"} 1"#,
    );
    assert_eq!(
        sample(
            &text,
            "grpc_server_handled_total",
            &format!(r#"{CHECK},grpc_code="OK""#)
        ),
        Some(ok_before + 1.0)
    );
    let started = sample(&text, "grpc_server_started_total", CHECK).unwrap();
    assert_eq!(started, started_before + 2.0);

    // Names as go-grpc-prometheus exposes them; `_total` exactly once.
    assert_line(&text, "# TYPE grpc_server_started counter");
    assert_line(&text, "# TYPE grpc_server_handled counter");
    assert_line(&text, "# TYPE grpc_server_handling_seconds histogram");
    assert!(!text.contains("_total_total"), "{text}");

    // Every call observed once in the histogram, with go-grpc-prometheus's buckets.
    assert_eq!(
        sample(&text, "grpc_server_handling_seconds_count", CHECK),
        Some(started)
    );
    for le in [
        "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0",
    ] {
        assert!(
            sample(
                &text,
                "grpc_server_handling_seconds_bucket",
                &format!(r#"le="{le}",{CHECK}"#)
            )
            .is_some(),
            "no bucket le={le} in\n{text}"
        );
    }
    assert_eq!(
        sample(
            &text,
            "grpc_server_handling_seconds_bucket",
            &format!(r#"le="+Inf",{CHECK}"#)
        ),
        Some(started)
    );
    assert!(sample(&text, "grpc_server_handling_seconds_sum", CHECK).is_some());

    host.shut_down().await;
}

#[tokio::test]
async fn server_streams_are_typed_and_a_dropped_stream_is_canceled() {
    let host = Host::start(None).await;
    let mut stream = HealthClient::new(host.channel.clone())
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());

    let text = host.scrape().await;
    assert_line(&text, &format!("grpc_server_started_total{{{WATCH}}} 1"));
    assert_eq!(
        sample(&text, "grpc_server_handling_seconds_count", WATCH),
        None,
        "an open stream is not handled yet"
    );

    drop(stream);
    let canceled = format!(r#"grpc_server_handled_total{{{WATCH},grpc_code="Canceled"}} 1"#);
    let text = host.scrape_until(&canceled).await;
    assert_line(&text, &canceled);
    assert_line(
        &text,
        &format!("grpc_server_handling_seconds_count{{{WATCH}}} 1"),
    );

    host.shut_down().await;
}

#[tokio::test]
async fn unknown_paths_share_one_bounded_label_set() {
    let host = Host::start(None).await;
    let mut users = UserServiceClient::new(host.channel.clone());
    for _ in 0..2 {
        let refused = users.get_user(GetUserRequest::default()).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unimplemented);
    }

    let text = host.scrape().await;
    assert_line(&text, &format!("grpc_server_started_total{{{UNKNOWN}}} 2"));
    assert_line(
        &text,
        &format!(r#"grpc_server_handled_total{{{UNKNOWN},grpc_code="Unimplemented"}} 2"#),
    );
    assert!(!text.contains("agora.user.v1"), "{text}");

    host.shut_down().await;
}

#[tokio::test]
async fn client_layer_counts_calls_made_and_transport_errors() {
    let host = Host::start(None).await;
    let layer = host.metrics.client_layer();
    let channel = tower::ServiceBuilder::new()
        .layer(layer.clone())
        .service(host.channel.clone());
    let mut health = HealthClient::new(channel);
    health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    let refused = health
        .check(HealthCheckRequest {
            service: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);

    // Nothing listens here: the channel itself fails.
    let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = free.local_addr().unwrap();
    drop(free);
    let dead = Endpoint::from_shared(format!("http://{dead_addr}"))
        .unwrap()
        .connect_lazy();
    let mut dead = HealthClient::new(tower::ServiceBuilder::new().layer(layer).service(dead));
    let failed = dead
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(failed.code(), Code::Unavailable);

    let text = host.scrape().await;
    assert_line(&text, &format!("grpc_client_started_total{{{CHECK}}} 3"));
    for code in ["OK", "NotFound", "Unavailable"] {
        assert_line(
            &text,
            &format!(r#"grpc_client_handled_total{{{CHECK},grpc_code="{code}"}} 1"#),
        );
    }
    assert_line(
        &text,
        &format!("grpc_client_handling_seconds_count{{{CHECK}}} 3"),
    );
    assert_line(&text, "# TYPE grpc_client_started counter");
    // Messages: both requests went out (the dead channel sent nothing); one
    // reply came back (NOT_FOUND is trailers only).
    assert_line(&text, &format!("grpc_client_msg_sent_total{{{CHECK}}} 2"));
    assert_line(
        &text,
        &format!("grpc_client_msg_received_total{{{CHECK}}} 1"),
    );
    assert_line(&text, "# TYPE grpc_client_msg_sent counter");
    assert_line(&text, "# TYPE grpc_client_msg_received counter");

    host.shut_down().await;
}

#[tokio::test]
async fn messages_are_counted_one_by_one_each_way() {
    let host = Host::start(None).await;
    let before = host.scrape().await;
    let received = |text: &str, labels: &str| {
        sample(text, "grpc_server_msg_received_total", labels).unwrap_or(0.0)
    };
    let sent = |text: &str, labels: &str| {
        sample(text, "grpc_server_msg_sent_total", labels).unwrap_or(0.0)
    };

    // Unary: one in, one out; refused with NOT_FOUND: one in, none out.
    check(&host.channel, "").await.unwrap();
    check(&host.channel, "nope").await.unwrap_err();
    let text = host.scrape().await;
    assert_eq!(received(&text, CHECK), received(&before, CHECK) + 2.0);
    assert_eq!(sent(&text, CHECK), sent(&before, CHECK) + 1.0);
    assert_line(&text, "# TYPE grpc_server_msg_received counter");
    assert_line(&text, "# TYPE grpc_server_msg_sent counter");

    // A bidirectional stream: each of its messages, a miss included, which
    // leaves the call OK.
    let answers = crate::reflection::ask(
        host.channel.clone(),
        vec![
            ListServices(String::new()),
            FileContainingSymbol("no.Such".into()),
            FileContainingSymbol("grpc.health.v1.Health".into()),
        ],
    )
    .await;
    assert_eq!(answers.len(), 3);
    let reflection = r#"grpc_type="bidi_stream",grpc_service="grpc.reflection.v1.ServerReflection",grpc_method="ServerReflectionInfo""#;
    let ok = format!(r#"grpc_server_handled_total{{{reflection},grpc_code="OK"}} 1"#);
    let text = host.scrape_until(&ok).await;
    assert_line(&text, &ok);
    assert_line(
        &text,
        &format!("grpc_server_msg_received_total{{{reflection}}} 3"),
    );
    assert_line(
        &text,
        &format!("grpc_server_msg_sent_total{{{reflection}}} 3"),
    );

    // A server stream: each status sent.
    let mut stream = HealthClient::new(host.channel.clone())
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());
    let one_sent = format!("grpc_server_msg_sent_total{{{WATCH}}} 1");
    let text = host.scrape_until(&one_sent).await;
    assert_line(&text, &one_sent);
    assert_line(
        &text,
        &format!("grpc_server_msg_received_total{{{WATCH}}} 1"),
    );
    drop(stream);

    host.shut_down().await;
}

#[tokio::test]
async fn readiness_database_pool_is_reported() {
    let database = Database::connect("sqlite::memory:", &PoolSettings::default())
        .await
        .unwrap();
    let host = Host::start(Some(database.clone())).await;

    let text = host.scrape().await;
    // An in-memory SQLite pool holds exactly one connection.
    assert_line(&text, "agora_db_pool_max_connections 1");
    assert_line(&text, "# TYPE agora_db_pool_connections gauge");
    let idle = sample(&text, "agora_db_pool_connections", r#"state="idle""#).unwrap();
    let in_use = sample(&text, "agora_db_pool_connections", r#"state="in_use""#).unwrap();
    assert_eq!(idle + in_use, 1.0, "{text}");

    host.shut_down().await;
    database.close().await;
}

#[tokio::test]
async fn only_get_metrics_is_served() {
    let host = Host::start(None).await;
    let (status, _, _) = http_get(host.metrics_addr, "/").await;
    assert_eq!(status, 404);
    let (status, _, _) = http_get(host.metrics_addr, "/metricsx").await;
    assert_eq!(status, 404);
    assert!(host.scrape().await.ends_with("# EOF\n"));
    host.shut_down().await;
}

#[tokio::test]
async fn calls_refused_by_auth_are_counted() {
    let host = Host::start_with(None, true).await;
    let refused = UserServiceClient::new(host.channel.clone())
        .get_user(GetUserRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    let text = host.scrape().await;
    let get_user =
        r#"grpc_type="unary",grpc_service="agora.user.v1.UserService",grpc_method="GetUser""#;
    assert_line(&text, &format!("grpc_server_started_total{{{get_user}}} 1"));
    assert_line(
        &text,
        &format!(r#"grpc_server_handled_total{{{get_user},grpc_code="Unauthenticated"}} 1"#),
    );

    host.shut_down().await;
}
