//! What every Agora server offers besides its own API: health, reflection and a
//! shutdown that never hangs.

use std::time::{Duration, Instant};

use agora_testkit::backend_test;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::support::{spawn_app, spawn_with};

const USER_SERVICE: &str = "agora.user.v1.UserService";

backend_test! {
    async fn health_reports_every_service_and_refuses_unknown_ones(db: &TestDatabase) {
        let app = spawn_app(db).await;
        let mut health = HealthClient::new(app.channel());
        for service in ["", USER_SERVICE] {
            let status = health
                .check(HealthCheckRequest { service: service.into() })
                .await
                .unwrap()
                .into_inner()
                .status;
            assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
        }
        let unknown = health
            .check(HealthCheckRequest { service: "no.such.Service".into() })
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), Code::NotFound);

        // Watch on an unknown service says SERVICE_UNKNOWN and stays open.
        let mut stream = health
            .watch(HealthCheckRequest { service: "no.such.Service".into() })
            .await
            .unwrap()
            .into_inner();
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.status, ServingStatus::ServiceUnknown as i32);
        let nothing_more = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
        assert!(nothing_more.is_err(), "the stream stays open without new items");
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn reflection_lists_the_same_services_in_both_versions(db: &TestDatabase) {
        let app = spawn_app(db).await;
        // Every service serves its event feed beside its own API.
        let expected = [
            "agora.events.v1.EventFeedService",
            "agora.user.v1.UserService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ];

        use tonic_reflection::pb::v1 as v1;
        let mut client = v1::server_reflection_client::ServerReflectionClient::new(app.channel());
        let request = v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(String::new())),
        };
        let mut replies = client
            .server_reflection_info(tokio_stream::once(request))
            .await
            .unwrap()
            .into_inner();
        let reply = replies.next().await.unwrap().unwrap();
        let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
            reply.message_response
        else {
            panic!("unexpected reply {reply:?}");
        };
        let mut names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
        names.sort();
        assert_eq!(names, expected);

        use tonic_reflection::pb::v1alpha as v1alpha;
        let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(app.channel());
        let request = v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "agora.user.v1.UserService".into(),
            )),
        };
        let mut replies = client
            .server_reflection_info(tokio_stream::once(request))
            .await
            .unwrap()
            .into_inner();
        let reply = replies.next().await.unwrap().unwrap();
        let Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
            reply.message_response
        else {
            panic!("unexpected reply {reply:?}");
        };
        assert!(!files.file_descriptor_proto.is_empty());
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn shutdown_ends_health_watches_and_finishes_within_the_grace_period(db: &TestDatabase) {
        let app = spawn_with(db, |config| config.serve.shutdown_grace = Duration::from_secs(2)).await;
        let mut health = HealthClient::new(app.channel());
        let mut watch = health
            .watch(HealthCheckRequest { service: USER_SERVICE.into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(watch.next().await.unwrap().unwrap().status, ServingStatus::Serving as i32);

        let started = Instant::now();
        let stopping = tokio::spawn(app.stop());
        // Watchers hear NOT_SERVING, then their stream ends cleanly.
        let last = watch.next().await.unwrap().unwrap();
        assert_eq!(last.status, ServingStatus::NotServing as i32);
        assert!(watch.next().await.is_none(), "the watch stream ends on shutdown");
        stopping.await.unwrap().unwrap();
        assert!(started.elapsed() < Duration::from_secs(2), "drained before the grace period ran out");
    }
}

backend_test! {
    async fn oversized_requests_are_refused_before_decoding(db: &TestDatabase) {
        let app = spawn_with(db, |config| config.serve.max_request_bytes = 4096).await;
        let status = app
            .client
            .clone()
            .create_user(agora_proto::user::v1::CreateUserRequest {
                email: "big@example.com".into(),
                display_name: "x".repeat(8192),
                password: crate::support::PASSWORD.into(),
            })
            .await
            .unwrap_err();
        // RESOURCE_EXHAUSTED, as the gRPC spec has it (tonic alone would
        // answer OUT_OF_RANGE), naming both sizes.
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("too large"), "{status:?}");
        assert!(status.message().contains("4096"), "{status:?}");
        app.app_is_alive().await;
        app.stop().await.unwrap();
    }
}
