//! `agora load` against a suite it starts: real orders confirmed, declined
//! and cancelled, and a report whose figures add up; and the one-process
//! suite on PostgreSQL (`--postgres`), one database per service.

use agora::demo::{self, Targets};
use agora::suite::{Ports, Service, Storage, Suite, SuiteOptions};
use agora_testkit::database::POSTGRES_ENV;
use serde_json::Value;
use sqlx::Connection as _;

#[test]
fn load_places_real_orders_and_reports_figures_that_add_up() {
    let data = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_agora"))
        .args([
            "--data-dir",
            data.path().to_str().unwrap(),
            "load",
            "--start",
            "--duration",
            "2s",
            "--concurrency",
            "4",
            "--customers",
            "4",
            "--skus",
            "3",
            "--decline-share",
            "0.25",
            "--cancel-share",
            "0.25",
            "--watchers",
            "1",
            "--json",
        ])
        .env("RUST_LOG", "warn")
        .output()
        .expect("agora load runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "agora load failed:\n{stderr}");
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("--json prints JSON ({e}):\n{stderr}"));
    assert!(
        stderr.contains("orders ("),
        "a progress line each second:\n{stderr}"
    );

    let count = |state: &str| report["by_state"][state]["count"].as_u64().unwrap();
    let orders = report["orders"].as_u64().unwrap();
    let (confirmed, failed, cancelled) = (count("confirmed"), count("failed"), count("cancelled"));
    assert!(confirmed > 0, "{report:#}");
    assert_eq!(
        orders,
        confirmed + failed + cancelled + count("pending") + count("other"),
        "{report:#}"
    );
    if orders >= 40 {
        assert!(
            failed > 0 && cancelled > 0,
            "declines and cancellations: {report:#}"
        );
    }
    assert_eq!(
        report["errors"].as_object().map(|e| e.len()),
        Some(0),
        "{report:#}"
    );

    let latency = &report["latency_ms"];
    let ms = |q: &str| latency[q].as_f64().unwrap();
    assert_eq!(latency["count"].as_u64(), Some(orders));
    assert!(
        0.0 < ms("p50")
            && ms("p50") <= ms("p90")
            && ms("p90") <= ms("p99")
            && ms("p99") <= ms("max"),
        "{latency}"
    );

    // Every confirmed order holds one unit; declined and cancelled ones
    // gave theirs back.
    let stock = &report["stock"];
    let units = |field: &str| stock[field].as_i64().unwrap();
    assert_eq!(
        units("available_before") - units("available_after"),
        confirmed as i64,
        "{stock}"
    );
    assert_eq!(stock["oversold"], Value::Bool(false));

    // Write transactions are counted by every service that writes.
    let writes = &report["write_transactions_per_order"];
    for service in ["order", "inventory", "payment", "total"] {
        assert!(
            writes[service].as_f64().is_some_and(|n| n > 0.0),
            "{service}: {writes}"
        );
    }
    let process = &report["processes"][0];
    assert!(process["cpu_ms"].as_u64().is_some(), "{process}");
    assert!(
        process["peak_rss_mib"].as_f64().is_some_and(|m| m > 1.0),
        "{process}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_runs_on_postgres_with_one_database_per_service() {
    let Ok(url) = std::env::var(POSTGRES_ENV) else {
        eprintln!("note: skipped ({POSTGRES_ENV} is not set)");
        return;
    };
    let prefix = format!(
        "{}{}_",
        agora_testkit::database::DATABASE_PREFIX,
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let data = tempfile::tempdir().unwrap();
    let storage = Storage::Postgres {
        url: url.clone(),
        prefix: prefix.clone(),
        data_dir: data.path().to_owned(),
    };
    // Twice: the first start creates the databases, the second finds them
    // (and the seeded accounts) in place.
    for _ in 0..2 {
        let suite = Suite::start(SuiteOptions {
            storage: storage.clone(),
            ports: Ports::Any,
            rate_limit_per_second: None,
        })
        .await
        .expect("the suite starts on PostgreSQL");
        let targets = Targets {
            user: suite.addr(Service::User),
            order: suite.addr(Service::Order),
            inventory: suite.addr(Service::Inventory),
        };
        let outcome = demo::run(targets, &mut |_: &str| {})
            .await
            .expect("the demo runs on PostgreSQL");
        assert_eq!(
            outcome.confirmed.state(),
            agora_proto::order::v1::OrderState::Confirmed
        );
        suite.stop().await.expect("a clean stop");
    }

    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_database WHERE datname LIKE $1 ORDER BY datname",
    )
    .bind(format!("{prefix}%"))
    .fetch_all(&mut admin)
    .await
    .unwrap();
    let expected: Vec<String> = ["inventory", "notification", "order", "payment", "user"]
        .iter()
        .map(|s| format!("{prefix}{s}"))
        .collect();
    assert_eq!(names, expected);
    for name in names {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await;
    }
}
