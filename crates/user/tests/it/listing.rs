//! ListUsers: keyset pagination with opaque tokens.

use std::collections::HashSet;

use agora_proto::user::v1 as pb;
use agora_testkit::status::violated_fields;
use agora_testkit::{backend_test, with_token};
use tonic::Code;

use crate::support::spawn_app;

backend_test! {
    async fn pages_cover_every_user_once_in_creation_order(db: &TestDatabase) {
        let app = spawn_app(db).await;
        for i in 0..5 {
            app.customer(&format!("page{i}@example.com")).await;
        }
        let admin = app.admin_token();
        let mut client = app.client.clone();
        let mut seen = Vec::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            let page = client
                .list_users(with_token(
                    pb::ListUsersRequest { page_size: 2, page_token: token.clone() },
                    &admin,
                ))
                .await
                .unwrap()
                .into_inner();
            pages += 1;
            assert!(page.users.len() <= 2);
            seen.extend(page.users.into_iter().map(|u| u.email));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(pages, 3);
        let expected: Vec<String> = (0..5).map(|i| format!("page{i}@example.com")).collect();
        assert_eq!(seen, expected);
        assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 5);

        // page_size 0 means the default, which holds all five.
        let all = client
            .list_users(with_token(pb::ListUsersRequest::default(), &admin))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(all.users.len(), 5);
        assert!(all.next_page_token.is_empty());
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn bad_page_arguments_are_rejected(db: &TestDatabase) {
        let app = spawn_app(db).await;
        let admin = app.admin_token();
        let mut client = app.client.clone();
        let negative = client
            .list_users(with_token(pb::ListUsersRequest { page_size: -1, page_token: String::new() }, &admin))
            .await
            .unwrap_err();
        assert_eq!(negative.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&negative), ["page_size"]);

        let garbage = client
            .list_users(with_token(pb::ListUsersRequest { page_size: 1, page_token: "garbage!".into() }, &admin))
            .await
            .unwrap_err();
        assert_eq!(garbage.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&garbage), ["page_token"]);

        // A huge page size is clamped, not refused.
        let huge = client
            .list_users(with_token(pb::ListUsersRequest { page_size: i32::MAX, page_token: String::new() }, &admin))
            .await;
        assert!(huge.is_ok());
        app.stop().await.unwrap();
    }
}
