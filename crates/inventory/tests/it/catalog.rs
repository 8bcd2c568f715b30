//! CreateProduct, GetProduct and ListProducts: validation, uniqueness, who may
//! call, and keyset pagination.

use agora_proto::inventory::v1 as pb;
use agora_testkit::status::{metadata, reason, violated_fields};
use agora_testkit::{backend_test, with_token};
use tonic::Code;

use crate::support::{money, spawn_app};

backend_test! {
    async fn products_are_created_read_and_unique(db: &TestDatabase) {
        let app = spawn_app(db).await;
        let created = app.product("SKU-MUG", 1250, 0).await;
        assert_eq!(created.sku, "SKU-MUG");
        assert_eq!(created.name, "Product SKU-MUG");
        assert_eq!(created.price, Some(money(1250, "EUR")));
        assert_eq!((created.on_hand, created.reserved, created.available), (0, 0, 0));
        assert!(created.create_time.is_some() && created.update_time.is_some());

        // Anyone reads the catalogue, with or without a token.
        let anonymous = app.get_product("SKU-MUG").await;
        assert_eq!(anonymous, created);
        let as_customer = app
            .client
            .clone()
            .get_product(with_token(
                pb::GetProductRequest { sku: "SKU-MUG".into() },
                &app.customer_token(),
            ))
            .await
            .unwrap()
            .into_inner()
            .product
            .unwrap();
        assert_eq!(as_customer, created);

        // The sku is unique.
        let again = app
            .client
            .clone()
            .create_product(with_token(
                pb::CreateProductRequest {
                    product: Some(pb::Product {
                        sku: "SKU-MUG".into(),
                        name: "Another mug".into(),
                        price: Some(money(99, "USD")),
                        ..Default::default()
                    }),
                },
                &app.admin,
            ))
            .await
            .unwrap_err();
        assert_eq!(again.code(), Code::AlreadyExists);
        assert_eq!(reason(&again), "SKU_TAKEN");
        assert_eq!(metadata(&again, "sku"), "SKU-MUG");
        assert_eq!(app.get_product("SKU-MUG").await.price, Some(money(1250, "EUR")));

        // Unknown and malformed skus.
        let missing = app
            .client
            .clone()
            .get_product(pb::GetProductRequest { sku: "SKU-NONE".into() })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound);
        assert_eq!(reason(&missing), "PRODUCT_NOT_FOUND");
        assert_eq!(metadata(&missing, "sku"), "SKU-NONE");
        let malformed = app
            .client
            .clone()
            .get_product(pb::GetProductRequest { sku: "sku mug".into() })
            .await
            .unwrap_err();
        assert_eq!(malformed.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&malformed), ["sku"]);
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn every_bad_product_field_is_reported_at_once(db: &TestDatabase) {
        let app = spawn_app(db).await;
        let mut client = app.client.clone();
        let create = |product: Option<pb::Product>| {
            with_token(pb::CreateProductRequest { product }, &app.admin)
        };

        let status = client.create_product(create(None)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&status), ["product"]);

        let status = client
            .create_product(create(Some(pb::Product {
                sku: "lower-case".into(),
                name: "   ".into(),
                description: "bell\u{7}".into(),
                price: Some(money(0, "eur")),
                ..Default::default()
            })))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            violated_fields(&status),
            [
                "product.sku",
                "product.name",
                "product.description",
                "product.price.currency_code",
                "product.price.amount_minor",
            ]
        );

        for (price, field) in [
            (None, "product.price"),
            (Some(money(-1, "EUR")), "product.price.amount_minor"),
            (Some(money(1_000_000_000_001, "EUR")), "product.price.amount_minor"),
            (Some(money(100, "XYZ")), "product.price.currency_code"),
            (Some(money(100, "XXX")), "product.price.currency_code"),
        ] {
            let status = client
                .create_product(create(Some(pb::Product {
                    sku: "SKU-OK".into(),
                    name: "Fine".into(),
                    price,
                    ..Default::default()
                })))
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument);
            assert_eq!(violated_fields(&status), [field]);
        }

        // Output-only fields are ignored: a new product has no stock whatever
        // the request says.
        let created = client
            .create_product(create(Some(pb::Product {
                sku: "SKU-OK".into(),
                name: "  Fine  ".into(),
                price: Some(money(100, "JPY")),
                on_hand: 1000,
                reserved: 7,
                available: 993,
                ..Default::default()
            })))
            .await
            .unwrap()
            .into_inner()
            .product
            .unwrap();
        assert_eq!(created.name, "Fine");
        assert_eq!((created.on_hand, created.reserved, created.available), (0, 0, 0));
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn only_admins_manage_the_catalogue(db: &TestDatabase) {
        let app = spawn_app(db).await;
        app.product("SKU-A", 100, 5).await;
        let mut client = app.client.clone();
        let request = || pb::CreateProductRequest {
            product: Some(pb::Product {
                sku: "SKU-B".into(),
                name: "B".into(),
                price: Some(money(100, "EUR")),
                ..Default::default()
            }),
        };
        let anonymous = client.create_product(request()).await.unwrap_err();
        assert_eq!(anonymous.code(), Code::Unauthenticated);
        for token in [app.customer_token(), app.service.clone()] {
            let refused = client
                .create_product(with_token(request(), &token))
                .await
                .unwrap_err();
            assert_eq!(refused.code(), Code::PermissionDenied);
        }
        let adjust = |token: &str| {
            with_token(
                pb::AdjustStockRequest {
                    sku: "SKU-A".into(),
                    delta: 1,
                    reason: "sneaky".into(),
                    request_id: uuid::Uuid::now_v7().to_string(),
                },
                token,
            )
        };
        for token in [app.customer_token(), app.service.clone()] {
            let refused = client.adjust_stock(adjust(&token)).await.unwrap_err();
            assert_eq!(refused.code(), Code::PermissionDenied);
        }
        assert_eq!(app.get_product("SKU-A").await.on_hand, 5, "nothing changed");
        let missing = client.get_product(pb::GetProductRequest { sku: "SKU-B".into() }).await;
        assert_eq!(missing.unwrap_err().code(), Code::NotFound);
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn pages_cover_every_product_once_in_sku_order(db: &TestDatabase) {
        let app = spawn_app(db).await;
        for sku in ["SKU-E", "SKU-A", "SKU-C", "SKU-B", "SKU-D"] {
            app.product(sku, 100, 0).await;
        }
        let mut client = app.client.clone();
        let mut seen = Vec::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            // Public: no token.
            let page = client
                .list_products(pb::ListProductsRequest { page_size: 2, page_token: token.clone() })
                .await
                .unwrap()
                .into_inner();
            pages += 1;
            assert!(page.products.len() <= 2);
            seen.extend(page.products.into_iter().map(|p| p.sku));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(pages, 3);
        assert_eq!(seen, ["SKU-A", "SKU-B", "SKU-C", "SKU-D", "SKU-E"]);

        let all = client
            .list_products(pb::ListProductsRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(all.products.len(), 5);
        assert!(all.next_page_token.is_empty());

        let negative = client
            .list_products(pb::ListProductsRequest { page_size: -1, page_token: String::new() })
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&negative), ["page_size"]);
        let garbage = client
            .list_products(pb::ListProductsRequest { page_size: 1, page_token: "garbage!".into() })
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&garbage), ["page_token"]);
        app.stop().await.unwrap();
    }
}
