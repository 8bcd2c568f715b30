//! Revoked tokens at the user service: deleting or disabling an account,
//! and RevokeTokens, refuse its earlier tokens at once (UNAUTHENTICATED,
//! TOKEN_REVOKED); a token signed afterwards works, even in the same second;
//! only admins disable, only services list revocations.

use agora_interceptors::auth::Role;
use agora_proto::user::v1 as pb;
use agora_testkit::status::assert_reason;
use agora_testkit::{PASSWORD, backend_test, with_token};
use prost_types::FieldMask;
use tonic::Code;

use crate::support::{TestApp, spawn_app};

async fn sign_in(app: &TestApp, email: &str) -> Result<String, tonic::Status> {
    app.client
        .clone()
        .authenticate(pb::AuthenticateRequest {
            email: email.into(),
            password: PASSWORD.into(),
        })
        .await
        .map(|r| r.into_inner().access_token)
}

async fn set_disabled(
    app: &TestApp,
    user_id: &str,
    disabled: bool,
    token: &str,
) -> Result<pb::User, tonic::Status> {
    app.client
        .clone()
        .update_user(with_token(
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    user_id: user_id.into(),
                    disabled,
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["disabled".into()],
                }),
                password: String::new(),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().user.unwrap())
}

async fn revoke(app: &TestApp, user_id: &str, token: &str) -> Result<(), tonic::Status> {
    app.client
        .clone()
        .revoke_tokens(with_token(
            pb::RevokeTokensRequest {
                user_id: user_id.into(),
            },
            token,
        ))
        .await
        .map(|_| ())
}

