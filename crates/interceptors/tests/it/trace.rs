//! Tracing over real gRPC: the caller's trace continues through two hops
//! served by the full stack, each span with the RPC semantic conventions,
//! exported over OTLP to an in-process collector.

use agora_interceptors::auth::Role;
use agora_interceptors::client::Downstream;
use agora_interceptors::telemetry::flush_traces;
use agora_proto::user::v1 as pb;
use agora_proto::user::v1::user_service_client::UserServiceClient;
use agora_testkit::otlp::{CollectedSpan, SpanKind, collector};
use tonic::{Code, Request};

use crate::probe::ProbeApp;

const GET_USER: &str = "agora.user.v1.UserService/GetUser";

/// A `traceparent` for a fresh trace, sampled, as an upstream would send it.
fn fresh_traceparent() -> (String, String, String) {
    let trace_id = uuid::Uuid::now_v7().simple().to_string();
    let parent_id = trace_id[16..].to_owned();
    (format!("00-{trace_id}-{parent_id}-01"), trace_id, parent_id)
}

fn one<'a>(
    spans: &'a [CollectedSpan],
    what: &str,
    pick: impl Fn(&CollectedSpan) -> bool,
) -> &'a CollectedSpan {
    let found: Vec<_> = spans.iter().filter(|span| pick(span)).collect();
    assert_eq!(found.len(), 1, "exactly one {what} span in {spans:#?}");
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_crosses_two_hops_with_parent_child_spans() {
    let collector = collector();
    let leaf = ProbeApp::start(|_| {}).await;
    let relay = ProbeApp::start(|_| {}).await;
    let to_leaf = Downstream::builder("leaf", &format!("http://{}", leaf.addr))
        .build()
        .unwrap();
    let token = leaf.keys.token("relay-service", Role::Service);
    assert!(
        relay
            .state
            .relay
            .set((UserServiceClient::new(to_leaf), token))
            .is_ok()
    );

    let (traceparent, trace_id, upstream_span) = fresh_traceparent();
    let mut request = agora_testkit::with_token(
        pb::GetUserRequest {
            user_id: "relay".into(),
        },
        &relay.keys.token("caller", Role::Customer),
    );
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    let answer = relay
        .client()
        .get_user(request)
        .await
        .expect("relayed call");
    // The leaf answered with its caller: the relay's service principal.
    assert_eq!(answer.into_inner().user.unwrap().user_id, "relay-service");

    flush_traces().await;
    let spans = collector.spans_of(&trace_id);
    assert_eq!(spans.len(), 3, "server, client, server: {spans:#?}");
    let relay_server = one(&spans, "relay server", |span| {
        span.kind == SpanKind::Server && span.parent_span_id == upstream_span
    });
    let relay_client = one(&spans, "relay client", |span| span.kind == SpanKind::Client);
    let leaf_server = one(&spans, "leaf server", |span| {
        span.kind == SpanKind::Server && span.parent_span_id != upstream_span
    });
    assert_eq!(relay_client.parent_span_id, relay_server.span_id);
    assert_eq!(leaf_server.parent_span_id, relay_client.span_id);
    for span in [relay_server, relay_client, leaf_server] {
        assert_eq!(span.name, GET_USER);
        assert_eq!(span.attributes["rpc.system"], "grpc");
        assert_eq!(span.attributes["rpc.service"], "agora.user.v1.UserService");
        assert_eq!(span.attributes["rpc.method"], "GetUser");
        assert_eq!(span.attributes["rpc.grpc.status_code"], "0");
        assert_eq!(span.status_code, 0, "an OK call is not an error");
        // The service's own name, not the process's: the calls it makes
        // while serving included.
        assert_eq!(span.service_name, "agora-user", "{span:?}");
    }
    relay.stop().await.1.unwrap();
    leaf.stop().await.1.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_call_is_traced_with_its_code_but_not_as_a_server_error() {
    let collector = collector();
    let app = ProbeApp::start(|_| {}).await;
    let (traceparent, trace_id, _) = fresh_traceparent();
    let mut request = Request::new(pb::GetUserRequest {
        user_id: "whoami".into(),
    });
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    let refused = app.client().get_user(request).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    flush_traces().await;
    let spans = collector.spans_of(&trace_id);
    let server = one(&spans, "server", |span| span.kind == SpanKind::Server);
    assert_eq!(
        server.attributes["rpc.grpc.status_code"],
        (Code::Unauthenticated as i32).to_string()
    );
    assert_eq!(
        server.status_code, 0,
        "a caller's mistake is not a server error"
    );
    app.stop().await.1.unwrap();
}
