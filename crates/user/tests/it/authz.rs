//! Who may do what: customers only to themselves, admins to everyone, and no
//! token (or a bad one) gets nowhere.

use std::time::Duration;

use agora_interceptors::auth::{Role, SigningKey, TokenIssuer, TokenSettings};
use agora_proto::user::v1 as pb;
use agora_testkit::{backend_test, with_token};
use prost_types::FieldMask;
use tonic::Code;

use crate::support::spawn_app;

backend_test! {
    async fn customers_reach_only_themselves(db: &TestDatabase) {
        let app = spawn_app(db).await;
        let (alice, alice_token) = app.customer("alice@example.com").await;
        let (bob, _) = app.customer("bob@example.com").await;
        let mut client = app.client.clone();

        let denied = app.get(&bob.user_id, &alice_token).await.unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);

        let denied = client
            .delete_user(with_token(pb::DeleteUserRequest { user_id: bob.user_id.clone() }, &alice_token))
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);

        let denied = client
            .list_users(with_token(pb::ListUsersRequest::default(), &alice_token))
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);

        // A customer cannot make themselves an admin.
        let denied = client
            .update_user(with_token(
                pb::UpdateUserRequest {
                    user: Some(pb::User {
                        user_id: alice.user_id.clone(),
                        role: pb::Role::Admin as i32,
                        ..Default::default()
                    }),
                    update_mask: Some(FieldMask { paths: vec!["role".into()] }),
                    password: String::new(),
                },
                &alice_token,
            ))
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);
        assert_eq!(app.get(&alice.user_id, &alice_token).await.unwrap().role, pb::Role::Customer as i32);

        // Nor change their own email: the contract leaves that to admins.
        let denied = client
            .update_user(with_token(
                pb::UpdateUserRequest {
                    user: Some(pb::User {
                        user_id: alice.user_id.clone(),
                        email: "mallory@example.com".into(),
                        ..Default::default()
                    }),
                    update_mask: Some(FieldMask { paths: vec!["email".into()] }),
                    password: String::new(),
                },
                &alice_token,
            ))
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);
        assert_eq!(app.get(&alice.user_id, &alice_token).await.unwrap().email, "alice@example.com");

        // An admin reads, promotes and lists anyone.
        let admin = app.admin_token();
        assert_eq!(app.get(&bob.user_id, &admin).await.unwrap().user_id, bob.user_id);
        let promoted = client
            .update_user(with_token(
                pb::UpdateUserRequest {
                    user: Some(pb::User {
                        user_id: bob.user_id.clone(),
                        role: pb::Role::Admin as i32,
                        ..Default::default()
                    }),
                    update_mask: Some(FieldMask { paths: vec!["role".into()] }),
                    password: String::new(),
                },
                &admin,
            ))
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap();
        assert_eq!(promoted.role, pb::Role::Admin as i32);
        let listed = client
            .list_users(with_token(pb::ListUsersRequest::default(), &admin))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.users.len(), 2);
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn calls_without_a_valid_token_are_unauthenticated(db: &TestDatabase) {
        let app = spawn_app(db).await;
        let (alice, _) = app.customer("carol@example.com").await;
        let mut client = app.client.clone();

        let missing = client
            .get_user(pb::GetUserRequest { user_id: alice.user_id.clone() })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::Unauthenticated);

        let garbage = app.get(&alice.user_id, "not.a.token").await.unwrap_err();
        assert_eq!(garbage.code(), Code::Unauthenticated);

        // Signed by a key the service does not trust.
        let stranger = SigningKey::generate("test-key").unwrap();
        let forged = TokenIssuer::new(&stranger, TokenSettings::default())
            .unwrap()
            .issue(&alice.user_id, Role::Admin, Duration::from_secs(60))
            .unwrap()
            .token;
        let status = app.get(&alice.user_id, &forged).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);

        // Public methods still work with a stale token attached.
        let created = client
            .create_user(with_token(
                pb::CreateUserRequest {
                    email: "dave@example.com".into(),
                    display_name: "Dave".into(),
                    password: crate::support::PASSWORD.into(),
                },
                "stale.token.here",
            ))
            .await;
        assert!(created.is_ok(), "{created:?}");
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn malformed_ids_are_invalid_arguments(db: &TestDatabase) {
        let app = spawn_app(db).await;
        let admin = app.admin_token();
        for bad in ["", "123", "0b9a2f5e-3c57-4a4e-9d8e-2f0c1c9b4a11"] {
            let status = app.get(bad, &admin).await.unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}");
            assert_eq!(agora_testkit::status::violated_fields(&status), ["user_id"]);
        }
        app.stop().await.unwrap();
    }
}
