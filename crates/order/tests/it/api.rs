//! The API without a working inventory or payment: validation, access rules,
//! idempotency, listing, watching, and a saga that cannot reach inventory.

use agora_interceptors::auth::Role;
use agora_order::ServeOptions;
use agora_proto::order::v1 as pb;
use agora_proto::user::v1 as upb;
use agora_proto::user::v1::user_service_client::UserServiceClient;
use agora_testkit::{TestDatabase, backend_test, with_token};
use futures::StreamExt;
use tonic::Code;

use crate::support::*;

/// User and order services; inventory and payment point at a dead port.
async fn without_inventory(db: &TestDatabase) -> (Keys, TestServer, TestServer, TestDatabase) {
    let keys = Keys::new();
    let user_db = TestDatabase::like(db).await;
    let user = start_user(&user_db, &keys).await;
    let dead = dead_address().await;
    let mut config = order_config(db);
    config.user_url = format!("http://{}", user.addr());
    config.inventory_url = format!("http://{dead}");
    config.payment_url = format!("http://{dead}");
    let order = start_order(config, &keys, ServeOptions::default()).await;
    (keys, user, order, user_db)
}

backend_test! {
    async fn bad_requests_name_every_bad_field(db: &TestDatabase) {
        let (_keys, user, order, user_db) = without_inventory(db).await;
        let (_, token) = customer(&user, "ada@example.com").await;
        let client = order_client(&order);

        let status = place(
            &client,
            pb::PlaceOrderRequest {
                lines: vec![line("mug", 1), line("PLATE", 0)],
                payment_method_token: String::new(),
                request_id: "not-a-uuid".into(),
            },
            &token,
        )
        .await
        .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        let fields = violated_fields(&status);
        for field in ["lines[0].sku", "lines[1].quantity", "payment_method_token", "request_id"] {
            assert!(fields.contains(&field.to_owned()), "{field} missing from {fields:?}");
        }

        let status = place(&client, place_request(vec![line("MUG", 1), line("MUG", 2)], "tok_visa"), &token)
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&status), vec!["lines".to_owned()]);
        let status = place(&client, place_request(vec![], "tok_visa"), &token).await.unwrap_err();
        assert_eq!(violated_fields(&status), vec!["lines".to_owned()]);

        let status = get(&client, "nope", &token).await.unwrap_err();
        assert_eq!(violated_fields(&status), vec!["order_id".to_owned()]);
        let status = get(&client, &uuid::Uuid::now_v7().to_string(), &token).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(reason(&status), "ORDER_NOT_FOUND");

        order.stop().await;
        user.stop().await;
        user_db.cleanup().await;
    }
}

backend_test! {
    async fn only_people_with_accounts_place_orders(db: &TestDatabase) {
        let (keys, user, order, user_db) = without_inventory(db).await;
        let client = order_client(&order);
        let request = place_request(vec![line("MUG", 1)], "tok_visa");

        let mut anonymous = client.clone();
        let status = anonymous.place_order(request.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);

        let service = keys.people.token("agora-inventory", Role::Service);
        let status = place(&client, request.clone(), &service).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);

        // A valid token whose account was deleted is refused, and nothing is recorded.
        let (user_id, token) = customer(&user, "gone@example.com").await;
        UserServiceClient::new(user.channel())
            .delete_user(with_token(upb::DeleteUserRequest { user_id: user_id.clone() }, &token))
            .await
            .unwrap();
        let status = place(&client, request.clone(), &token).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        assert_eq!(reason(&status), "ACCOUNT_NOT_FOUND");
        let listed = client
            .clone()
            .list_orders(with_token(pb::ListOrdersRequest::default(), &keys.admin_token()))
            .await
            .unwrap()
            .into_inner();
        assert!(listed.orders.is_empty());

        order.stop().await;
        user.stop().await;
        user_db.cleanup().await;
    }
}

backend_test! {
    async fn an_unreachable_user_service_records_nothing(db: &TestDatabase) {
        let (keys, user, order, user_db) = without_inventory(db).await;
        let (_, token) = customer(&user, "ada@example.com").await;
        user.stop().await;
        let client = order_client(&order);
        let status = place(&client, place_request(vec![line("MUG", 1)], "tok_visa"), &token).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(reason(&status), "DEPENDENCY_UNAVAILABLE");
        let listed = client
            .clone()
            .list_orders(with_token(pb::ListOrdersRequest::default(), &keys.admin_token()))
            .await
            .unwrap()
            .into_inner();
        assert!(listed.orders.is_empty(), "nothing recorded: retrying is safe");
        order.stop().await;
        user_db.cleanup().await;
    }
}

