//! GetPayment and ListPayments: customers see only their own payments;
//! lists are keyset-paginated and filtered by order and user.

use agora_payment::gateway::TOK_VISA;
use agora_proto::payment::v1 as pb;
use agora_testkit::status::{reason, violated_fields};
use agora_testkit::{backend_test, with_token};
use tonic::Code;

use crate::support::{charge_request, id, refund_request, spawn_app};

backend_test! {
    async fn a_customer_reads_only_their_own_payments(db: &TestDatabase) {
        let app = spawn_app(db).await;
        let alice = id();
        let bob = id();
        let alices = app
            .charge(pb::ChargeRequest { user_id: alice.clone(), ..charge_request(TOK_VISA, 100) })
            .await
            .unwrap();
        let bobs = app
            .charge(pb::ChargeRequest { user_id: bob.clone(), ..charge_request(TOK_VISA, 200) })
            .await
            .unwrap();
        let alice_token = app.customer_token(&alice);

        assert_eq!(app.get(&alices.payment_id, &alice_token).await.unwrap(), alices);
        let denied = app.get(&bobs.payment_id, &alice_token).await.unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);
        assert_eq!(reason(&denied), "PERMISSION_DENIED");
        assert!(!denied.message().contains(&bob), "the owner is not revealed");

        // Services and admins read anyone's.
        assert_eq!(app.get(&bobs.payment_id, &app.service_token()).await.unwrap(), bobs);
        assert_eq!(app.get(&bobs.payment_id, &app.admin_token()).await.unwrap(), bobs);

        let missing = app.get(&id(), &app.admin_token()).await.unwrap_err();
        assert_eq!(missing.code(), Code::NotFound);
        let bad = app.get("not-an-id", &app.admin_token()).await.unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&bad), ["payment_id"]);
        let anonymous = app
            .client
            .clone()
            .get_payment(pb::GetPaymentRequest { payment_id: alices.payment_id.clone() })
            .await
            .unwrap_err();
        assert_eq!(anonymous.code(), Code::Unauthenticated);

        // Lists: a customer's are their own, whatever they ask for.
        let mut client = app.client.clone();
        let own = client
            .list_payments(with_token(pb::ListPaymentsRequest::default(), &alice_token))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(own.payments, std::slice::from_ref(&alices));
        let by_order = client
            .list_payments(with_token(
                pb::ListPaymentsRequest { order_id: bobs.order_id.clone(), ..Default::default() },
                &alice_token,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(by_order.payments.is_empty(), "another customer's order shows nothing");
        let denied = client
            .list_payments(with_token(
                pb::ListPaymentsRequest { user_id: bob.clone(), ..Default::default() },
                &alice_token,
            ))
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn lists_page_through_filters_in_creation_order(db: &TestDatabase) {
        let app = spawn_app(db).await;
        let user = id();
        let other_user = id();
        let mut mine = Vec::new();
        for i in 0..5 {
            let payment = app
                .charge(pb::ChargeRequest { user_id: user.clone(), ..charge_request(TOK_VISA, 100 + i) })
                .await
                .unwrap();
            mine.push(payment);
            app.charge(pb::ChargeRequest { user_id: other_user.clone(), ..charge_request(TOK_VISA, 1) })
                .await
                .unwrap();
        }
        // Refunds and history come along in lists too.
        app.refund(refund_request(&mine[1].payment_id, 50)).await.unwrap();
        let expected_second = app.get(&mine[1].payment_id, &app.admin_token()).await.unwrap();
        assert_eq!(expected_second.refunds.len(), 1);

        let admin = app.admin_token();
        let mut client = app.client.clone();
        let mut seen = Vec::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            let page = client
                .list_payments(with_token(
                    pb::ListPaymentsRequest {
                        user_id: user.clone(),
                        page_size: 2,
                        page_token: token.clone(),
                        ..Default::default()
                    },
                    &admin,
                ))
                .await
                .unwrap()
                .into_inner();
            pages += 1;
            assert!(page.payments.len() <= 2);
            seen.extend(page.payments);
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(pages, 3);
        let ids: Vec<_> = seen.iter().map(|p| p.payment_id.clone()).collect();
        let expected: Vec<_> = mine.iter().map(|p| p.payment_id.clone()).collect();
        assert_eq!(ids, expected);
        assert_eq!(seen[1], expected_second, "listed payments carry refunds and history");

        // By order: exactly that order's payment.
        let by_order = client
            .list_payments(with_token(
                pb::ListPaymentsRequest { order_id: mine[3].order_id.clone(), ..Default::default() },
                &admin,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(by_order.payments, [mine[3].clone()]);

        // Everyone's, unfiltered.
        let all = client
            .list_payments(with_token(pb::ListPaymentsRequest::default(), &admin))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(all.payments.len(), 10);

        // A token only works with the filters it was issued for.
        let first = client
            .list_payments(with_token(
                pb::ListPaymentsRequest { user_id: user.clone(), page_size: 1, ..Default::default() },
                &admin,
            ))
            .await
            .unwrap()
            .into_inner();
        let status = client
            .list_payments(with_token(
                pb::ListPaymentsRequest {
                    user_id: other_user.clone(),
                    page_size: 1,
                    page_token: first.next_page_token,
                    ..Default::default()
                },
                &admin,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&status), ["page_token"]);

        let status = client
            .list_payments(with_token(
                pb::ListPaymentsRequest { page_size: -1, order_id: "x".into(), ..Default::default() },
                &admin,
            ))
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&status), ["order_id", "page_size"]);
        app.stop().await.unwrap();
    }
}
