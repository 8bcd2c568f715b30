//! The client stack over real gRPC connections on 127.0.0.1: retries, circuit
//! breaker, deadline propagation and enforcement, DNS-resolved channels.
//!
//! The test service is grpc.health.v1's `Check`, implemented by small structs
//! that count calls, fail on demand, record what they received or call on.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_interceptors::client::{CIRCUIT_OPEN, DeadlineLayer, Downstream, DownstreamChannel};
use futures::Stream;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_types::StatusExt;

const CHECK: &str = "/grpc.health.v1.Health/Check";

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

fn serving() -> Response<HealthCheckResponse> {
    Response::new(HealthCheckResponse {
        status: ServingStatus::Serving as i32,
    })
}

/// Fails the first `fail_first` calls with `code`, then answers SERVING.
#[derive(Clone)]
struct Flaky {
    calls: Arc<AtomicUsize>,
    fail_first: usize,
    code: Code,
}

impl Flaky {
    fn new(fail_first: usize, code: Code) -> Self {
        Self {
            calls: Arc::default(),
            fail_first,
            code,
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[tonic::async_trait]
impl Health for Flaky {
    async fn check(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if call < self.fail_first {
            return Err(Status::new(self.code, "failing on purpose"));
        }
        Ok(serving())
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("not used"))
    }
}

/// The `grpc-timeout` and `x-request-id` headers of one call.
type SeenHeaders = (Option<String>, Option<String>);

/// Records the `grpc-timeout` and `x-request-id` it received.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Option<SeenHeaders>>>,
}

#[tonic::async_trait]
impl Health for Recorder {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let header = |name: &str| {
            request
                .metadata()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        *self.seen.lock().unwrap() = Some((header("grpc-timeout"), header("x-request-id")));
        Ok(serving())
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("not used"))
    }
}

/// Answers by calling the next hop through a downstream channel.
#[derive(Clone)]
struct Relay {
    next: HealthClient<DownstreamChannel>,
}

#[tonic::async_trait]
impl Health for Relay {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.next.clone().check(request.into_inner()).await
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("not used"))
    }
}

/// Answers after `delay`, counting calls that ran to the end.
#[derive(Clone, Default)]
struct Slow {
    delay: Duration,
    finished: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl Health for Slow {
    async fn check(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        tokio::time::sleep(self.delay).await;
        self.finished.fetch_add(1, Ordering::SeqCst);
        Ok(serving())
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("not used"))
    }
}

/// Serves `service` on 127.0.0.1 behind [`DeadlineLayer`] with `default`
/// deadline. The listener is bound before this returns, so calls connect
/// without any wait.
async fn serve_with_default<S: Health>(service: S, default: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(
        Server::builder()
            .layer(DeadlineLayer::new(default))
            .add_service(HealthServer::new(service))
            .serve_with_incoming(incoming),
    );
    address
}

async fn serve<S: Health>(service: S) -> SocketAddr {
    serve_with_default(service, Duration::from_secs(30)).await
}

fn check() -> HealthCheckRequest {
    HealthCheckRequest {
        service: String::new(),
    }
}

fn client(channel: DownstreamChannel) -> HealthClient<DownstreamChannel> {
    HealthClient::new(channel)
}

fn reason(status: &Status) -> Option<String> {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
}

#[tokio::test]
async fn retries_unavailable_then_succeeds() {
    let server = Flaky::new(2, Code::Unavailable);
    let address = serve(server.clone()).await;
    let metrics = agora_interceptors::metrics::GrpcMetrics::new();
    let channel = Downstream::builder("flaky", &format!("http://{address}"))
        .retryable(&[CHECK])
        .max_attempts(3)
        .metrics(&metrics)
        .build()
        .unwrap();
    let reply = client(channel).check(check()).await.unwrap().into_inner();
    assert_eq!(reply.status, ServingStatus::Serving as i32);
    assert_eq!(server.calls(), 3);
    // The caller made one call: the client metrics count one, ending OK.
    let text = metrics.encode().unwrap();
    let handled = text
        .lines()
        .find(|line| {
            line.starts_with("grpc_client_handled_total{") && line.contains("grpc_method=\"Check\"")
        })
        .unwrap_or_else(|| panic!("no client line in:\n{text}"));
    assert!(
        handled.contains("grpc_code=\"OK\"") && handled.ends_with(" 1"),
        "{handled}"
    );
}

#[tokio::test]
async fn no_retry_for_a_method_not_declared_retryable() {
    let server = Flaky::new(2, Code::Unavailable);
    let address = serve(server.clone()).await;
    let channel = Downstream::builder("flaky", &format!("http://{address}"))
        .retryable(&["/grpc.health.v1.Health/SomethingElse"])
        .build()
        .unwrap();
    let error = client(channel).check(check()).await.unwrap_err();
    assert_eq!(error.code(), Code::Unavailable);
    assert_eq!(server.calls(), 1);
}

