//! Reflection over real gRPC, as grpcurl uses it: a symbol the server does
//! not know is answered on the open stream and the stream goes on; files come
//! with their imports; the google.rpc error details are described.

use prost::Message as _;
use prost_types::FileDescriptorProto;
use tonic::Code;
use tonic::transport::Channel;
use tonic_reflection::pb::{v1, v1alpha};
use v1::server_reflection_request::MessageRequest;
use v1::server_reflection_response::MessageResponse;

use crate::probe::ProbeApp;

fn request(message: MessageRequest) -> v1::ServerReflectionRequest {
    v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(message),
    }
}

/// Sends `requests` on one v1 stream and returns every answer.
pub async fn ask(channel: Channel, requests: Vec<MessageRequest>) -> Vec<MessageResponse> {
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel);
    let mut answers = client
        .server_reflection_info(tokio_stream::iter(
            requests.into_iter().map(request).collect::<Vec<_>>(),
        ))
        .await
        .expect("the stream opens")
        .into_inner();
    let mut out = Vec::new();
    while let Some(answer) = answers.message().await.expect("the stream ends cleanly") {
        out.push(
            answer
                .message_response
                .expect("every answer has a response"),
        );
    }
    out
}

/// The services the server lists.
pub async fn list_services(channel: Channel) -> Vec<String> {
    match ask(channel, vec![MessageRequest::ListServices(String::new())])
        .await
        .remove(0)
    {
        MessageResponse::ListServicesResponse(list) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("not a service list: {other:?}"),
    }
}

fn file_names(answer: &MessageResponse) -> Vec<String> {
    match answer {
        MessageResponse::FileDescriptorResponse(files) => files
            .file_descriptor_proto
            .iter()
            .map(|bytes| {
                FileDescriptorProto::decode(bytes.as_slice())
                    .unwrap()
                    .name()
                    .to_owned()
            })
            .collect(),
        other => panic!("not files: {other:?}"),
    }
}

#[tokio::test]
async fn a_miss_is_answered_on_the_open_stream_which_goes_on() {
    let app = ProbeApp::start(|_| {}).await;
    let answers = ask(
        app.channel(),
        vec![
            MessageRequest::FileContainingSymbol("no.such.Service".into()),
            MessageRequest::FileByFilename("no/such.proto".into()),
            MessageRequest::FileContainingSymbol("google.rpc.ErrorInfo".into()),
            MessageRequest::FileContainingSymbol("agora.user.v1.UserService".into()),
            MessageRequest::ListServices(String::new()),
            MessageRequest::FileContainingSymbol("agora.user.v1.User".into()),
        ],
    )
    .await;
    assert_eq!(answers.len(), 6, "{answers:#?}");
    for miss in &answers[..2] {
        match miss {
            MessageResponse::ErrorResponse(error) => {
                assert_eq!(error.error_code, Code::NotFound as i32, "{error:?}");
            }
            other => panic!("a miss answered {other:?}"),
        }
    }
    // The error details grpcurl needs to print Agora's errors.
    assert_eq!(file_names(&answers[2])[0], "google/rpc/error_details.proto");
    // A service's file comes with its imports, minus those already sent.
    let user = file_names(&answers[3]);
    assert_eq!(user[0], "agora/user/v1/user_service.proto");
    assert!(
        user.iter().any(|name| name.starts_with("google/protobuf/")),
        "{user:?}"
    );
    // Asked again on the same stream, the file comes alone: its imports
    // were sent already.
    assert_eq!(
        file_names(&answers[5]),
        ["agora/user/v1/user_service.proto"]
    );
    match &answers[4] {
        MessageResponse::ListServicesResponse(list) => {
            let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
            assert_eq!(
                names,
                [
                    "agora.user.v1.UserService",
                    "grpc.health.v1.Health",
                    "grpc.reflection.v1.ServerReflection",
                    "grpc.reflection.v1alpha.ServerReflection"
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    app.stop().await.1.unwrap();
}

#[tokio::test]
async fn v1alpha_answers_the_same() {
    let app = ProbeApp::start(|_| {}).await;
    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(app.channel());
    let ask = |message| v1alpha::ServerReflectionRequest {
        host: "probe".into(),
        message_request: Some(message),
    };
    use v1alpha::server_reflection_request::MessageRequest as Alpha;
    use v1alpha::server_reflection_response::MessageResponse as AlphaResponse;
    let mut answers = client
        .server_reflection_info(tokio_stream::iter(vec![
            ask(Alpha::FileContainingSymbol("nope".into())),
            ask(Alpha::FileContainingSymbol("google.rpc.BadRequest".into())),
        ]))
        .await
        .unwrap()
        .into_inner();
    let miss = answers.message().await.unwrap().unwrap();
    assert_eq!(miss.valid_host, "probe");
    assert!(matches!(
        miss.message_response,
        Some(AlphaResponse::ErrorResponse(ref error)) if error.error_code == Code::NotFound as i32
    ));
    let hit = answers.message().await.unwrap().unwrap();
    assert!(matches!(
        hit.message_response,
        Some(AlphaResponse::FileDescriptorResponse(_))
    ));
    assert!(answers.message().await.unwrap().is_none());
    app.stop().await.1.unwrap();
}