backend_test! {
    async fn unreachable_inventory_fails_the_order_after_its_retry_budget(db: &TestDatabase) {
        let (_keys, user, order, user_db) = without_inventory(db).await;
        let (user_id, token) = customer(&user, "ada@example.com").await;
        let client = order_client(&order);

        let placed = place(&client, place_request(vec![line("MUG", 2)], "tok_visa"), &token).await.unwrap();
        assert_eq!(placed.state(), pb::OrderState::Failed, "{placed:#?}");
        assert_eq!(placed.user_id, user_id);
        assert_eq!(placed.failure_reason, "INVENTORY_UNAVAILABLE");
        assert!(placed.failure_message.contains("gave up after 3 tries"), "{}", placed.failure_message);
        assert!(placed.total.is_none());
        assert!(placed.payment_id.is_empty());
        // Three recorded tries, each refused before doing anything: nothing to undo.
        use pb::SagaStepKind::ReserveStock as R;
        use pb::SagaStepStatus::{Failed as F, Started as S};
        assert_eq!(steps(&placed), vec![(R, S), (R, F), (R, S), (R, F), (R, S), (R, F)]);
        assert_eq!(
            placed.steps.iter().map(|s| s.attempt).collect::<Vec<_>>(),
            vec![1, 1, 2, 2, 3, 3]
        );

        // Cancelling a FAILED order is refused.
        let status = client
            .clone()
            .cancel_order(with_token(
                pb::CancelOrderRequest { order_id: placed.order_id.clone(), reason: String::new() },
                &token,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(reason(&status), "ORDER_NOT_CANCELLABLE");

        // Watching a settled order sends it once and ends OK.
        let mut stream = client
            .clone()
            .watch_order(with_token(pb::WatchOrderRequest { order_id: placed.order_id.clone() }, &token))
            .await
            .unwrap()
            .into_inner();
        let first = stream.next().await.unwrap().unwrap().order.unwrap();
        assert_eq!(first, get(&client, &placed.order_id, &token).await.unwrap());
        assert!(stream.next().await.is_none());

        order.stop().await;
        user.stop().await;
        user_db.cleanup().await;
    }
}

backend_test! {
    async fn a_repeated_request_id_returns_the_same_order(db: &TestDatabase) {
        let (keys, user, order, user_db) = without_inventory(db).await;
        let (_, token) = customer(&user, "ada@example.com").await;
        let (_, other) = customer(&user, "bob@example.com").await;
        let client = order_client(&order);
        let request = place_request(vec![line("MUG", 2), line("PLATE", 1)], "tok_visa");

        let first = place(&client, request.clone(), &token).await.unwrap();
        let mut reordered = request.clone();
        reordered.lines.reverse();
        let again = place(&client, reordered, &token).await.unwrap();
        assert_eq!(again.order_id, first.order_id);
        assert_eq!(again.request_id, request.request_id);

        let mut changed = request.clone();
        changed.lines[0].quantity = 3;
        let status = place(&client, changed, &token).await.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(reason(&status), "REQUEST_ID_REUSED");

        // The same request_id from someone else is their own order.
        let theirs = place(&client, request.clone(), &other).await.unwrap();
        assert_ne!(theirs.order_id, first.order_id);

        let all = client
            .clone()
            .list_orders(with_token(pb::ListOrdersRequest::default(), &keys.admin_token()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(all.orders.len(), 2);

        order.stop().await;
        user.stop().await;
        user_db.cleanup().await;
    }
}

backend_test! {
    async fn customers_see_only_their_orders_and_pages_are_stable(db: &TestDatabase) {
        let (keys, user, order, user_db) = without_inventory(db).await;
        let (ada_id, ada) = customer(&user, "ada@example.com").await;
        let (bob_id, bob) = customer(&user, "bob@example.com").await;
        let client = order_client(&order);
        let mut ada_orders = Vec::new();
        for _ in 0..3 {
            ada_orders.push(place(&client, place_request(vec![line("MUG", 1)], "tok_visa"), &ada).await.unwrap().order_id);
        }
        let bobs = place(&client, place_request(vec![line("MUG", 1)], "tok_visa"), &bob).await.unwrap();

        // Bob cannot read, watch, cancel or list Ada's orders.
        let status = get(&client, &ada_orders[0], &bob).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        let status = client
            .clone()
            .watch_order(with_token(pb::WatchOrderRequest { order_id: ada_orders[0].clone() }, &bob))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        let status = client
            .clone()
            .cancel_order(with_token(pb::CancelOrderRequest { order_id: ada_orders[0].clone(), reason: String::new() }, &bob))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        let status = client
            .clone()
            .list_orders(with_token(pb::ListOrdersRequest { user_id: ada_id.clone(), ..Default::default() }, &bob))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);

        // Ada pages through her own orders, oldest first, two at a time.
        let list = |token: String, request: pb::ListOrdersRequest| {
            let mut client = client.clone();
            async move { client.list_orders(with_token(request, &token)).await.map(|r| r.into_inner()) }
        };
        let first = list(ada.clone(), pb::ListOrdersRequest { page_size: 2, ..Default::default() }).await.unwrap();
        assert_eq!(first.orders.iter().map(|o| o.order_id.clone()).collect::<Vec<_>>(), ada_orders[..2]);
        assert!(!first.next_page_token.is_empty());
        let second = list(ada.clone(), pb::ListOrdersRequest { page_size: 2, page_token: first.next_page_token.clone(), ..Default::default() }).await.unwrap();
        assert_eq!(second.orders.iter().map(|o| o.order_id.clone()).collect::<Vec<_>>(), ada_orders[2..]);
        assert!(second.next_page_token.is_empty());
        // A token is bound to its filter.
        let status = list(keys.admin_token(), pb::ListOrdersRequest { page_size: 2, page_token: first.next_page_token, user_id: bob_id.clone() }).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);

        // Admins list everyone, or one user.
        let admin = keys.admin_token();
        let everyone = list(admin.clone(), pb::ListOrdersRequest::default()).await.unwrap();
        assert_eq!(everyone.orders.len(), 4);
        let only_bob = list(admin.clone(), pb::ListOrdersRequest { user_id: bob_id, ..Default::default() }).await.unwrap();
        assert_eq!(only_bob.orders.iter().map(|o| o.order_id.clone()).collect::<Vec<_>>(), vec![bobs.order_id.clone()]);
        assert_eq!(get(&client, &bobs.order_id, &admin).await.unwrap().order_id, bobs.order_id);
        // Every listed order carries its lines and saga history.
        assert!(everyone.orders.iter().all(|o| o.lines.len() == 1 && !o.steps.is_empty()));

        order.stop().await;
        user.stop().await;
        user_db.cleanup().await;
    }
}
