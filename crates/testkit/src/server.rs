//! A server started for one test: bound to a free loopback port, served on a
//! task of its own, stopped the way SIGTERM would (and checked to stop
//! cleanly) or the way a crash would.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// The future a server is handed: it resolves when the test stops it.
pub type Shutdown = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// A running server.
#[derive(Debug)]
pub struct TestServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl TestServer {
    /// Binds 127.0.0.1 on a free port, runs `serve(listener, shutdown)` on
    /// its own task, and waits until `health_name` (a service name, or ""
    /// for the server as a whole) answers SERVING, as a readiness probe
    /// would.
    pub async fn start<F, Fut>(health_name: &str, serve: F) -> Self
    where
        F: FnOnce(TcpListener, Shutdown) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let server = Self::spawn(serve).await;
        wait_until_serving(server.channel(), health_name).await;
        server
    }

    /// [`Self::start`] without waiting for health (a TLS server, say, that
    /// only its test can reach).
    pub async fn spawn<F, Fut>(serve: F) -> Self
    where
        F: FnOnce(TcpListener, Shutdown) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free loopback port");
        let addr = listener.local_addr().expect("bound address");
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown: Shutdown = Box::pin(async {
            let _ = stopped.await;
        });
        Self {
            addr,
            stop: Some(stop),
            task: tokio::spawn(serve(listener, shutdown)),
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A new connection to it (lazy: connects on first use).
    pub fn channel(&self) -> Channel {
        channel(self.addr)
    }

    /// Signals shutdown and waits for the server to finish; its result.
    pub async fn shut_down(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.expect("the server task")
    }

    /// Signals shutdown and asserts that the server stopped cleanly.
    pub async fn stop(self) {
        self.shut_down().await.expect("the server stopped cleanly");
    }

    /// Stops the server as a crash would: its task is dropped wherever it
    /// is, nothing runs its shutdown.
    pub async fn crash(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// A lazy channel to a local server.
pub fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("a socket address is a valid URI")
        .connect_lazy()
}

/// Polls grpc.health.v1 Check until `service` is SERVING (10 s at most), the
/// way a readiness probe would.
pub async fn wait_until_serving(channel: Channel, service: &str) {
    agora_interceptors::health::wait_until_serving(channel, service, Duration::from_secs(10))
        .await
        .expect("service became SERVING");
}

/// Asserts that the server behind `channel` serves `service` the way every
/// Agora host does: grpc.health.v1 answers SERVING for the server and for
/// `service`, and reflection v1 lists `service`.
pub async fn assert_served(channel: Channel, service: &str) {
    use tokio_stream::StreamExt as _;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1;

    let mut health = HealthClient::new(channel.clone());
    for name in ["", service] {
        let status = health
            .check(HealthCheckRequest {
                service: name.into(),
            })
            .await
            .expect("health check")
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "health of {name:?}");
    }

    let mut reflection = v1::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let reply = reflection
        .server_reflection_info(tokio_stream::once(request))
        .await
        .expect("reflection stream")
        .into_inner()
        .next()
        .await
        .expect("a reflection reply")
        .expect("a reflection answer");
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        reply.message_response
    else {
        panic!("unexpected reflection reply {reply:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.iter().any(|name| name == service), "{names:?}");
}
