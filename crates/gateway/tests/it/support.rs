//! A gateway in front of a [`TestSuite`], and a small HTTP client for it.

use std::net::SocketAddr;
use std::time::Duration;

use agora_gateway::{Gateway, GatewayConfig};
use agora_testkit::suite::{SuiteOptions, TestSuite};
use agora_testkit::{TestDatabase, eventually};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::sync::oneshot;

/// The four services and a gateway in front of them.
pub struct Harness {
    pub suite: TestSuite,
    pub gateway: TestGateway,
    _db: TestDatabase,
}

impl Harness {
    /// Starts the services and a gateway with the default settings.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts the services and a gateway with `adjust`ed settings.
    pub async fn start_with(adjust: impl FnOnce(&mut GatewayConfig)) -> Self {
        let db = TestDatabase::sqlite();
        let suite = TestSuite::start(&db, SuiteOptions::default()).await;
        let mut config = config_for(&suite);
        adjust(&mut config);
        let gateway = TestGateway::start(config).await;
        gateway.wait_ready().await;
        Self {
            suite,
            gateway,
            _db: db,
        }
    }
}

/// The gateway's settings for `suite`'s services, without a rate limit.
pub fn config_for(suite: &TestSuite) -> GatewayConfig {
    let order = suite.order.as_ref().expect("the order service runs");
    let mut config = GatewayConfig::with_upstreams(
        &format!("http://{}", suite.user.addr()),
        &format!("http://{}", order.addr()),
        &format!("http://{}", suite.payment.addr()),
        &format!("http://{}", suite.inventory.addr()),
    );
    config.rate_limit_per_second = 0;
    config.readiness_interval = Duration::from_millis(100);
    config
}

/// A gateway serving on a free port until dropped.
pub struct TestGateway {
    pub addr: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
    h2: Client<HttpConnector, Full<Bytes>>,
    _stop: oneshot::Sender<()>,
}

/// An answer: status, headers, body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "not JSON ({error}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The `@type`s of the google.rpc.Status details.
    pub fn detail_types(&self) -> Vec<String> {
        self.json()["details"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|detail| detail["@type"].as_str().map(str::to_owned))
            .collect()
    }

    /// The fields of the BadRequest detail's violations.
    pub fn violated_fields(&self) -> Vec<String> {
        let json = self.json();
        let mut fields = Vec::new();
        for detail in json["details"].as_array().cloned().unwrap_or_default() {
            for violation in detail["fieldViolations"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                fields.push(violation["field"].as_str().unwrap_or_default().to_owned());
            }
        }
        fields
    }

    /// The ErrorInfo reason, if any.
    pub fn reason(&self) -> String {
        let json = self.json();
        json["details"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .find_map(|detail| detail["reason"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

impl TestGateway {
    /// Starts a gateway with `config` on a free port.
    pub async fn start(config: GatewayConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let gateway = Gateway::new(&config).expect("gateway");
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(gateway.serve(listener, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            client: Client::builder(TokioExecutor::new()).build_http(),
            h2: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
            _stop: stop,
        }
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        eventually(
            "the gateway to be ready",
            Duration::from_secs(20),
            || async { (self.get("/readyz", None).await.status == StatusCode::OK).then_some(()) },
        )
        .await;
    }

    /// A request with JSON `body`, a bearer `token` and extra `headers`.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Bytes>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(body.unwrap_or_default()))
            .expect("request");
        self.exchange(request, false).await
    }

    /// Sends `request` over HTTP/1.1, or HTTP/2 with prior knowledge.
    pub async fn exchange(&self, request: Request<Full<Bytes>>, h2: bool) -> Answer {
        let client = if h2 { &self.h2 } else { &self.client };
        let response = client.request(request).await.expect("the gateway answers");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("the body").to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// GET `path`.
    pub async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.send(Method::GET, path, token, None, &[]).await
    }

    /// POST `body` as JSON to `path`.
    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Answer {
        self.send(
            Method::POST,
            path,
            token,
            Some(Bytes::from(body.to_string())),
            &[],
        )
        .await
    }

    /// GET `path` as a Server-Sent Events stream: each event's (name, data).
    pub async fn events(&self, path: &str, token: &str) -> (StatusCode, Vec<(String, Value)>) {
        let answer = self
            .send(
                Method::GET,
                path,
                Some(token),
                None,
                &[("accept", "text/event-stream")],
            )
            .await;
        let text = String::from_utf8_lossy(&answer.body).into_owned();
        let mut events = Vec::new();
        for block in text.split("\n\n").filter(|block| !block.trim().is_empty()) {
            let mut name = "message".to_owned();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(rest) = line.strip_prefix("event: ") {
                    name = rest.to_owned();
                } else if let Some(rest) = line.strip_prefix("data: ") {
                    data.push_str(rest);
                }
            }
            events.push((name, serde_json::from_str(&data).expect("JSON event data")));
        }
        (answer.status, events)
    }
}