backend_test! {
    async fn deleting_oneself_revokes_the_token(db: &TestDatabase) {
        let app = spawn_app(db).await;
        let (ada, ada_token) = app.customer("ada@example.com").await;
        let (bob, bob_token) = app.customer("bob@example.com").await;
        app.client
            .clone()
            .delete_user(with_token(pb::DeleteUserRequest { user_id: ada.user_id.clone() }, &ada_token))
            .await
            .unwrap();

        // The same token, once more: refused as revoked, not "not found".
        let refused = app.get(&ada.user_id, &ada_token).await.unwrap_err();
        assert_reason(&refused, Code::Unauthenticated, "TOKEN_REVOKED");
        let refused = revoke(&app, &ada.user_id, &ada_token).await.unwrap_err();
        assert_reason(&refused, Code::Unauthenticated, "TOKEN_REVOKED");
        // Another account's token is untouched.
        assert_eq!(app.get(&bob.user_id, &bob_token).await.unwrap().user_id, bob.user_id);
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn a_disabled_account_is_refused_until_enabled_again(db: &TestDatabase) {
        let app = spawn_app(db).await;
        let admin = app.admin_token();
        let (ada, ada_token) = app.customer("ada@example.com").await;

        let disabled = set_disabled(&app, &ada.user_id, true, &admin).await.unwrap();
        assert!(disabled.disabled);
        let refused = app.get(&ada.user_id, &ada_token).await.unwrap_err();
        assert_reason(&refused, Code::Unauthenticated, "TOKEN_REVOKED");
        let refused = sign_in(&app, "ada@example.com").await.unwrap_err();
        assert_reason(&refused, Code::PermissionDenied, "ACCOUNT_DISABLED");
        // A wrong password still says nothing about the account.
        let wrong = app
            .client
            .clone()
            .authenticate(pb::AuthenticateRequest {
                email: "ada@example.com".into(),
                password: "not the password at all".into(),
            })
            .await
            .unwrap_err();
        assert_reason(&wrong, Code::Unauthenticated, "INVALID_CREDENTIALS");
        assert!(app.get(&ada.user_id, &admin).await.unwrap().disabled);

        // Enabled again: signing in at once (likely the revocation's own
        // second) gives a token that works; the old one stays revoked.
        let enabled = set_disabled(&app, &ada.user_id, false, &admin).await.unwrap();
        assert!(!enabled.disabled);
        let fresh = sign_in(&app, "ada@example.com").await.unwrap();
        assert_eq!(app.get(&ada.user_id, &fresh).await.unwrap().user_id, ada.user_id);
        let refused = app.get(&ada.user_id, &ada_token).await.unwrap_err();
        assert_reason(&refused, Code::Unauthenticated, "TOKEN_REVOKED");
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn revoke_tokens_refuses_earlier_tokens_only(db: &TestDatabase) {
        let app = spawn_app(db).await;
        let (ada, ada_token) = app.customer("ada@example.com").await;
        let (bob, bob_token) = app.customer("bob@example.com").await;

        // "Sign out everywhere", then sign in again in the same breath.
        revoke(&app, &ada.user_id, &ada_token).await.unwrap();
        let refused = app.get(&ada.user_id, &ada_token).await.unwrap_err();
        assert_reason(&refused, Code::Unauthenticated, "TOKEN_REVOKED");
        let fresh = sign_in(&app, "ada@example.com").await.unwrap();
        assert_eq!(app.get(&ada.user_id, &fresh).await.unwrap().user_id, ada.user_id);

        // An admin revokes someone else's.
        revoke(&app, &bob.user_id, &app.admin_token()).await.unwrap();
        let refused = app.get(&bob.user_id, &bob_token).await.unwrap_err();
        assert_reason(&refused, Code::Unauthenticated, "TOKEN_REVOKED");
        let fresh = sign_in(&app, "bob@example.com").await.unwrap();
        assert_eq!(app.get(&bob.user_id, &fresh).await.unwrap().user_id, bob.user_id);

        let missing = revoke(&app, &uuid::Uuid::now_v7().to_string(), &app.admin_token()).await.unwrap_err();
        assert_reason(&missing, Code::NotFound, "USER_NOT_FOUND");
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn only_admins_disable_and_only_services_list_revocations(db: &TestDatabase) {
        let app = spawn_app(db).await;
        let (ada, ada_token) = app.customer("ada@example.com").await;
        let (bob, bob_token) = app.customer("bob@example.com").await;

        let denied = revoke(&app, &bob.user_id, &ada_token).await.unwrap_err();
        assert_reason(&denied, Code::PermissionDenied, "PERMISSION_DENIED");
        let denied = set_disabled(&app, &bob.user_id, true, &ada_token).await.unwrap_err();
        assert_reason(&denied, Code::PermissionDenied, "PERMISSION_DENIED");
        // Nor re-enable or disable themselves.
        let denied = set_disabled(&app, &ada.user_id, false, &ada_token).await.unwrap_err();
        assert_reason(&denied, Code::PermissionDenied, "PERMISSION_DENIED");
        assert_eq!(app.get(&bob.user_id, &bob_token).await.unwrap().user_id, bob.user_id);

        for token in [ada_token.clone(), app.admin_token()] {
            let denied = app
                .client
                .clone()
                .list_revocations(with_token(pb::ListRevocationsRequest::default(), &token))
                .await
                .unwrap_err();
            assert_reason(&denied, Code::PermissionDenied, "PERMISSION_DENIED");
        }

        // A service reads what was revoked, and why.
        set_disabled(&app, &bob.user_id, true, &app.admin_token()).await.unwrap();
        revoke(&app, &ada.user_id, &ada_token).await.unwrap();
        let service = app.keys.token("agora-payment", Role::Service);
        let listed = app
            .client
            .clone()
            .list_revocations(with_token(pb::ListRevocationsRequest::default(), &service))
            .await
            .unwrap()
            .into_inner();
        let mut got: Vec<_> = listed.revocations.iter().map(|r| (r.subject.clone(), r.reason.clone())).collect();
        got.sort();
        let mut want = vec![(ada.user_id.clone(), "revoked".to_owned()), (bob.user_id.clone(), "disabled".to_owned())];
        want.sort();
        assert_eq!(got, want);
        assert!(listed.horizon_time.is_some() && listed.read_time.is_some());

        // `since` after both: nothing.
        let later = prost_types::Timestamp::from(std::time::SystemTime::now() + std::time::Duration::from_secs(60));
        let listed = app
            .client
            .clone()
            .list_revocations(with_token(
                pb::ListRevocationsRequest { since: Some(later), ..Default::default() },
                &service,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(listed.revocations.is_empty(), "{listed:?}");
        app.stop().await.unwrap();
    }
}
