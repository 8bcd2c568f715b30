//! Compressed calls: gzip and zstd requests are accepted on every service
//! (the stub, health, reflection), replies are compressed only for callers
//! that ask, and a compressed message is held to the size limit once
//! decompressed.

use agora_interceptors::auth::Role;
use agora_proto::user::v1 as pb;
use agora_proto::user::v1::user_service_client::UserServiceClient;
use agora_testkit::with_token;
use tonic::Code;
use tonic::codec::CompressionEncoding;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::probe::ProbeApp;

fn encoding_of<T>(reply: &tonic::Response<T>) -> Option<String> {
    reply
        .metadata()
        .get("grpc-encoding")
        .map(|value| value.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn gzip_and_zstd_callers_are_served_and_answered_in_kind() {
    let app = ProbeApp::start(|_| {}).await;
    let token = app.keys.token("z-1", Role::Customer);
    let whoami = || {
        with_token(
            pb::GetUserRequest {
                user_id: "whoami".into(),
            },
            &token,
        )
    };
    for (encoding, name) in [
        (CompressionEncoding::Gzip, "gzip"),
        (CompressionEncoding::Zstd, "zstd"),
    ] {
        let mut client = UserServiceClient::new(app.channel())
            .send_compressed(encoding)
            .accept_compressed(encoding);
        let reply = client.get_user(whoami()).await.expect(name);
        assert_eq!(encoding_of(&reply).as_deref(), Some(name));
        assert_eq!(reply.into_inner().user.unwrap().user_id, "z-1");

        let mut health = HealthClient::new(app.channel())
            .send_compressed(encoding)
            .accept_compressed(encoding);
        let reply = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health takes compressed calls too");
        assert_eq!(encoding_of(&reply).as_deref(), Some(name));
    }
    // A caller sending gzip but not asking for it back gets plain replies.
    let mut plain_back =
        UserServiceClient::new(app.channel()).send_compressed(CompressionEncoding::Gzip);
    let reply = plain_back.get_user(whoami()).await.unwrap();
    assert_eq!(encoding_of(&reply), None);
    app.stop().await.1.unwrap();
}

#[tokio::test]
async fn reflection_takes_compressed_streams() {
    let app = ProbeApp::start(|_| {}).await;
    let mut client =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(
            app.channel(),
        )
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap();
    assert_eq!(encoding_of(&answers).as_deref(), Some("gzip"));
    assert!(answers.get_mut().message().await.unwrap().is_some());
    app.stop().await.1.unwrap();
}

#[tokio::test]
async fn a_compressed_message_is_held_to_the_limit_once_decompressed() {
    let app = ProbeApp::start(|s| s.max_request_bytes = 4096).await;
    let mut client =
        UserServiceClient::new(app.channel()).send_compressed(CompressionEncoding::Gzip);
    // 100 KB that gzip shrinks to a few hundred bytes, under the limit on
    // the wire.
    let bomb = pb::CreateUserRequest {
        display_name: "a".repeat(100_000),
        ..Default::default()
    };
    let refused = client.create_user(bomb).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    app.stop().await.1.unwrap();
}
