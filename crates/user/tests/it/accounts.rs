//! Registration, reading, updating, deleting and signing in.

use agora_proto::user::v1 as pb;
use agora_testkit::status::{reason, violated_fields};
use agora_testkit::{backend_test, with_token};
use prost_types::FieldMask;
use tonic::Code;

use crate::support::{PASSWORD, spawn_app};

backend_test! {
    async fn full_account_lifecycle(db: &TestDatabase) {
        let app = spawn_app(db).await;
        let (user, token) = app.customer("Ada@Example.com").await;
        assert_eq!(user.email, "Ada@Example.com");
        assert_eq!(user.role, pb::Role::Customer as i32);
        assert!(uuid::Uuid::parse_str(&user.user_id).unwrap().get_version_num() == 7);
        assert!(user.create_time.is_some());

        // The customer reads themselves.
        let read = app.get(&user.user_id, &token).await.unwrap();
        assert_eq!(read, user);

        // They rename themselves and change their password.
        let mut client = app.client.clone();
        let updated = client
            .update_user(with_token(
                pb::UpdateUserRequest {
                    user: Some(pb::User {
                        user_id: user.user_id.clone(),
                        display_name: "Ada L.".into(),
                        ..Default::default()
                    }),
                    update_mask: Some(FieldMask {
                        paths: vec!["display_name".into(), "password".into()],
                    }),
                    password: "a whole new passphrase".into(),
                },
                &token,
            ))
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap();
        assert_eq!(updated.display_name, "Ada L.");
        assert_eq!(updated.email, "Ada@Example.com", "fields outside the mask stay");

        // The old password no longer works; the new one does, in any email case.
        let old = client
            .authenticate(pb::AuthenticateRequest {
                email: "ada@example.com".into(),
                password: PASSWORD.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(old.code(), Code::Unauthenticated);
        let signed_in = client
            .authenticate(pb::AuthenticateRequest {
                email: "ADA@EXAMPLE.COM".into(),
                password: "a whole new passphrase".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(signed_in.user.unwrap().user_id, user.user_id);
        assert!(signed_in.expire_time.is_some());

        // They delete themselves; the account is gone.
        client
            .delete_user(with_token(
                pb::DeleteUserRequest {
                    user_id: user.user_id.clone(),
                },
                &token,
            ))
            .await
            .unwrap();
        let gone = app.get(&user.user_id, &app.admin_token()).await.unwrap_err();
        assert_eq!(gone.code(), Code::NotFound);
        assert_eq!(reason(&gone), "USER_NOT_FOUND");
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn bad_registration_lists_every_bad_field_and_stores_nothing(db: &TestDatabase) {
        let app = spawn_app(db).await;
        let mut client = app.client.clone();
        let status = client
            .create_user(pb::CreateUserRequest {
                email: "not-an-email".into(),
                display_name: "   ".into(),
                password: "short".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        let mut fields = violated_fields(&status);
        fields.sort();
        assert_eq!(fields, ["display_name", "email", "password"]);
        assert_eq!(reason(&status), "INVALID_ARGUMENT");

        let listed = client
            .list_users(with_token(pb::ListUsersRequest::default(), &app.admin_token()))
            .await
            .unwrap()
            .into_inner();
        assert!(listed.users.is_empty(), "nothing was stored");
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn emails_are_unique_case_insensitively_even_under_races(db: &TestDatabase) {
        let app = spawn_app(db).await;
        app.customer("grace@example.com").await;
        let status = app
            .client
            .clone()
            .create_user(pb::CreateUserRequest {
                email: "GRACE@example.com".into(),
                display_name: "Impostor".into(),
                password: PASSWORD.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::AlreadyExists);
        assert_eq!(reason(&status), "EMAIL_TAKEN");

        // Eight registrations of one new address at once: exactly one wins.
        let attempts = (0..8).map(|i| {
            let mut client = app.client.clone();
            async move {
                client
                    .create_user(pb::CreateUserRequest {
                        email: if i % 2 == 0 { "race@example.com" } else { "RACE@example.com" }.into(),
                        display_name: format!("Racer {i}"),
                        password: PASSWORD.into(),
                    })
                    .await
            }
        });
        let results = futures::future::join_all(attempts).await;
        let won = results.iter().filter(|r| r.is_ok()).count();
        let lost = results
            .iter()
            .filter(|r| matches!(r, Err(s) if s.code() == Code::AlreadyExists))
            .count();
        assert_eq!((won, lost), (1, 7), "{results:?}");
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn sign_in_failures_do_not_reveal_which_part_was_wrong(db: &TestDatabase) {
        let app = spawn_app(db).await;
        app.customer("linus@example.com").await;
        let mut client = app.client.clone();
        let wrong_password = client
            .authenticate(pb::AuthenticateRequest {
                email: "linus@example.com".into(),
                password: "not the password at all".into(),
            })
            .await
            .unwrap_err();
        let unknown_email = client
            .authenticate(pb::AuthenticateRequest {
                email: "nobody@example.com".into(),
                password: PASSWORD.into(),
            })
            .await
            .unwrap_err();
        for status in [&wrong_password, &unknown_email] {
            assert_eq!(status.code(), Code::Unauthenticated);
            assert_eq!(reason(status), "INVALID_CREDENTIALS");
            assert_eq!(status.message(), "email or password is wrong");
        }
        let empty = client
            .authenticate(pb::AuthenticateRequest::default())
            .await
            .unwrap_err();
        assert_eq!(empty.code(), Code::InvalidArgument);
        let mut fields = violated_fields(&empty);
        fields.sort();
        assert_eq!(fields, ["email", "password"]);
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn update_mask_is_required_and_checked(db: &TestDatabase) {
        let app = spawn_app(db).await;
        let (user, token) = app.customer("mask@example.com").await;
        // Only an admin changes an email (see authz.rs for a customer's try).
        let admin = app.admin_token();
        let mut client = app.client.clone();
        let update = |paths: Vec<&str>, email: &str| {
            with_token(
                pb::UpdateUserRequest {
                    user: Some(pb::User {
                        user_id: user.user_id.clone(),
                        email: email.into(),
                        ..Default::default()
                    }),
                    update_mask: Some(FieldMask {
                        paths: paths.into_iter().map(String::from).collect(),
                    }),
                    password: String::new(),
                },
                &admin,
            )
        };
        let empty = client.update_user(update(vec![], "")).await.unwrap_err();
        assert_eq!(empty.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&empty), ["update_mask"]);

        let unknown = client.update_user(update(vec!["user_id"], "")).await.unwrap_err();
        assert_eq!(violated_fields(&unknown), ["update_mask"]);

        let bad_email = client.update_user(update(vec!["email"], "nope")).await.unwrap_err();
        assert_eq!(violated_fields(&bad_email), ["user.email"]);

        // Taking another account's email is ALREADY_EXISTS, and changes nothing.
        app.customer("taken@example.com").await;
        let taken = client
            .update_user(update(vec!["email"], "Taken@Example.com"))
            .await
            .unwrap_err();
        assert_eq!(taken.code(), Code::AlreadyExists);
        assert_eq!(app.get(&user.user_id, &token).await.unwrap().email, "mask@example.com");

        let moved = client
            .update_user(update(vec!["email"], "moved@example.com"))
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap();
        assert_eq!(moved.email, "moved@example.com");
        app.stop().await.unwrap();
    }
}
