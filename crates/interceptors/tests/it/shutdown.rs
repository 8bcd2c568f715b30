//! Shutdown never hangs: a stream that would hold tonic's drain open forever is
//! closed when the grace period ends.

use std::time::Duration;

use tokio_stream::StreamExt;
use tonic_reflection::pb::v1 as reflection;

use crate::probe::ProbeApp;

#[tokio::test]
async fn an_open_stream_is_closed_when_the_grace_period_ends() {
    let app = ProbeApp::start(|s| s.shutdown_grace = Duration::from_millis(300)).await;
    // A reflection stream stays open as long as the client keeps its half open.
    let (requests, receiver) = tokio::sync::mpsc::channel::<reflection::ServerReflectionRequest>(1);
    let mut client =
        reflection::server_reflection_client::ServerReflectionClient::new(app.channel());
    requests
        .send(reflection::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                reflection::server_reflection_request::MessageRequest::ListServices(String::new()),
            ),
        })
        .await
        .unwrap();
    let mut replies = client
        .server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .unwrap()
        .into_inner();
    assert!(replies.next().await.unwrap().is_ok(), "the stream is live");

    let (took, result) = app.stop().await;
    result.unwrap();
    assert!(
        took >= Duration::from_millis(300),
        "in-flight work got its grace period: {took:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "the open stream did not hold shutdown: {took:?}"
    );
    // The client sees its stream end (an error or a close), not a hang.
    let end = tokio::time::timeout(Duration::from_secs(5), replies.next()).await;
    assert!(matches!(end, Ok(None) | Ok(Some(Err(_)))), "{end:?}");
    drop(requests);
}
