//! grpcurl v1.8.9 against the suite: error details print decoded (reflection
//! describes `google/rpc/*`), auth errors carry an ErrorInfo, and a burst of
//! parallel calls from one host is not refused during reflection or health.

use std::path::Path;

use agora::suite::{Service, Storage};

use crate::tools;

async fn grpcurl(tool: &Path, args: &[&str]) -> (i32, String) {
    let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    tools::run(tool, &args).await
}

#[track_caller]
fn assert_decoded(output: &str, detail: &str) {
    assert!(
        output.contains(&format!(
            "\"@type\": \"type.googleapis.com/google.rpc.{detail}\""
        )),
        "no decoded {detail} in:\n{output}"
    );
    assert!(
        !output.contains("is not recognized"),
        "grpcurl could not decode a detail:\n{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_prints_every_error_detail_decoded() {
    let Some(tool) = tools::grpcurl() else {
        return;
    };
    let suite = crate::start(Storage::Ephemeral).await;
    let user = suite.addr(Service::User).to_string();
    let order = suite.addr(Service::Order).to_string();

    // BadRequest (and ErrorInfo) for bad input.
    let (code, output) = grpcurl(
        &tool,
        &[
            "-plaintext",
            "-d",
            r#"{"email":"nope","display_name":"","password":"short"}"#,
            &user,
            "agora.user.v1.UserService/CreateUser",
        ],
    )
    .await;
    assert_ne!(code, 0, "{output}");
    assert!(output.contains("Code: InvalidArgument"), "{output}");
    assert_decoded(&output, "BadRequest");
    assert!(output.contains("\"fieldViolations\""), "{output}");

    // Auth refusals carry an ErrorInfo with a reason to switch on.
    let (_, output) = grpcurl(
        &tool,
        &[
            "-plaintext",
            "-d",
            "{}",
            &user,
            "agora.user.v1.UserService/ListUsers",
        ],
    )
    .await;
    assert!(output.contains("Code: Unauthenticated"), "{output}");
    assert_decoded(&output, "ErrorInfo");
    assert!(
        output.contains("\"reason\": \"UNAUTHENTICATED\""),
        "{output}"
    );
    let customer = format!("authorization: Bearer {}", suite.customer.token);
    let (_, output) = grpcurl(
        &tool,
        &[
            "-plaintext",
            "-H",
            &customer,
            "-d",
            "{}",
            &user,
            "agora.user.v1.UserService/ListUsers",
        ],
    )
    .await;
    assert!(output.contains("Code: PermissionDenied"), "{output}");
    assert!(
        output.contains("\"reason\": \"PERMISSION_DENIED\""),
        "{output}"
    );

    // PreconditionFailure: a FAILED order cannot be cancelled.
    let place = format!(
        r#"{{"lines":[{{"sku":"SKU-MUG","quantity":1}}],"payment_method_token":"tok_declined","request_id":"{}"}}"#,
        uuid::Uuid::new_v4()
    );
    let (code, output) = grpcurl(
        &tool,
        &[
            "-plaintext",
            "-H",
            &customer,
            "-d",
            &place,
            &order,
            "agora.order.v1.OrderService/PlaceOrder",
        ],
    )
    .await;
    assert_eq!(code, 0, "{output}");
    let placed: serde_json::Value = serde_json::from_str(&output).expect("a JSON order");
    let order_id = placed["order"]["orderId"].as_str().expect("an order id");
    let cancel = format!(r#"{{"order_id":"{order_id}","reason":"test"}}"#);
    let (_, output) = grpcurl(
        &tool,
        &[
            "-plaintext",
            "-H",
            &customer,
            "-d",
            &cancel,
            &order,
            "agora.order.v1.OrderService/CancelOrder",
        ],
    )
    .await;
    assert!(output.contains("Code: FailedPrecondition"), "{output}");
    assert_decoded(&output, "PreconditionFailure");
    suite.stop().await.expect("a clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_grpcurl_calls_from_one_host_is_not_refused_by_the_plumbing() {
    let Some(tool) = tools::grpcurl() else {
        return;
    };
    let suite = crate::start(Storage::Ephemeral).await;
    let inventory = suite.addr(Service::Inventory).to_string();
    // 160 at once, each resolving the method by reflection and asking
    // health: more than the per-caller burst (100), none of it spent.
    let calls = (0..160).map(|n| {
        let tool = tool.clone();
        let inventory = inventory.clone();
        async move {
            let method = if n % 2 == 0 {
                "grpc.health.v1.Health/Check"
            } else {
                "grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
            };
            let args: Vec<String> = if n % 2 == 0 {
                vec!["-plaintext".into(), inventory, method.into()]
            } else {
                vec![
                    "-plaintext".into(),
                    inventory,
                    "describe".into(),
                    "agora.inventory.v1.InventoryService".into(),
                ]
            };
            tools::run(&tool, &args).await
        }
    });
    let results = futures::future::join_all(calls).await;
    let failed: Vec<_> = results
        .iter()
        .filter(|(code, _)| *code != 0)
        .map(|(_, output)| output.as_str())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of 160 failed, e.g.:\n{}",
        failed.len(),
        failed[0]
    );
    suite.stop().await.expect("a clean stop");
}
