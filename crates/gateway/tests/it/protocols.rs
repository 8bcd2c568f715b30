//! The other doors of the gateway: gRPC-Web (hand-framed, as a browser's
//! client sends it), plain gRPC over HTTP/2, CORS preflight, the OpenAPI
//! document against the route table, health, readiness and metrics.

use agora_proto::inventory::v1 as inv;
use bytes::{BufMut as _, Bytes, BytesMut};
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use prost::Message as _;

use crate::support::Harness;

/// One gRPC(-Web) data frame around `message`.
fn frame(message: &impl prost::Message) -> Bytes {
    let encoded = message.encode_to_vec();
    let mut out = BytesMut::with_capacity(encoded.len() + 5);
    out.put_u8(0);
    out.put_u32(u32::try_from(encoded.len()).unwrap());
    out.put_slice(&encoded);
    out.freeze()
}

/// Splits a gRPC-Web body into its data messages and its trailer text.
fn unframe(mut body: &[u8]) -> (Vec<Vec<u8>>, String) {
    let mut messages = Vec::new();
    let mut trailers = String::new();
    while body.len() >= 5 {
        let flag = body[0];
        let length = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let payload = &body[5..5 + length];
        if flag & 0x80 != 0 {
            trailers.push_str(&String::from_utf8_lossy(payload));
        } else {
            messages.push(payload.to_vec());
        }
        body = &body[5 + length..];
    }
    (messages, trailers)
}

#[tokio::test]
async fn grpc_web_and_grpc_reach_the_services() {
    let harness = Harness::start().await;
    harness.suite.product("SKU-GW-WEB", 500, 3).await;
    let gateway = &harness.gateway;
    let body = frame(&inv::ListProductsRequest {
        page_size: 10,
        page_token: String::new(),
    });

    // gRPC-Web over HTTP/1.1, as a browser sends it.
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!(
            "http://{}/agora.inventory.v1.InventoryService/ListProducts",
            gateway.addr
        ))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(Full::new(body.clone()))
        .unwrap();
    let answer = gateway.exchange(request, false).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        answer.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/grpc-web")
    );
    let (messages, trailers) = unframe(&answer.body);
    assert!(trailers.contains("grpc-status:0"), "{trailers:?}");
    let listed = inv::ListProductsResponse::decode(messages[0].as_slice()).unwrap();
    assert!(
        listed
            .products
            .iter()
            .any(|product| product.sku == "SKU-GW-WEB")
    );

    // A gRPC-Web error keeps its status in the trailers.
    let missing = Request::builder()
        .method(Method::POST)
        .uri(format!(
            "http://{}/agora.inventory.v1.InventoryService/GetProduct",
            gateway.addr
        ))
        .header("content-type", "application/grpc-web+proto")
        .body(Full::new(frame(&inv::GetProductRequest {
            sku: "NOPE".into(),
        })))
        .unwrap();
    let answer = gateway.exchange(missing, false).await;
    let grpc_status = answer
        .headers
        .get("grpc-status")
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_else(|| unframe(&answer.body).1);
    assert!(grpc_status.contains('5'), "{grpc_status:?}");

    // Plain gRPC over HTTP/2 passes through too.
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!(
            "http://{}/agora.inventory.v1.InventoryService/ListProducts",
            gateway.addr
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(body))
        .unwrap();
    let answer = gateway.exchange(request, true).await;
    assert_eq!(answer.status, StatusCode::OK);
    let (messages, _) = unframe(&answer.body);
    let listed = inv::ListProductsResponse::decode(messages[0].as_slice()).unwrap();
    assert!(
        listed
            .products
            .iter()
            .any(|product| product.sku == "SKU-GW-WEB")
    );
}

#[tokio::test]
async fn cors_preflight_allows_only_the_configured_origins() {
    let harness = Harness::start_with(|config| {
        config.allowed_origins = vec!["https://shop.example".to_owned()];
    })
    .await;
    let gateway = &harness.gateway;
    let preflight = |origin: &'static str| {
        Request::builder()
            .method(Method::OPTIONS)
            .uri(format!("http://{}/v1/orders", gateway.addr))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let allowed = gateway
        .exchange(preflight("https://shop.example"), false)
        .await;
    assert!(allowed.status.is_success(), "{:?}", allowed.status);
    assert_eq!(
        allowed.headers["access-control-allow-origin"],
        "https://shop.example"
    );
    let methods = allowed.headers["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(methods.contains("POST"), "{methods}");
    let other = gateway
        .exchange(preflight("https://evil.example"), false)
        .await;
    assert!(!other.headers.contains_key("access-control-allow-origin"));

    // A simple request from the allowed origin gets the header too.
    let simple = gateway
        .send(
            Method::GET,
            "/v1/products",
            None,
            None,
            &[("origin", "https://shop.example")],
        )
        .await;
    assert_eq!(
        simple.headers["access-control-allow-origin"],
        "https://shop.example"
    );
}

#[tokio::test]
async fn openapi_lists_every_route_and_health_and_metrics_answer() {
    let harness = Harness::start().await;
    let gateway = &harness.gateway;

    let document = gateway.get("/openapi.json", None).await;
    assert_eq!(document.status, StatusCode::OK);
    let document = document.json();
    assert_eq!(document["openapi"], "3.0.3");
    let pool = agora_gateway::descriptor_pool().unwrap();
    let routes =
        agora_gateway::routes::RouteTable::from_pool(&pool, &agora_gateway::SERVICES).unwrap();
    assert_eq!(
        routes.routes().len(),
        25,
        "every method of the four services has a route"
    );
    for route in routes.routes() {
        let operation =
            &document["paths"][&route.pattern][route.method.as_str().to_ascii_lowercase()];
        assert!(
            operation.is_object(),
            "{} {} is in the document",
            route.method,
            route.pattern
        );
        assert_eq!(
            operation["operationId"],
            format!(
                "{}_{}",
                route.grpc.parent_service().name(),
                route.grpc.name()
            )
        );
    }
    assert!(document["components"]["schemas"]["agora.order.v1.Order"].is_object());

    assert_eq!(gateway.get("/healthz", None).await.status, StatusCode::OK);
    let ready = gateway.get("/readyz", None).await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(
        ready.json()["upstreams"]["agora.order.v1.OrderService"],
        "SERVING"
    );

    assert_eq!(
        gateway.get("/v1/products", None).await.status,
        StatusCode::OK
    );
    let metrics = gateway.get("/metrics", None).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.lines()
            .any(|line| line.starts_with("grpc_server_handled_total")
                && line.contains("grpc_method=\"ListProducts\"")
                && line.contains("grpc_code=\"OK\"")),
        "{text}"
    );
    assert!(text.contains("grpc_client_handled_total"), "{text}");
}
