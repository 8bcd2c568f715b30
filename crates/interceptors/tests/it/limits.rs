//! Load shedding, per-caller rate limits and the panic guard.

use std::sync::atomic::Ordering;
use std::time::Duration;

use agora_interceptors::auth::Role;
use agora_proto::user::v1 as pb;
use agora_testkit::with_token;
use tonic::Code;
use tonic_types::StatusExt;

use crate::probe::ProbeApp;

#[tokio::test]
async fn a_panicking_handler_fails_only_its_own_call() {
    let app = ProbeApp::start(|_| {}).await;
    let token = app.keys.token("p-1", Role::Customer);
    let mut client = app.client();
    let status = client
        .get_user(with_token(
            pb::GetUserRequest {
                user_id: "panic".into(),
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Internal);
    assert!(
        !status.message().contains("probe asked"),
        "the panic text stays in the log"
    );
    // The same connection keeps serving.
    assert_eq!(app.whoami(Some(&token)).await.unwrap().user_id, "p-1");
    app.stop().await.1.unwrap();
}

#[tokio::test]
async fn calls_over_the_concurrency_limit_are_shed_at_once() {
    let app = ProbeApp::start(|s| s.max_concurrent_calls = 2).await;
    let token = app.keys.token("c-1", Role::Service);
    let blocked =
        |token: String,
         client: agora_proto::user::v1::user_service_client::UserServiceClient<_>| {
            let mut client = client;
            tokio::spawn(async move {
                client
                    .get_user(with_token(
                        pb::GetUserRequest {
                            user_id: "block".into(),
                        },
                        &token,
                    ))
                    .await
            })
        };
    let first = blocked(token.clone(), app.client());
    let second = blocked(token.clone(), app.client());
    // Wait (by polling, not sleeping blindly) until both are inside the handler.
    while app.state.entered.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let shed = app.whoami(Some(&token)).await.unwrap_err();
    assert_eq!(shed.code(), Code::ResourceExhausted);
    assert_eq!(shed.get_details_error_info().unwrap().reason, "OVERLOADED");
    assert!(shed.get_details_retry_info().is_some());
    assert_eq!(
        app.state.entered.load(Ordering::SeqCst),
        2,
        "the shed call never reached the handler"
    );

    app.state.gate.add_permits(2);
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
    assert!(app.whoami(Some(&token)).await.is_ok(), "capacity is back");
    app.stop().await.1.unwrap();
}

#[tokio::test]
async fn each_caller_has_its_own_rate_limit() {
    let app = ProbeApp::start(|s| {
        s.rate_limit_per_second = 1;
        s.rate_limit_burst = 3;
    })
    .await;
    let alice = app.keys.token("alice", Role::Customer);
    let bob = app.keys.token("bob", Role::Customer);
    for _ in 0..3 {
        app.whoami(Some(&alice)).await.unwrap();
    }
    let limited = app.whoami(Some(&alice)).await.unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted);
    assert_eq!(
        limited.get_details_error_info().unwrap().reason,
        "RATE_LIMITED"
    );
    let retry = limited
        .get_details_retry_info()
        .unwrap()
        .retry_delay
        .unwrap();
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_secs(1),
        "{retry:?}"
    );

    // Bob has his own budget; Agora's own services are not rate limited.
    app.whoami(Some(&bob)).await.unwrap();
    let service = app.keys.token("order", Role::Service);
    for _ in 0..10 {
        app.whoami(Some(&service)).await.unwrap();
    }
    app.stop().await.1.unwrap();
}

#[tokio::test]
async fn health_and_reflection_spend_no_rate_limit_budget() {
    let app = ProbeApp::start(|s| {
        s.rate_limit_per_second = 1;
        s.rate_limit_burst = 2;
    })
    .await;
    // Many times the burst of anonymous plumbing from one address: probes
    // and grpcurl's reflection lookups.
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel());
    for _ in 0..20 {
        health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health is never rate limited");
    }
    let services = crate::reflection::list_services(app.channel()).await;
    assert!(services.contains(&"agora.user.v1.UserService".to_owned()));

    // The budget is whole: the burst passes, the call after it is refused
    // with the wait in RetryInfo.
    let mut client = app.client();
    for _ in 0..2 {
        client
            .create_user(pb::CreateUserRequest::default())
            .await
            .expect("within the burst");
    }
    let limited = client
        .create_user(pb::CreateUserRequest::default())
        .await
        .unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted);
    assert_eq!(
        limited.get_details_error_info().unwrap().reason,
        "RATE_LIMITED"
    );
    let wait = agora_interceptors::api::errors::retry_delay(&limited).expect("RetryInfo");
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_secs(1),
        "{wait:?}"
    );
    app.stop().await.1.unwrap();
}
