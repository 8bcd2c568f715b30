//! The `agora` launcher over real gRPC: the in-process suite (in memory and
//! on disk), its seeded accounts and tokens, the demo, and `agora migrate`;
//! and what its users run against it: grpcurl, grpc_health_probe, the
//! README's and the banner's command lines.

mod events;
mod grpcurl;
mod load;
mod probe_table;
mod readme;
mod tools;

use std::time::Duration;

use agora::demo::{self, Targets};
use agora::migrate;
use agora::probe;
use agora::suite::{Ports, Service, Storage, Suite, SuiteOptions, channel_to};
use agora_proto::order::v1 as order_pb;
use agora_proto::user::v1 as user_pb;
use agora_testkit::{TestDatabase, with_token};
use user_pb::user_service_client::UserServiceClient;

async fn start(storage: Storage) -> Suite {
    Suite::start(SuiteOptions {
        storage,
        ports: Ports::Any,
        rate_limit_per_second: None,
    })
    .await
    .expect("the suite starts")
}

async fn list_users(suite: &Suite, token: &str) -> Result<Vec<user_pb::User>, tonic::Status> {
    UserServiceClient::new(channel_to(suite.addr(Service::User)))
        .list_users(with_token(
            user_pb::ListUsersRequest {
                page_size: 100,
                page_token: String::new(),
            },
            token,
        ))
        .await
        .map(|reply| reply.into_inner().users)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_memory_suite_serves_all_four_and_the_demo_confirms_then_compensates() {
    let suite = start(Storage::Ephemeral).await;
    for service in Service::ALL {
        assert!(
            probe::is_serving(
                suite.addr(service),
                service.grpc_name(),
                Duration::from_secs(5)
            )
            .await,
            "{} is not SERVING",
            service.label()
        );
    }

    let mut output = Vec::new();
    let targets = Targets {
        user: suite.addr(Service::User),
        order: suite.addr(Service::Order),
        inventory: suite.addr(Service::Inventory),
    };
    let outcome = demo::run(targets, &mut |line: &str| output.push(line.to_owned()))
        .await
        .unwrap_or_else(|error| panic!("the demo failed: {error:#}\n{}", output.join("\n")));
    let transcript = output.join("\n");

    assert_eq!(outcome.confirmed.state(), order_pb::OrderState::Confirmed);
    assert_eq!(outcome.declined.state(), order_pb::OrderState::Failed);
    assert_eq!(
        outcome.declined.failure_reason, "PAYMENT_DECLINED",
        "{transcript}"
    );
    let compensated = outcome.declined.steps.iter().any(|step| {
        step.step() == order_pb::SagaStepKind::ReleaseStock
            && step.status() == order_pb::SagaStepStatus::Succeeded
    });
    assert!(
        compensated,
        "the declined order released its stock: {:#?}",
        outcome.declined
    );
    for n in 1..=6 {
        assert!(
            transcript.contains(&format!("[{n}/6]")),
            "step {n} missing:\n{transcript}"
        );
    }
    assert!(
        transcript.contains("CHARGE_PAYMENT"),
        "saga steps are shown:\n{transcript}"
    );

    suite.stop().await.expect("a clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_banner_tokens_work_and_its_accounts_are_seeded_once_across_restarts() {
    let data = tempfile::tempdir().unwrap();
    let suite = start(Storage::Dir(data.path().to_owned())).await;

    // The admin token is an admin's; the customer token is not.
    let users = list_users(&suite, &suite.admin.token)
        .await
        .expect("admin may list users");
    let emails: Vec<_> = users.iter().map(|u| u.email.as_str()).collect();
    assert!(emails.contains(&"admin@example.com"), "{emails:?}");
    assert!(emails.contains(&"shopper@example.com"), "{emails:?}");
    let refused = list_users(&suite, &suite.customer.token).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);

    // The banner prints those tokens and every address the suite uses.
    let banner = agora::banner::render(&suite);
    assert!(banner.contains(&suite.admin.token));
    assert!(banner.contains(&suite.customer.token));
    for service in Service::ALL {
        assert!(
            banner.contains(&suite.addr(service).to_string()),
            "{banner}"
        );
    }
    let first_ids: Vec<_> = users.iter().map(|u| u.user_id.clone()).collect();
    suite.stop().await.expect("a clean stop");

    // Files are where the README says; the passwords are private.
    for name in [
        "user.db",
        "order.db",
        "payment.db",
        "inventory.db",
        "keys/dev-passwords",
    ] {
        assert!(data.path().join(name).exists(), "{name} missing");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(data.path().join("keys/dev-passwords"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "dev passwords readable by others: {mode:o}"
        );
    }

    // A restart signs the same accounts in again and seeds nothing new.
    let again = start(Storage::Dir(data.path().to_owned())).await;
    let users = list_users(&again, &again.admin.token).await.unwrap();
    let ids: Vec<_> = users.iter().map(|u| u.user_id.clone()).collect();
    assert_eq!(ids, first_ids);
    again.stop().await.expect("a clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_brings_each_service_database_up_to_date_on_both_engines() {
    let tables = [
        (Service::User, "users"),
        (Service::Order, "orders"),
        (Service::Payment, "payments"),
        (Service::Inventory, "products"),
    ];
    for (service, table) in tables {
        let mut databases = vec![TestDatabase::sqlite()];
        databases.extend(TestDatabase::postgres().await);
        for db in databases {
            let first = migrate::run(service, db.url()).await.unwrap();
            assert!(!first.is_empty(), "{} on {}", service.label(), db.backend());
            // Again: nothing left to apply, the same list.
            let second = migrate::run(service, db.url()).await.unwrap();
            assert_eq!(first, second);
            // The service's tables are really there.
            sqlx::any::install_default_drivers();
            let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(db.url())
                .await
                .unwrap();
            let query = format!("SELECT COUNT(*) AS n FROM {table}");
            let row = sqlx::query(sqlx::AssertSqlSafe(query))
                .fetch_one(&mut conn)
                .await
                .unwrap();
            let count: i64 = sqlx::Row::try_get(&row, "n").unwrap();
            assert_eq!(count, 0, "{table} on {}", db.backend());
            drop(conn);
            db.cleanup().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_launchers_sign_in_waits_out_a_spent_rate_limit() {
    let suite = start(Storage::Ephemeral).await;
    let channel = channel_to(suite.addr(Service::User));
    // Spend this host's anonymous budget, as a burst of other local callers
    // would during start-up.
    let mut users = UserServiceClient::new(channel.clone());
    let mut limited = None;
    for _ in 0..1000 {
        if let Err(status) = users
            .create_user(user_pb::CreateUserRequest::default())
            .await
            && status.code() == tonic::Code::ResourceExhausted
        {
            limited = Some(status);
            break;
        }
    }
    let limited = limited.expect("the anonymous budget runs out");
    assert!(agora_interceptors::api::errors::retry_delay(&limited).is_some());

    // The launcher's sign-in honours the RetryInfo and gets its token.
    let signed_in = agora::suite::authenticate(channel, &suite.admin.email, &suite.admin.password)
        .await
        .expect("signed in despite the spent budget");
    assert!(!signed_in.access_token.is_empty());
    suite.stop().await.expect("a clean stop");
}

#[tokio::test]
async fn migrate_refuses_a_database_url_it_cannot_use() {
    let error = migrate::run(Service::User, "mysql://localhost/agora")
        .await
        .unwrap_err();
    assert!(
        format!("{error:#}").contains("sqlite: or postgres:"),
        "{error:#}"
    );
}
