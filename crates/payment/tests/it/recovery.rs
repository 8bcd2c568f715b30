//! What happens when things break between recording and answering: a caller
//! that gives up, an answer lost on the way back, a process that dies after
//! the provider charged. Never a second charge; the next retry or the
//! reconciler settles the PENDING row.

use std::sync::Arc;
use std::time::Duration;

use agora_payment::gateway::{TOK_SLOW, TOK_VISA};
use agora_proto::payment::v1 as pb;
use agora_testkit::{Keys, TestDatabase, backend_test, eventually, with_token};
use tonic::Code;

use crate::support::{
    ChargesThenHangs, LosesFirstAnswer, charge_request, gateway, history, refund_request,
    spawn_with, state, usd,
};

backend_test! {
    async fn a_caller_that_times_out_finds_the_charge_on_retry(db: &TestDatabase) {
        let gateway = gateway(); // tok_slow answers after 500 ms
        let app = spawn_with(db, gateway.clone(), gateway.clone(), Keys::new(), |_| {}).await;
        let request = charge_request(TOK_SLOW, 300);
        let mut impatient = with_token(request.clone(), &app.service_token());
        impatient.set_timeout(Duration::from_millis(100));
        let status = app.client.clone().charge(impatient).await.unwrap_err();
        // The shared stack answers DEADLINE_EXCEEDED; tonic's own server
        // timeout, outside it, may fire a moment earlier with CANCELLED.
        assert!(
            matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
            "{status:?}"
        );
        assert_eq!(gateway.captures(), 0, "the caller gave up before the gateway answered");

        // The attempt carried on without its caller; the retry joins it.
        let payment = app.charge(request).await.unwrap();
        assert_eq!(state(&payment), pb::PaymentState::Captured);
        assert_eq!((gateway.charge_calls(), gateway.captures()), (1, 1));
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn a_lost_provider_answer_is_recovered_without_charging_again(db: &TestDatabase) {
        let gateway = gateway();
        let provider = Arc::new(LosesFirstAnswer::new(gateway.clone()));
        let app = spawn_with(db, gateway.clone(), provider, Keys::new(), |_| {}).await;
        let request = charge_request(TOK_VISA, 5000);
        // The gateway charged, but its answer never arrived.
        let status = app.charge(request.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(gateway.captures(), 1);

        let payment = app.charge(request).await.unwrap();
        assert_eq!(state(&payment), pb::PaymentState::Captured);
        assert_eq!((gateway.charge_calls(), gateway.captures()), (2, 1), "asked twice, charged once");

        // The same for a refund.
        let refund = refund_request(&payment.payment_id, 1000);
        let status = app.refund(refund.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        let done = app.refund(refund).await.unwrap();
        assert_eq!(done.payment.unwrap().refunded_amount, usd(1000));
        assert_eq!((gateway.refund_calls(), gateway.refunds_made()), (2, 1));
        assert_eq!(gateway.refunded_against(&payment.provider_reference), Some(1000));
        app.stop().await.unwrap();
    }
}

/// Starts a charge against a provider that charges and then hangs, crashes
/// the service once the gateway has taken the money, and returns the request.
async fn charge_then_crash(
    db: &TestDatabase,
    gateway: &Arc<agora_payment::TestGateway>,
) -> pb::ChargeRequest {
    let provider = Arc::new(ChargesThenHangs {
        gateway: gateway.clone(),
    });
    let app = spawn_with(db, gateway.clone(), provider, Keys::new(), |config| {
        config.provider_timeout = Duration::from_millis(1000);
    })
    .await;
    let request = charge_request(TOK_VISA, 7700);
    let mut client = app.client.clone();
    let call = with_token(request.clone(), &app.service_token());
    let pending = tokio::spawn(async move { client.charge(call).await });
    eventually("the gateway to charge", Duration::from_secs(5), || {
        let gateway = gateway.clone();
        async move { (gateway.captures() == 1).then_some(()) }
    })
    .await;
    app.crash().await;
    let lost = pending.await.unwrap();
    assert!(lost.is_err(), "the caller never got an answer: {lost:?}");
    request
}

backend_test! {
    async fn after_a_crash_a_retry_completes_the_charge_once(db: &TestDatabase) {
        let gateway = gateway();
        let request = charge_then_crash(db, &gateway).await;

        // A new process over the same database and the same gateway.
        let app = spawn_with(db, gateway.clone(), gateway.clone(), Keys::new(), |config| {
            config.provider_timeout = Duration::from_millis(1000);
        })
        .await;
        let recorded = app.order_payments(&request.order_id).await;
        assert_eq!(state(&recorded[0]), pb::PaymentState::Pending, "recorded before the call");

        // The retry waits out the dead process's lease, then asks the gateway
        // again with the same provider key and gets the first answer.
        let payment = app.charge(request).await.unwrap();
        assert_eq!(state(&payment), pb::PaymentState::Captured);
        assert_eq!(history(&payment), [pb::PaymentState::Pending, pb::PaymentState::Captured]);
        assert_eq!((gateway.charge_calls(), gateway.captures()), (2, 1));
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn after_a_crash_the_reconciler_completes_the_charge_once(db: &TestDatabase) {
        let gateway = gateway();
        let request = charge_then_crash(db, &gateway).await;

        let app = spawn_with(db, gateway.clone(), gateway.clone(), Keys::new(), |config| {
            config.provider_timeout = Duration::from_millis(1000);
            config.reconcile_interval = Duration::from_millis(100);
        })
        .await;
        let (app_ref, order_id) = (&app, request.order_id.as_str());
        eventually("the reconciler to capture", Duration::from_secs(10), move || async move {
            (state(&app_ref.order_payments(order_id).await[0]) == pb::PaymentState::Captured).then_some(())
        })
        .await;
        let captured = app.order_payments(order_id).await.remove(0);
        assert_eq!((gateway.charge_calls(), gateway.captures()), (2, 1));

        // The caller's retry, whenever it comes, gets the recorded capture.
        let payment = app.charge(request).await.unwrap();
        assert_eq!(payment, captured);
        assert_eq!(gateway.charge_calls(), 2);
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn the_reconciler_finishes_refunds_nobody_retried(db: &TestDatabase) {
        let gateway = gateway();
        let provider = Arc::new(LosesFirstAnswer::new(gateway.clone()));
        let app = spawn_with(db, gateway.clone(), provider, Keys::new(), |config| {
            config.reconcile_interval = Duration::from_millis(100);
        })
        .await;
        // The charge's first answer is lost too; the reconciler settles it.
        let request = charge_request(TOK_VISA, 2000);
        assert_eq!(app.charge(request.clone()).await.unwrap_err().code(), Code::Unavailable);
        let (app_ref, order_id) = (&app, request.order_id.as_str());
        eventually("the charge to be captured", Duration::from_secs(10), move || async move {
            (state(&app_ref.order_payments(order_id).await[0]) == pb::PaymentState::Captured).then_some(())
        })
        .await;
        let payment_id = app.order_payments(order_id).await[0].payment_id.clone();

        assert_eq!(app.refund(refund_request(&payment_id, 500)).await.unwrap_err().code(), Code::Unavailable);
        let payment_ref = payment_id.as_str();
        eventually("the refund to complete", Duration::from_secs(10), move || async move {
            let payment = app_ref.get(payment_ref, &app_ref.admin_token()).await.unwrap();
            (payment.refunded_amount == usd(500)).then_some(())
        })
        .await;
        assert_eq!((gateway.captures(), gateway.refunds_made()), (1, 1));
        app.stop().await.unwrap();
    }
}