#[tokio::test]
async fn no_retry_for_codes_other_than_unavailable() {
    for code in [Code::Internal, Code::DeadlineExceeded, Code::Aborted] {
        let server = Flaky::new(2, code);
        let address = serve(server.clone()).await;
        let channel = Downstream::builder("flaky", &format!("http://{address}"))
            .retryable(&[CHECK])
            .build()
            .unwrap();
        let error = client(channel).check(check()).await.unwrap_err();
        assert_eq!(error.code(), code);
        assert_eq!(server.calls(), 1, "{code:?}");
    }
}

#[tokio::test]
async fn attempts_are_bounded_by_max_attempts() {
    let server = Flaky::new(usize::MAX, Code::Unavailable);
    let address = serve(server.clone()).await;
    let channel = Downstream::builder("flaky", &format!("http://{address}"))
        .retryable(&[CHECK])
        .max_attempts(4)
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
        .build()
        .unwrap();
    let error = client(channel).check(check()).await.unwrap_err();
    assert_eq!(error.code(), Code::Unavailable);
    assert_eq!(server.calls(), 4);
}

#[tokio::test]
async fn retries_stop_at_the_deadline() {
    let server = Flaky::new(usize::MAX, Code::Unavailable);
    let address = serve(server.clone()).await;
    let deadline = Duration::from_millis(300);
    let channel = Downstream::builder("flaky", &format!("http://{address}"))
        .retryable(&[CHECK])
        .max_attempts(1000)
        .backoff(Duration::from_millis(50), Duration::from_millis(50))
        .default_deadline(deadline)
        .build()
        .unwrap();
    let started = Instant::now();
    let error = client(channel).check(check()).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        matches!(error.code(), Code::Unavailable | Code::DeadlineExceeded),
        "{error:?}"
    );
    // Never sleeps past the deadline: the last retry starts before it.
    assert!(
        elapsed <= deadline + Duration::from_millis(150),
        "{elapsed:?}"
    );
    // Full jitter draws each backoff from [0, 50 ms] (25 ms on average): about
    // a dozen attempts fit in 300 ms; the deadline, not max_attempts, stops them.
    let calls = server.calls();
    assert!(
        (2..=100).contains(&calls),
        "{calls} attempts in {deadline:?}"
    );
}

#[tokio::test]
async fn breaker_opens_after_the_threshold_and_fails_fast() {
    let server = Flaky::new(usize::MAX, Code::Unavailable);
    let address = serve(server.clone()).await;
    let channel = Downstream::builder("flaky", &format!("http://{address}"))
        .breaker(3, Duration::from_secs(60))
        .build()
        .unwrap();
    let mut client = client(channel.clone());
    for _ in 0..3 {
        let error = client.check(check()).await.unwrap_err();
        assert_eq!(error.code(), Code::Unavailable);
        assert_ne!(reason(&error).as_deref(), Some(CIRCUIT_OPEN));
    }
    assert_eq!(server.calls(), 3);
    assert!(channel.circuit_open());
    for _ in 0..5 {
        let error = client.check(check()).await.unwrap_err();
        assert_eq!(error.code(), Code::Unavailable);
        assert_eq!(reason(&error).as_deref(), Some(CIRCUIT_OPEN));
    }
    assert_eq!(server.calls(), 3, "an open circuit sends nothing");
}

