//! Following the user service's revocation list from another service
//! (payment here, as every service does through `ServiceHost`): a revoked
//! token is refused within a few polls; when the user service goes away the
//! last list is kept (revoked tokens stay refused, valid ones keep working:
//! fail open only for revocations not yet seen) and the list's age grows on
//! /metrics.

use std::time::Duration;

use agora_interceptors::config::PreboundListener;
use agora_proto::payment::v1 as pay;
use agora_proto::payment::v1::payment_service_client::PaymentServiceClient;
use agora_proto::user::v1 as user_pb;
use agora_proto::user::v1::user_service_client::UserServiceClient;
use agora_testkit::services::{self, Keys};
use agora_testkit::status::{assert_reason, reason};
use agora_testkit::suite::{follow_revocations, reliable_provider};
use agora_testkit::{
    TestDatabase, backend_test, eventually, http_get, sample, sign_up, with_token,
};
use tonic::Code;

async fn list_payments(
    payment: &agora_testkit::TestServer,
    token: &str,
) -> Result<usize, tonic::Status> {
    PaymentServiceClient::new(payment.channel())
        .list_payments(with_token(pay::ListPaymentsRequest::default(), token))
        .await
        .map(|r| r.into_inner().payments.len())
}

backend_test! {
    async fn the_last_list_is_kept_while_the_user_service_is_down(db: &TestDatabase) {
        let keys = Keys::new();
        let user_db = TestDatabase::like(db).await;
        let user = services::start_user(&user_db, &keys, |_| {}).await;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let metrics = listener.local_addr().unwrap();
        let payment = services::start_payment(db, &keys, reliable_provider(), |config| {
            config.serve.rate_limit_per_second = 0;
            config.serve.metrics_prebound = PreboundListener::new(listener);
            follow_revocations(&mut config.serve, user.addr());
        })
        .await;
        let (ada, ada_token) = sign_up(user.channel(), "ada@example.com").await;
        let (_, bob_token) = sign_up(user.channel(), "bob@example.com").await;
        assert_eq!(list_payments(&payment, &ada_token).await.unwrap(), 0);

        UserServiceClient::new(user.channel())
            .revoke_tokens(with_token(user_pb::RevokeTokensRequest { user_id: ada.user_id.clone() }, &ada_token))
            .await
            .unwrap();
        eventually("payment to refuse the revoked token", Duration::from_secs(15), || async {
            let refused = list_payments(&payment, &ada_token).await.err()?;
            (reason(&refused) == "TOKEN_REVOKED").then_some(())
        })
        .await;
        let (_, _, text) = http_get(metrics, "/metrics").await;
        assert!(sample(&text, "agora_auth_revoked_subjects", "") >= Some(1.0), "{text}");

        // The user service goes away: nothing is forgotten, nothing valid
        // is refused, and the list's age says how stale it is.
        user.stop().await;
        let refused = list_payments(&payment, &ada_token).await.unwrap_err();
        assert_reason(&refused, Code::Unauthenticated, "TOKEN_REVOKED");
        assert_eq!(list_payments(&payment, &bob_token).await.unwrap(), 0);
        eventually("the list's age to grow", Duration::from_secs(15), || async {
            let (_, _, text) = http_get(metrics, "/metrics").await;
            let age = sample(&text, "agora_auth_revocations_age_seconds", "")?;
            let failures = sample(&text, "agora_auth_revocation_poll_failures_total", "")?;
            (age >= 1.0 && failures >= 1.0).then_some(())
        })
        .await;
        assert_eq!(list_payments(&payment, &bob_token).await.unwrap(), 0);
        payment.stop().await;
        user_db.cleanup().await;
    }
}
