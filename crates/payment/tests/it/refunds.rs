//! Refund: partial and full, never beyond what was captured (also under
//! concurrency), idempotent per key, only for captured payments, in the
//! payment's currency, by services and admins only.

use std::sync::Arc;

use agora_payment::gateway::{TOK_DECLINED, TOK_VISA};
use agora_proto::payment::v1 as pb;
use agora_proto::r#type::v1::Money;
use agora_testkit::providers::FlakyProvider;
use agora_testkit::status::{reason, violated_fields};
use agora_testkit::{Keys, backend_test, with_token};
use tonic::Code;

use crate::support::{
    charge_request, gateway, history, id, refund_request, spawn_app, spawn_with, state, usd,
};

backend_test! {
    async fn partial_then_full_refunds_walk_the_states(db: &TestDatabase) {
        let app = spawn_app(db).await;
        let payment = app.charge(charge_request(TOK_VISA, 1000)).await.unwrap();

        let first = app.refund(refund_request(&payment.payment_id, 300)).await.unwrap();
        let after_first = first.payment.unwrap();
        let refund = first.refund.unwrap();
        assert_eq!(state(&after_first), pb::PaymentState::PartiallyRefunded);
        assert_eq!(after_first.refunded_amount, usd(300));
        assert_eq!(refund.amount, usd(300));
        assert_eq!(refund.reason, "customer returned the goods");
        assert!(refund.create_time.is_some());
        assert_eq!(after_first.refunds, std::slice::from_ref(&refund));

        let second = app.refund(refund_request(&payment.payment_id, 700)).await.unwrap();
        let after_second = second.payment.unwrap();
        assert_eq!(state(&after_second), pb::PaymentState::Refunded);
        assert_eq!(after_second.refunded_amount, usd(1000));
        assert_eq!(after_second.refunds.len(), 2);
        assert_eq!(
            history(&after_second),
            [
                pb::PaymentState::Pending,
                pb::PaymentState::Captured,
                pb::PaymentState::PartiallyRefunded,
                pb::PaymentState::Refunded,
            ]
        );
        assert!(after_second.history[2].note.contains(&refund.refund_id));
        assert_eq!(app.gateway.refunded_against(&payment.provider_reference), Some(1000));

        // Nothing is left: one more cent is refused.
        let status = app.refund(refund_request(&payment.payment_id, 1)).await.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(reason(&status), "REFUND_EXCEEDS_CAPTURED");
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn over_refunds_are_refused(db: &TestDatabase) {
        let app = spawn_app(db).await;
        let payment = app.charge(charge_request(TOK_VISA, 1000)).await.unwrap();
        let status = app.refund(refund_request(&payment.payment_id, 1001)).await.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(reason(&status), "REFUND_EXCEEDS_CAPTURED");
        use tonic_types::StatusExt;
        let violations = status.get_details_precondition_failure().unwrap().violations;
        assert_eq!(violations[0].r#type, "REFUND_EXCEEDS_CAPTURED");

        app.refund(refund_request(&payment.payment_id, 600)).await.unwrap();
        let status = app.refund(refund_request(&payment.payment_id, 401)).await.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);
        let read = app.get(&payment.payment_id, &app.admin_token()).await.unwrap();
        assert_eq!(read.refunded_amount, usd(600));
        assert_eq!(app.gateway.refunds_made(), 1);
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn concurrent_refunds_never_exceed_the_capture(db: &TestDatabase) {
        let app = spawn_app(db).await;
        let payment = app.charge(charge_request(TOK_VISA, 1000)).await.unwrap();
        let calls = (0..10).map(|_| app.refund(refund_request(&payment.payment_id, 300)));
        let results = futures::future::join_all(calls).await;
        let succeeded = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(succeeded, 3, "{results:?}");
        for refused in results.iter().filter_map(|r| r.as_ref().err()) {
            assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
            assert_eq!(reason(refused), "REFUND_EXCEEDS_CAPTURED");
        }
        let read = app.get(&payment.payment_id, &app.admin_token()).await.unwrap();
        assert_eq!(read.refunded_amount, usd(900));
        assert_eq!(state(&read), pb::PaymentState::PartiallyRefunded);
        assert_eq!(app.gateway.refunded_against(&payment.provider_reference), Some(900));
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn refunds_are_idempotent_per_key(db: &TestDatabase) {
        let app = spawn_app(db).await;
        let payment = app.charge(charge_request(TOK_VISA, 1000)).await.unwrap();
        let request = refund_request(&payment.payment_id, 250);
        let first = app.refund(request.clone()).await.unwrap();
        let again = app.refund(request.clone()).await.unwrap();
        assert_eq!(again.refund, first.refund);
        assert_eq!(again.payment.unwrap().refunded_amount, usd(250));
        // Concurrent repeats too.
        let repeats = futures::future::join_all((0..10).map(|_| app.refund(request.clone()))).await;
        for repeat in repeats {
            assert_eq!(repeat.unwrap().refund, first.refund);
        }
        assert_eq!((app.gateway.refund_calls(), app.gateway.refunds_made()), (1, 1));

        // The same key with another amount or payment is refused.
        for variant in [
            pb::RefundRequest { amount: usd(251), ..request.clone() },
            pb::RefundRequest { reason: "something else".into(), ..request.clone() },
        ] {
            let status = app.refund(variant).await.unwrap_err();
            assert_eq!(status.code(), Code::FailedPrecondition);
            assert_eq!(reason(&status), "IDEMPOTENCY_KEY_REUSED");
        }
        let other = app.charge(charge_request(TOK_VISA, 1000)).await.unwrap();
        let status = app
            .refund(pb::RefundRequest { payment_id: other.payment_id, ..request })
            .await
            .unwrap_err();
        assert_eq!(reason(&status), "IDEMPOTENCY_KEY_REUSED");
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn only_captured_payments_are_refundable(db: &TestDatabase) {
        let app = spawn_app(db).await;
        let declined = app.charge(charge_request(TOK_DECLINED, 1000)).await.unwrap();
        let status = app.refund(refund_request(&declined.payment_id, 100)).await.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(reason(&status), "PAYMENT_NOT_REFUNDABLE");

        let failed = app.charge(charge_request("tok_bogus", 1000)).await.unwrap();
        let status = app.refund(refund_request(&failed.payment_id, 100)).await.unwrap_err();
        assert_eq!(reason(&status), "PAYMENT_NOT_REFUNDABLE");

        let status = app.refund(refund_request(&id(), 100)).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(reason(&status), "PAYMENT_NOT_FOUND");
        assert_eq!(app.gateway.refund_calls(), 0);
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn refunds_are_in_the_payment_currency_and_validated(db: &TestDatabase) {
        let app = spawn_app(db).await;
        let payment = app.charge(charge_request(TOK_VISA, 1000)).await.unwrap();
        let euros = pb::RefundRequest {
            amount: Some(Money { currency_code: "EUR".into(), amount_minor: 100 }),
            ..refund_request(&payment.payment_id, 100)
        };
        let status = app.refund(euros).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&status), ["amount.currency_code"]);

        let status = app.refund(pb::RefundRequest::default()).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&status), ["payment_id", "amount", "reason", "idempotency_key"]);

        let base = refund_request(&payment.payment_id, 100);
        for (request, field) in [
            (pb::RefundRequest { amount: usd(0), ..base.clone() }, "amount.amount_minor"),
            (pb::RefundRequest { amount: usd(-1), ..base.clone() }, "amount.amount_minor"),
            (pb::RefundRequest { amount: usd(i64::MAX), ..base.clone() }, "amount.amount_minor"),
            (pb::RefundRequest { reason: "x".repeat(501), ..base.clone() }, "reason"),
            (pb::RefundRequest { reason: "   ".into(), ..base.clone() }, "reason"),
            (pb::RefundRequest { idempotency_key: String::new(), ..base.clone() }, "idempotency_key"),
        ] {
            let status = app.refund(request).await.unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument);
            assert_eq!(violated_fields(&status), [field]);
        }
        assert_eq!(app.gateway.refund_calls(), 0);
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn services_and_admins_refund_customers_cannot(db: &TestDatabase) {
        let app = spawn_app(db).await;
        let request = charge_request(TOK_VISA, 1000);
        let payment = app.charge(request.clone()).await.unwrap();
        let mut client = app.client.clone();
        let customer = app.customer_token(&request.user_id);
        let denied = client
            .refund(with_token(refund_request(&payment.payment_id, 100), &customer))
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);

        let by_admin = client
            .refund(with_token(refund_request(&payment.payment_id, 100), &app.admin_token()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(by_admin.payment.unwrap().refunded_amount, usd(100));
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn a_transient_refund_failure_keeps_the_reservation_until_retried(db: &TestDatabase) {
        let gateway = gateway();
        // The charge passes; the first refund call fails.
        let flaky = Arc::new(FlakyProvider::new(gateway.clone()));
        let app = spawn_with(db, gateway.clone(), flaky.clone(), Keys::new(), |_| {}).await;
        let payment = app.charge(charge_request(TOK_VISA, 1000)).await.unwrap();

        let failing = Arc::new(FlakyProvider::new(gateway.clone()).failing_refunds(1));
        app.stop().await.unwrap();
        let app = spawn_with(db, gateway.clone(), failing.clone(), Keys::new(), |_| {}).await;

        let request = refund_request(&payment.payment_id, 800);
        let status = app.refund(request.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(reason(&status), "PROVIDER_UNAVAILABLE");

        // The pending 800 is reserved: a second refund of 300 would exceed 1000.
        let status = app.refund(refund_request(&payment.payment_id, 300)).await.unwrap_err();
        assert_eq!(reason(&status), "REFUND_EXCEEDS_CAPTURED");

        let done = app.refund(request).await.unwrap();
        assert_eq!(done.payment.unwrap().refunded_amount, usd(800));
        let keys = failing.refund_keys.lock().unwrap().clone();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0], keys[1], "the retry used the same provider key");
        assert_eq!(gateway.refunds_made(), 1);
        app.stop().await.unwrap();
    }
}