#[tokio::test]
async fn half_open_probe_closes_the_circuit_after_the_cooldown() {
    let server = Flaky::new(3, Code::Unavailable);
    let address = serve(server.clone()).await;
    let cooldown = Duration::from_millis(200);
    let channel = Downstream::builder("flaky", &format!("http://{address}"))
        .breaker(3, cooldown)
        .build()
        .unwrap();
    let mut client = client(channel.clone());
    for _ in 0..3 {
        client.check(check()).await.unwrap_err();
    }
    let opened = Instant::now();
    let error = client.check(check()).await.unwrap_err();
    assert_eq!(reason(&error).as_deref(), Some(CIRCUIT_OPEN));

    // Poll until the probe after the cool-down gets through and succeeds.
    let reply = loop {
        match client.check(check()).await {
            Ok(reply) => break reply,
            Err(error) => {
                assert_eq!(reason(&error).as_deref(), Some(CIRCUIT_OPEN));
                assert!(opened.elapsed() < Duration::from_secs(5), "never closed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert!(opened.elapsed() >= cooldown);
    assert_eq!(reply.into_inner().status, ServingStatus::Serving as i32);
    assert_eq!(server.calls(), 4, "exactly one probe reached the server");
    assert!(!channel.circuit_open());
    client.check(check()).await.unwrap();
    assert_eq!(server.calls(), 5);
}

#[tokio::test]
async fn half_open_probe_failure_reopens_the_circuit() {
    let server = Flaky::new(usize::MAX, Code::Unavailable);
    let address = serve(server.clone()).await;
    let cooldown = Duration::from_millis(200);
    let channel = Downstream::builder("flaky", &format!("http://{address}"))
        .breaker(2, cooldown)
        .build()
        .unwrap();
    let mut client = client(channel.clone());
    for _ in 0..2 {
        client.check(check()).await.unwrap_err();
    }
    // The cool-down elapsing is what is under test here.
    tokio::time::sleep(cooldown).await;
    let probe = client.check(check()).await.unwrap_err();
    assert_ne!(reason(&probe).as_deref(), Some(CIRCUIT_OPEN));
    assert_eq!(server.calls(), 3);
    let error = client.check(check()).await.unwrap_err();
    assert_eq!(reason(&error).as_deref(), Some(CIRCUIT_OPEN));
    assert_eq!(server.calls(), 3);
}

#[tokio::test]
async fn deadline_and_request_id_propagate_across_two_hops() {
    let recorder = Recorder::default();
    let hop_b = serve(recorder.clone()).await;
    // B's own default is long, so only propagation can make B's timeout short.
    let to_b = Downstream::builder("b", &format!("http://{hop_b}"))
        .default_deadline(Duration::from_secs(60))
        .build()
        .unwrap();
    let hop_a = serve(Relay { next: client(to_b) }).await;

    let to_a = tonic::transport::Endpoint::from_shared(format!("http://{hop_a}"))
        .unwrap()
        .connect_lazy();
    let caller_timeout = Duration::from_secs(2);
    let mut request = Request::new(check());
    request.set_timeout(caller_timeout);
    request
        .metadata_mut()
        .insert("x-request-id", "req-two-hops".parse().unwrap());
    HealthClient::new(to_a).check(request).await.unwrap();

    let (timeout, request_id) = recorder.seen.lock().unwrap().clone().unwrap();
    let timeout = agora_interceptors::client::grpc_timeout::parse(&timeout.unwrap()).unwrap();
    assert!(timeout > Duration::ZERO, "{timeout:?}");
    assert!(timeout < caller_timeout, "{timeout:?}");
    assert_eq!(request_id.as_deref(), Some("req-two-hops"));
}

#[tokio::test]
async fn a_request_id_is_generated_when_the_caller_sends_none() {
    let recorder = Recorder::default();
    let hop_b = serve(recorder.clone()).await;
    let to_b = Downstream::builder("b", &format!("http://{hop_b}"))
        .build()
        .unwrap();
    let hop_a = serve(Relay { next: client(to_b) }).await;
    let to_a = tonic::transport::Endpoint::from_shared(format!("http://{hop_a}"))
        .unwrap()
        .connect_lazy();
    HealthClient::new(to_a).check(check()).await.unwrap();
    let (_, request_id) = recorder.seen.lock().unwrap().clone().unwrap();
    let id = uuid::Uuid::parse_str(&request_id.unwrap()).unwrap();
    assert_eq!(id.get_version_num(), 7);
}

#[tokio::test]
async fn deadline_layer_answers_deadline_exceeded_for_a_slow_handler() {
    // The server's default deadline applies: the caller sends no grpc-timeout.
    let slow = Slow {
        delay: Duration::from_secs(5),
        ..Slow::default()
    };
    let address = serve_with_default(slow.clone(), Duration::from_millis(150)).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_lazy();
    let started = Instant::now();
    let error = HealthClient::new(channel).check(check()).await.unwrap_err();
    assert_eq!(error.code(), Code::DeadlineExceeded, "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        slow.finished.load(Ordering::SeqCst),
        0,
        "handler was dropped"
    );
}

#[tokio::test]
async fn a_slower_downstream_than_the_callers_deadline_is_deadline_exceeded() {
    let slow = Slow {
        delay: Duration::from_secs(5),
        ..Slow::default()
    };
    let address = serve(slow.clone()).await;
    let channel = Downstream::builder("slow", &format!("http://{address}"))
        .default_deadline(Duration::from_millis(150))
        .build()
        .unwrap();
    let started = Instant::now();
    let error = client(channel).check(check()).await.unwrap_err();
    assert_eq!(error.code(), Code::DeadlineExceeded, "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_host_name_is_resolved_to_its_addresses() {
    let server = Flaky::new(0, Code::Unavailable);
    let address = serve(server.clone()).await;
    // localhost may also resolve to ::1, where nothing listens: the check is
    // retryable so a try on that address is retried on another.
    let channel = Downstream::builder("local", &format!("http://localhost:{}", address.port()))
        .retryable(&[CHECK])
        .max_attempts(5)
        .build()
        .unwrap();
    let reply = client(channel).check(check()).await.unwrap().into_inner();
    assert_eq!(reply.status, ServingStatus::Serving as i32);
    assert_eq!(server.calls(), 1);
}
