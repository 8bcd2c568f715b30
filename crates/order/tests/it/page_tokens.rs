//! Page tokens across the four list methods: a hand-made token, an edited
//! one, or one another method (or other filters) issued is INVALID_ARGUMENT
//! with a `page_token` field violation; a token continues only the list it
//! came from.

use agora_proto::inventory::v1 as inv;
use agora_proto::payment::v1 as pay;
use agora_proto::user::v1 as usr;
use agora_proto::user::v1::user_service_client::UserServiceClient;
use agora_testkit::{backend_test, with_token};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tonic::{Code, Status};

use crate::suite::{Suite, SuiteOptions};
use crate::support::*;

/// The four list methods, each asked for its second page with `token`.
async fn list_all(suite: &Suite, admin: &str, token: &str) -> [Result<String, Status>; 4] {
    let token = token.to_owned();
    let users = UserServiceClient::new(suite.user.channel())
        .list_users(with_token(
            usr::ListUsersRequest {
                page_size: 1,
                page_token: token.clone(),
            },
            admin,
        ))
        .await
        .map(|r| r.into_inner().next_page_token);
    let orders = suite
        .orders()
        .list_orders(with_token(
            agora_proto::order::v1::ListOrdersRequest {
                page_size: 1,
                page_token: token.clone(),
                ..Default::default()
            },
            admin,
        ))
        .await
        .map(|r| r.into_inner().next_page_token);
    let products = suite
        .inventory()
        .list_products(with_token(
            inv::ListProductsRequest {
                page_size: 1,
                page_token: token.clone(),
            },
            admin,
        ))
        .await
        .map(|r| r.into_inner().next_page_token);
    let payments = suite
        .payments()
        .list_payments(with_token(
            pay::ListPaymentsRequest {
                page_size: 1,
                page_token: token,
                ..Default::default()
            },
            admin,
        ))
        .await
        .map(|r| r.into_inner().next_page_token);
    [users, orders, products, payments]
}

fn assert_refused(result: &Result<String, Status>, what: &str) {
    let status = result.as_ref().expect_err(what);
    assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    assert_eq!(violated_fields(status), ["page_token"], "{what}");
}

backend_test! {
    async fn page_tokens_are_sealed_to_their_method_and_filters(db: &TestDatabase) {
        let suite = Suite::start(db, SuiteOptions::default()).await;
        for sku in ["CUP", "MUG", "TEE"] {
            suite.product(sku, 500, 10).await;
        }
        let (_, ada) = customer(&suite.user, "ada@example.com").await;
        let (_, bob) = customer(&suite.user, "bob@example.com").await;
        for token in [&ada, &ada, &bob] {
            let order = place(&suite.orders(), place_request(vec![line("MUG", 1)], "tok_visa"), token).await.unwrap();
            assert_eq!(order.state(), agora_proto::order::v1::OrderState::Confirmed);
        }
        let admin = suite.keys.admin_token();

        // First pages: every method issues a token for its second page.
        let firsts = list_all(&suite, &admin, "").await;
        let tokens: Vec<String> = firsts.into_iter().map(|r| r.unwrap()).collect();
        assert!(tokens.iter().all(|t| !t.is_empty()), "{tokens:?}");
        let names = ["ListUsers", "ListOrders", "ListProducts", "ListPayments"];

        // Each token continues its own list and no other.
        for (issuer, token) in tokens.iter().enumerate() {
            let answers = list_all(&suite, &admin, token).await;
            for (method, answer) in answers.iter().enumerate() {
                if method == issuer {
                    assert!(answer.is_ok(), "{} continues its own token: {answer:?}", names[method]);
                } else {
                    assert_refused(answer, &format!("{} given a {} token", names[method], names[issuer]));
                }
            }
        }

        // Hand-made (the unsigned JSON form once accepted) and edited tokens.
        let forged = URL_SAFE_NO_PAD.encode(br#"{"k":"00000000-0000-7000-8000-000000000000","f":""}"#);
        let mut edited = URL_SAFE_NO_PAD.decode(&tokens[2]).unwrap();
        *edited.last_mut().unwrap() ^= 1;
        let edited = URL_SAFE_NO_PAD.encode(edited);
        for bad in [forged, edited, "not a token!".to_owned()] {
            for (method, answer) in list_all(&suite, &admin, &bad).await.iter().enumerate() {
                assert_refused(answer, &format!("{} given {bad:?}", names[method]));
            }
        }

        // Bound to filters too: the admin's ListOrders token does not continue
        // a customer's own list.
        let mine = suite
            .orders()
            .list_orders(with_token(
                agora_proto::order::v1::ListOrdersRequest { page_size: 1, page_token: tokens[1].clone(), ..Default::default() },
                &ada,
            ))
            .await;
        assert_refused(&mine.map(|r| r.into_inner().next_page_token), "a customer given the admin's token");
        suite.stop().await;
    }
}
