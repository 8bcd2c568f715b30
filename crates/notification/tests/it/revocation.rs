//! A revoked token is refused by every service, not only the user service:
//! after a customer deletes their account, the same token is refused
//! (UNAUTHENTICATED, TOKEN_REVOKED) by order, payment and notification
//! within a few poll intervals, and cannot cancel an order; a disabled
//! admin's token cannot manage inventory. Other accounts are untouched.

use std::time::Duration;

use agora_proto::inventory::v1 as inv;
use agora_proto::notification::v1 as pb;
use agora_proto::notification::v1::notification_service_client::NotificationServiceClient;
use agora_proto::order::v1 as order_pb;
use agora_proto::payment::v1 as pay;
use agora_proto::user::v1 as user_pb;
use agora_proto::user::v1::user_service_client::UserServiceClient;
use agora_testkit::status::{assert_reason, reason};
use agora_testkit::{PASSWORD, backend_test, eventually, with_token};
use prost_types::FieldMask;
use tonic::{Code, Status};

use crate::support::*;

/// Long enough for several polls of the revocation list, however slow the
/// machine.
const WITHIN: Duration = Duration::from_secs(15);

async fn get_order(
    suite: &TestSuite,
    token: &str,
    order_id: &str,
) -> Result<order_pb::Order, Status> {
    suite
        .orders()
        .get_order(with_token(
            order_pb::GetOrderRequest {
                order_id: order_id.into(),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().order.unwrap())
}

async fn list_orders(suite: &TestSuite, token: &str) -> Result<usize, Status> {
    suite
        .orders()
        .list_orders(with_token(order_pb::ListOrdersRequest::default(), token))
        .await
        .map(|r| r.into_inner().orders.len())
}

async fn list_payments(suite: &TestSuite, token: &str) -> Result<usize, Status> {
    suite
        .payments()
        .list_payments(with_token(pay::ListPaymentsRequest::default(), token))
        .await
        .map(|r| r.into_inner().payments.len())
}

async fn list_notifications(server: &TestServer, token: &str) -> Result<usize, Status> {
    NotificationServiceClient::new(server.channel())
        .list_notifications(with_token(pb::ListNotificationsRequest::default(), token))
        .await
        .map(|r| r.into_inner().notifications.len())
}

/// Waits until `call` is refused as revoked.
async fn until_revoked<T, F, Fut>(what: &str, call: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    eventually(
        &format!("{what} to refuse the revoked token"),
        WITHIN,
        || async {
            match call().await {
                Err(status) if reason(&status) == "TOKEN_REVOKED" => {
                    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
                    Some(())
                }
                _ => None,
            }
        },
    )
    .await;
}

async fn wait_confirmed(suite: &TestSuite, token: &str, order_id: &str) {
    eventually("the order to be confirmed", WITHIN, || async {
        let order = get_order(suite, token, order_id).await.unwrap();
        (order.state() == order_pb::OrderState::Confirmed).then_some(())
    })
    .await;
}

backend_test! {
    async fn a_deleted_accounts_token_is_refused_everywhere(db: &TestDatabase) {
        let suite = TestSuite::start(db, SuiteOptions::default()).await;
        suite.product("MUG", 1200, 10).await;
        let (ada, ada_token) = customer(&suite, "ada@example.com").await;
        let (_, bob_token) = customer(&suite, "bob@example.com").await;
        let notes_db = TestDatabase::like(db).await;
        let notes = start_notification(&suite, &notes_db, TestNotifier::default(), 3).await;

        let order = place(&suite, &ada_token, "MUG", "tok_visa").await;
        wait_confirmed(&suite, &ada_token, &order.order_id).await;
        let bobs = place(&suite, &bob_token, "MUG", "tok_visa").await;
        wait_confirmed(&suite, &bob_token, &bobs.order_id).await;
        wait_for_notifications(&notes, &ada_token, 1).await;
        assert_eq!(list_payments(&suite, &ada_token).await.unwrap(), 1);

        UserServiceClient::new(suite.user.channel())
            .delete_user(with_token(user_pb::DeleteUserRequest { user_id: ada.clone() }, &ada_token))
            .await
            .unwrap();

        until_revoked("order's GetOrder", || get_order(&suite, &ada_token, &order.order_id)).await;
        until_revoked("order's ListOrders", || list_orders(&suite, &ada_token)).await;
        until_revoked("payment's ListPayments", || list_payments(&suite, &ada_token)).await;
        until_revoked("notification's ListNotifications", || list_notifications(&notes, &ada_token)).await;
        // Once refused, refused for good: no cancel, so no refund nor restock.
        let refused = suite
            .orders()
            .cancel_order(with_token(
                order_pb::CancelOrderRequest { order_id: order.order_id.clone(), reason: "gone".into() },
                &ada_token,
            ))
            .await
            .unwrap_err();
        assert_reason(&refused, Code::Unauthenticated, "TOKEN_REVOKED");
        let admin = suite.keys.admin_token();
        let kept = get_order(&suite, &admin, &order.order_id).await.unwrap();
        assert_eq!(kept.state(), order_pb::OrderState::Confirmed);
        assert_eq!(suite.net_charged(&order.order_id).await, 1200);
        assert_eq!(suite.stock("MUG").await.on_hand, 8);

        // Bob's token works everywhere.
        assert_eq!(list_orders(&suite, &bob_token).await.unwrap(), 1);
        assert_eq!(list_payments(&suite, &bob_token).await.unwrap(), 1);
        wait_for_notifications(&notes, &bob_token, 1).await;
        notes.stop().await;
        notes_db.cleanup().await;
        suite.stop().await;
    }
}

backend_test! {
    async fn a_disabled_admin_cannot_manage_stock_until_enabled(db: &TestDatabase) {
        let suite = TestSuite::start(db, SuiteOptions::default()).await;
        let users = UserServiceClient::new(suite.user.channel());
        let (eve, _) = customer(&suite, "eve@example.com").await;
        let root = suite.keys.admin_token();
        let update = |disabled: Option<bool>| user_pb::UpdateUserRequest {
            user: Some(user_pb::User {
                user_id: eve.clone(),
                role: user_pb::Role::Admin as i32,
                disabled: disabled.unwrap_or_default(),
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec![if disabled.is_some() { "disabled" } else { "role" }.into()],
            }),
            password: String::new(),
        };
        users.clone().update_user(with_token(update(None), &root)).await.unwrap();
        let sign_in = || {
            let mut users = users.clone();
            async move {
                users
                    .authenticate(user_pb::AuthenticateRequest {
                        email: "eve@example.com".into(),
                        password: PASSWORD.into(),
                    })
                    .await
                    .map(|r| r.into_inner().access_token)
            }
        };
        let eve_admin = sign_in().await.unwrap();
        let create = |sku: &'static str, token: String| {
            let mut inventory = suite.inventory();
            async move {
                inventory
                    .create_product(with_token(
                        inv::CreateProductRequest {
                            product: Some(inv::Product {
                                sku: sku.into(),
                                name: sku.into(),
                                price: Some(agora_proto::Money { currency_code: "EUR".into(), amount_minor: 100 }),
                                ..Default::default()
                            }),
                        },
                        &token,
                    ))
                    .await
                    .map(|_| ())
            }
        };
        create("CUP", eve_admin.clone()).await.unwrap();

        users.clone().update_user(with_token(update(Some(true)), &root)).await.unwrap();
        until_revoked("inventory's CreateProduct", || create("BOWL", eve_admin.clone())).await;
        let refused = sign_in().await.unwrap_err();
        assert_reason(&refused, Code::PermissionDenied, "ACCOUNT_DISABLED");

        users.clone().update_user(with_token(update(Some(false)), &root)).await.unwrap();
        let again = sign_in().await.unwrap();
        create("PLATE", again).await.unwrap();
        let refused = create("SAUCER", eve_admin).await.unwrap_err();
        assert_reason(&refused, Code::Unauthenticated, "TOKEN_REVOKED");
        suite.stop().await;
    }
}
