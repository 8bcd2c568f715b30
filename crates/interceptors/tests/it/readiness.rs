//! Health follows the database a host is given: taken away → NOT_SERVING,
//! back → SERVING, for the server as a whole and for every service on it.
//! Tested once here, where it is implemented (`ServiceHost::database`);
//! only PostgreSQL can be taken away from under a running server.

use std::time::Duration;

use agora_interceptors::auth::TokenVerifier;
use agora_interceptors::db::{Database, PoolSettings};
use agora_interceptors::{ServeArgs, ServiceHost};
use agora_testkit::{TestDatabase, TestKeys, TestServer};
use tokio_stream::StreamExt;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_database_down_and_back_on_postgres() {
    let Some(db) = TestDatabase::postgres().await else {
        return;
    };
    let database = Database::connect(db.url(), &PoolSettings::default())
        .await
        .unwrap();
    let settings = ServeArgs {
        readiness_interval: Duration::from_millis(50),
        ..ServeArgs::default()
    };
    let keys = TestKeys::new();
    let verifier = TokenVerifier::new(keys.key_set.clone(), &keys.settings);
    let server = TestServer::start("", |listener, shutdown| {
        ServiceHost::new(settings, verifier)
            .database(database)
            .serve(listener, shutdown)
    })
    .await;

    let mut health = HealthClient::new(server.channel());
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut next_status = async move || {
        tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("a health change within 10 s")
            .unwrap()
            .unwrap()
            .status
    };
    assert_eq!(next_status().await, ServingStatus::Serving as i32);

    db.take_offline().await;
    assert_eq!(next_status().await, ServingStatus::NotServing as i32);
    let check = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(check.status, ServingStatus::NotServing as i32);

    db.bring_back().await;
    assert_eq!(next_status().await, ServingStatus::Serving as i32);
    server.stop().await;
    db.cleanup().await;
}
