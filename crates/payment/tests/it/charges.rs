//! Charge: the test gateway's tokens, exactly-once per key, at most one
//! success per order, and every field validated.

use std::sync::Arc;

use agora_payment::gateway::{
    TOK_DECLINED, TOK_INSUFFICIENT_FUNDS, TOK_PROCESSING_ERROR, TOK_SLOW, TOK_VISA,
};
use agora_proto::payment::v1 as pb;
use agora_proto::r#type::v1::Money;
use agora_testkit::providers::FlakyProvider;
use agora_testkit::status::{reason, violated_fields};
use agora_testkit::{Keys, backend_test, with_token};
use tonic::Code;

use crate::support::{charge_request, gateway, history, id, spawn_app, spawn_with, state, usd};

backend_test! {
    async fn an_approved_charge_is_captured_with_its_history(db: &TestDatabase) {
        let app = spawn_app(db).await;
        let request = charge_request(TOK_VISA, 1999);
        let payment = app.charge(request.clone()).await.unwrap();
        assert_eq!(state(&payment), pb::PaymentState::Captured);
        assert_eq!(payment.order_id, request.order_id);
        assert_eq!(payment.user_id, request.user_id);
        assert_eq!(payment.amount, usd(1999));
        assert_eq!(payment.refunded_amount, usd(0));
        assert!(payment.decline_reason.is_empty());
        assert!(!payment.provider_reference.is_empty());
        assert_eq!(history(&payment), [pb::PaymentState::Pending, pb::PaymentState::Captured]);
        assert!(payment.history.iter().all(|t| t.time.is_some()));
        assert!(payment.create_time.is_some() && payment.update_time.is_some());
        assert_eq!((app.gateway.charge_calls(), app.gateway.captures()), (1, 1));

        let read = app.get(&payment.payment_id, &app.admin_token()).await.unwrap();
        assert_eq!(read, payment);
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn declines_are_ok_answers_with_the_reason(db: &TestDatabase) {
        let app = spawn_app(db).await;
        for (token, why) in [(TOK_DECLINED, "card_declined"), (TOK_INSUFFICIENT_FUNDS, "insufficient_funds")] {
            let payment = app.charge(charge_request(token, 500)).await.unwrap();
            assert_eq!(state(&payment), pb::PaymentState::Declined, "{token}");
            assert_eq!(payment.decline_reason, why);
            assert_eq!(history(&payment), [pb::PaymentState::Pending, pb::PaymentState::Declined]);
            assert_eq!(payment.history[1].note, why);
        }
        // A token the gateway does not know: given up, not declined.
        let payment = app.charge(charge_request("tok_unknown", 500)).await.unwrap();
        assert_eq!(state(&payment), pb::PaymentState::Failed);
        assert_eq!(payment.decline_reason, "invalid_payment_method");
        assert_eq!(app.gateway.captures(), 0);
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn a_repeat_with_the_same_key_returns_the_first_result(db: &TestDatabase) {
        let app = spawn_app(db).await;
        let request = charge_request(TOK_VISA, 700);
        let first = app.charge(request.clone()).await.unwrap();
        let again = app.charge(request.clone()).await.unwrap();
        assert_eq!(again, first);
        assert_eq!((app.gateway.charge_calls(), app.gateway.captures()), (1, 1));

        // A declined charge repeats as declined, without asking again.
        let declined = charge_request(TOK_DECLINED, 700);
        let first = app.charge(declined.clone()).await.unwrap();
        assert_eq!(app.charge(declined).await.unwrap(), first);
        assert_eq!(app.gateway.charge_calls(), 2);
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn the_same_key_with_a_different_body_is_a_failed_precondition(db: &TestDatabase) {
        let app = spawn_app(db).await;
        let request = charge_request(TOK_VISA, 700);
        app.charge(request.clone()).await.unwrap();
        let variants = [
            pb::ChargeRequest { amount: usd(701), ..request.clone() },
            pb::ChargeRequest { order_id: id(), ..request.clone() },
            pb::ChargeRequest { user_id: id(), ..request.clone() },
            pb::ChargeRequest { payment_method_token: TOK_DECLINED.into(), ..request.clone() },
            pb::ChargeRequest {
                amount: Some(Money { currency_code: "EUR".into(), amount_minor: 700 }),
                ..request.clone()
            },
        ];
        for variant in variants {
            let status = app.charge(variant.clone()).await.unwrap_err();
            assert_eq!(status.code(), Code::FailedPrecondition, "{variant:?}");
            assert_eq!(reason(&status), "IDEMPOTENCY_KEY_REUSED");
        }
        assert_eq!(app.gateway.charge_calls(), 1);
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn concurrent_duplicates_make_one_provider_call_and_one_capture(db: &TestDatabase) {
        let app = spawn_app(db).await;
        // tok_slow keeps the first attempt at the gateway for 500 ms, so the
        // other 19 calls all arrive while it is in flight.
        let request = charge_request(TOK_SLOW, 4200);
        let calls = (0..20).map(|_| app.charge(request.clone()));
        let results = futures::future::join_all(calls).await;
        let payments: Vec<pb::Payment> = results.into_iter().map(|r| r.unwrap()).collect();
        let first = &payments[0];
        for payment in &payments {
            assert_eq!(payment.payment_id, first.payment_id);
            assert_eq!(state(payment), pb::PaymentState::Captured);
        }
        assert_eq!((app.gateway.charge_calls(), app.gateway.captures()), (1, 1));

        let listed = app
            .client
            .clone()
            .list_payments(with_token(
                pb::ListPaymentsRequest { order_id: request.order_id.clone(), ..Default::default() },
                &app.admin_token(),
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.payments.len(), 1, "one payment recorded for the key");
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn an_order_is_paid_at_most_once(db: &TestDatabase) {
        let app = spawn_app(db).await;
        let request = charge_request(TOK_VISA, 1000);
        let paid = app.charge(request.clone()).await.unwrap();

        let other_key = pb::ChargeRequest { idempotency_key: "another-key".into(), ..request.clone() };
        let status = app.charge(other_key).await.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(reason(&status), "ORDER_ALREADY_PAID");
        assert!(status.message().contains(&paid.payment_id));
        assert_eq!(app.gateway.captures(), 1);

        // After a decline, a new key may try the order again.
        let declined = charge_request(TOK_DECLINED, 1000);
        app.charge(declined.clone()).await.unwrap();
        let retry = pb::ChargeRequest {
            idempotency_key: "second-card".into(),
            payment_method_token: TOK_VISA.into(),
            ..declined
        };
        assert_eq!(state(&app.charge(retry).await.unwrap()), pb::PaymentState::Captured);
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn racing_keys_for_one_order_capture_once(db: &TestDatabase) {
        let app = spawn_app(db).await;
        let base = charge_request(TOK_SLOW, 1000);
        let calls = (0..10).map(|i| {
            app.charge(pb::ChargeRequest { idempotency_key: format!("race-{i}"), ..base.clone() })
        });
        let results = futures::future::join_all(calls).await;
        let captured = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(captured, 1, "{results:?}");
        for refused in results.iter().filter_map(|r| r.as_ref().err()) {
            assert_eq!(refused.code(), Code::FailedPrecondition);
            assert!(
                ["ORDER_ALREADY_PAID", "ORDER_CHARGE_PENDING"].contains(&reason(refused).as_str()),
                "{refused:?}"
            );
        }
        assert_eq!(app.gateway.captures(), 1);
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn a_processing_error_is_unavailable_and_a_retry_asks_again(db: &TestDatabase) {
        let app = spawn_app(db).await;
        let request = charge_request(TOK_PROCESSING_ERROR, 900);
        let status = app.charge(request.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(reason(&status), "PROVIDER_UNAVAILABLE");
        use tonic_types::StatusExt;
        assert!(status.get_details_retry_info().is_some(), "tells when to retry");

        // The attempt is recorded, PENDING, and a retry goes to the provider again.
        let again = app.charge(request.clone()).await.unwrap_err();
        assert_eq!(again.code(), Code::Unavailable);
        assert_eq!(app.gateway.charge_calls(), 2);

        let listed = app
            .client
            .clone()
            .list_payments(with_token(
                pb::ListPaymentsRequest { order_id: request.order_id.clone(), ..Default::default() },
                &app.admin_token(),
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.payments.len(), 1);
        assert_eq!(state(&listed.payments[0]), pb::PaymentState::Pending);

        // While it is pending, another key cannot charge the order.
        let status = app
            .charge(pb::ChargeRequest { idempotency_key: "other".into(), payment_method_token: TOK_VISA.into(), ..request })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(reason(&status), "ORDER_CHARGE_PENDING");
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn a_transient_failure_is_retried_with_the_same_provider_key(db: &TestDatabase) {
        let gateway = gateway();
        let flaky = Arc::new(FlakyProvider::new(gateway.clone()).failing_charges(2));
        let app = spawn_with(db, gateway.clone(), flaky.clone(), Keys::new(), |_| {}).await;
        let request = charge_request(TOK_VISA, 1234);
        for _ in 0..2 {
            let status = app.charge(request.clone()).await.unwrap_err();
            assert_eq!(status.code(), Code::Unavailable);
        }
        let payment = app.charge(request.clone()).await.unwrap();
        assert_eq!(state(&payment), pb::PaymentState::Captured);
        assert_eq!(history(&payment), [pb::PaymentState::Pending, pb::PaymentState::Captured]);
        let keys = flaky.charge_keys.lock().unwrap().clone();
        assert_eq!(keys.len(), 3);
        assert!(keys.iter().all(|k| *k == keys[0]), "one provider key for every attempt: {keys:?}");
        assert!(keys[0].contains(&payment.payment_id));
        assert_eq!(gateway.captures(), 1);
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn every_field_is_validated(db: &TestDatabase) {
        let app = spawn_app(db).await;
        let good = charge_request(TOK_VISA, 100);
        let cases: Vec<(pb::ChargeRequest, &[&str])> = vec![
            (pb::ChargeRequest::default(), &["order_id", "user_id", "amount", "payment_method_token", "idempotency_key"]),
            (pb::ChargeRequest { order_id: "nope".into(), ..good.clone() }, &["order_id"]),
            (pb::ChargeRequest { user_id: "0b9a2f5e-3c57-4a4e-9d8e-2f0c1c9b4a11".into(), ..good.clone() }, &["user_id"]),
            (pb::ChargeRequest { amount: usd(0), ..good.clone() }, &["amount.amount_minor"]),
            (pb::ChargeRequest { amount: usd(-5), ..good.clone() }, &["amount.amount_minor"]),
            (pb::ChargeRequest { amount: usd(1_000_000_000_001), ..good.clone() }, &["amount.amount_minor"]),
            (pb::ChargeRequest { amount: usd(i64::MAX), ..good.clone() }, &["amount.amount_minor"]),
            (
                pb::ChargeRequest { amount: Some(Money { currency_code: "usd".into(), amount_minor: 0 }), ..good.clone() },
                &["amount.amount_minor", "amount.currency_code"],
            ),
            (pb::ChargeRequest { amount: Some(Money { currency_code: "DOLLARS".into(), amount_minor: 5 }), ..good.clone() }, &["amount.currency_code"]),
            (pb::ChargeRequest { idempotency_key: "k".repeat(129), ..good.clone() }, &["idempotency_key"]),
            (pb::ChargeRequest { idempotency_key: "has spaces".into(), ..good.clone() }, &["idempotency_key"]),
            (pb::ChargeRequest { payment_method_token: "tok\u{0}".into(), ..good.clone() }, &["payment_method_token"]),
        ];
        for (request, fields) in cases {
            let status = app.charge(request.clone()).await.unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{request:?}");
            assert_eq!(violated_fields(&status), fields, "{request:?}");
        }
        // The largest amount is accepted.
        let max = app.charge(pb::ChargeRequest { amount: usd(1_000_000_000_000), ..good }).await.unwrap();
        assert_eq!(state(&max), pb::PaymentState::Captured);
        assert_eq!(app.gateway.charge_calls(), 1, "no invalid request reached the provider");
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn only_services_may_charge(db: &TestDatabase) {
        let app = spawn_app(db).await;
        let request = charge_request(TOK_VISA, 100);
        let mut client = app.client.clone();
        let customer = app.customer_token(&request.user_id);
        let denied = client.charge(with_token(request.clone(), &customer)).await.unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);
        let denied = client.charge(with_token(request.clone(), &app.admin_token())).await.unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);
        let anonymous = client.charge(request).await.unwrap_err();
        assert_eq!(anonymous.code(), Code::Unauthenticated);
        assert_eq!(app.gateway.charge_calls(), 0);
        app.stop().await.unwrap();
    }
}
