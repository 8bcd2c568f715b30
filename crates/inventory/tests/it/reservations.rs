//! ReserveStock, CommitReservation, ReleaseReservation and GetReservation:
//! prices, all-or-nothing, idempotency, the state machine and who may call.

use std::time::{Duration, SystemTime};

use agora_proto::inventory::v1 as pb;
use agora_testkit::status::{metadata, precondition_violations, reason, violated_fields};
use agora_testkit::{backend_test, with_token};
use tonic::Code;

use crate::support::{money, order_id, spawn_app};

const HELD: i32 = pb::ReservationState::Held as i32;
const COMMITTED: i32 = pb::ReservationState::Committed as i32;
const RELEASED: i32 = pb::ReservationState::Released as i32;

/// (on_hand, reserved, available) of a product.
async fn stock(app: &crate::support::TestApp, sku: &str) -> (i64, i64, i64) {
    let product = app.get_product(sku).await;
    (product.on_hand, product.reserved, product.available)
}

backend_test! {
    async fn reservations_capture_catalogue_prices_and_total(db: &TestDatabase) {
        let app = spawn_app(db).await;
        app.product("SKU-A", 1200, 10).await;
        app.product("SKU-B", 2500, 5).await;
        let order = order_id();

        // The caller's unit_price is output only: a price sent is ignored.
        let reservation = app
            .client
            .clone()
            .reserve_stock(with_token(
                pb::ReserveStockRequest {
                    order_id: order.clone(),
                    lines: vec![
                        pb::ReservationLine {
                            sku: "SKU-B".into(),
                            quantity: 2,
                            unit_price: Some(money(1, "EUR")),
                        },
                        pb::ReservationLine { sku: "SKU-A".into(), quantity: 3, unit_price: None },
                    ],
                    ttl: None,
                },
                &app.service,
            ))
            .await
            .unwrap()
            .into_inner()
            .reservation
            .unwrap();
        assert_eq!(reservation.order_id, order);
        assert_eq!(reservation.state, HELD);
        let lines: Vec<_> = reservation
            .lines
            .iter()
            .map(|l| (l.sku.as_str(), l.quantity, l.unit_price.clone().unwrap()))
            .collect();
        assert_eq!(
            lines,
            [("SKU-A", 3, money(1200, "EUR")), ("SKU-B", 2, money(2500, "EUR"))]
        );
        assert_eq!(reservation.total, Some(money(3 * 1200 + 2 * 2500, "EUR")));
        // The default ttl is 15 minutes.
        let created = reservation.create_time.unwrap();
        let expires = reservation.expire_time.unwrap();
        assert_eq!(expires.seconds - created.seconds, 15 * 60);

        assert_eq!(stock(&app, "SKU-A").await, (10, 3, 7));
        assert_eq!(stock(&app, "SKU-B").await, (5, 2, 3));
        assert_eq!(app.get_reservation(&order).await.unwrap(), reservation);

        // Later price changes do not touch the captured prices. (The API has
        // no price update yet, so the catalogue is changed underneath.)
        let database = app.database().await;
        sqlx::query("UPDATE products SET price_minor = 9999 WHERE sku = 'SKU-A'")
            .execute(database.pool())
            .await
            .unwrap();
        database.close().await;
        let later = app.get_reservation(&order).await.unwrap();
        assert_eq!(later.lines[0].unit_price, Some(money(1200, "EUR")));
        assert_eq!(later.total, reservation.total);
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn reserve_is_idempotent_per_order(db: &TestDatabase) {
        let app = spawn_app(db).await;
        app.product("SKU-A", 100, 10).await;
        app.product("SKU-B", 200, 10).await;
        let order = order_id();
        let first = app.reserve(&order, &[("SKU-A", 2), ("SKU-B", 1)]).await.unwrap();

        // Same lines, any order, any ttl: the existing reservation, nothing more held.
        let again = app
            .reserve_for(&order, &[("SKU-B", 1), ("SKU-A", 2)], Some(Duration::from_secs(60)))
            .await
            .unwrap();
        assert_eq!(again, first);
        assert_eq!(stock(&app, "SKU-A").await, (10, 2, 8));
        assert_eq!(stock(&app, "SKU-B").await, (10, 1, 9));

        // Different lines for the same order: refused, nothing changes.
        for lines in [
            vec![("SKU-A", 3), ("SKU-B", 1)],
            vec![("SKU-A", 2)],
            vec![("SKU-A", 2), ("SKU-B", 1), ("SKU-C", 1)],
        ] {
            let mismatch = app.reserve(&order, &lines).await.unwrap_err();
            assert_eq!(mismatch.code(), Code::FailedPrecondition, "{lines:?}");
            assert_eq!(reason(&mismatch), "RESERVATION_MISMATCH");
            assert_eq!(metadata(&mismatch, "order_id"), order);
        }
        assert_eq!(stock(&app, "SKU-A").await, (10, 2, 8));

        // A repeat after commit returns the reservation as it is now.
        app.commit(&order).await.unwrap();
        let after_commit = app.reserve(&order, &[("SKU-A", 2), ("SKU-B", 1)]).await.unwrap();
        assert_eq!(after_commit.state, COMMITTED);
        assert_eq!(after_commit.total, first.total);
        assert_eq!(stock(&app, "SKU-A").await, (8, 0, 8));
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn reservations_are_all_or_nothing_and_name_every_problem(db: &TestDatabase) {
        let app = spawn_app(db).await;
        app.product("SKU-A", 100, 10).await;
        app.product("SKU-B", 100, 1).await;
        app.product("SKU-D", 100, 0).await;
        app.product_in("SKU-USD", 100, "USD", 10).await;
        let order = order_id();

        // Two short skus: both named, and A's units (which were available)
        // are not held either.
        let short = app
            .reserve(&order, &[("SKU-A", 5), ("SKU-D", 3), ("SKU-B", 2)])
            .await
            .unwrap_err();
        assert_eq!(short.code(), Code::FailedPrecondition);
        assert_eq!(reason(&short), "INSUFFICIENT_STOCK");
        assert_eq!(
            precondition_violations(&short),
            [
                ("STOCK".to_owned(), "SKU-B".to_owned(), "2 units requested, 1 available".to_owned()),
                ("STOCK".to_owned(), "SKU-D".to_owned(), "3 units requested, 0 available".to_owned()),
            ]
        );
        assert_eq!(stock(&app, "SKU-A").await, (10, 0, 10));
        assert_eq!(stock(&app, "SKU-B").await, (1, 0, 1));

        // Unknown skus: NOT_FOUND naming each of them.
        let unknown = app
            .reserve(&order, &[("SKU-A", 1), ("SKU-GHOST", 1), ("SKU-NADA", 1)])
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), Code::NotFound);
        assert_eq!(reason(&unknown), "PRODUCT_NOT_FOUND");
        assert_eq!(metadata(&unknown, "sku"), "SKU-GHOST,SKU-NADA");
        assert!(unknown.message().contains("SKU-GHOST") && unknown.message().contains("SKU-NADA"));
        assert_eq!(stock(&app, "SKU-A").await, (10, 0, 10));

        // Mixed currencies cannot make one total.
        let mixed = app.reserve(&order, &[("SKU-A", 1), ("SKU-USD", 1)]).await.unwrap_err();
        assert_eq!(mixed.code(), Code::FailedPrecondition);
        assert_eq!(reason(&mixed), "CURRENCY_MISMATCH");
        assert_eq!(stock(&app, "SKU-A").await, (10, 0, 10));
        assert_eq!(stock(&app, "SKU-USD").await, (10, 0, 10));

        // Nothing was left behind for the order: it can still reserve.
        let missing = app.get_reservation(&order).await.unwrap_err();
        assert_eq!(missing.code(), Code::NotFound);
        let ok = app.reserve(&order, &[("SKU-A", 5), ("SKU-B", 1)]).await.unwrap();
        assert_eq!(ok.state, HELD);
        assert_eq!(stock(&app, "SKU-B").await, (1, 1, 0));
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn commit_sells_and_release_gives_back_exactly_once(db: &TestDatabase) {
        let app = spawn_app(db).await;
        app.product("SKU-A", 100, 10).await;

        // HELD → COMMITTED: on_hand and reserved both drop.
        let sold = order_id();
        app.reserve(&sold, &[("SKU-A", 4)]).await.unwrap();
        assert_eq!(stock(&app, "SKU-A").await, (10, 4, 6));
        let committed = app.commit(&sold).await.unwrap();
        assert_eq!(committed.state, COMMITTED);
        assert_eq!(stock(&app, "SKU-A").await, (6, 0, 6));
        // Idempotent.
        assert_eq!(app.commit(&sold).await.unwrap(), committed);
        assert_eq!(stock(&app, "SKU-A").await, (6, 0, 6));

        // COMMITTED → RELEASED restocks the sold units, once.
        let restocked = app.release(&sold).await.unwrap();
        assert_eq!(restocked.state, RELEASED);
        assert_eq!(stock(&app, "SKU-A").await, (10, 0, 10));
        assert_eq!(app.release(&sold).await.unwrap(), restocked);
        assert_eq!(stock(&app, "SKU-A").await, (10, 0, 10));

        // A released reservation cannot be committed.
        let refused = app.commit(&sold).await.unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition);
        assert_eq!(reason(&refused), "RESERVATION_RELEASED");
        assert_eq!(stock(&app, "SKU-A").await, (10, 0, 10));

        // HELD → RELEASED gives the held units back to available, once.
        let dropped = order_id();
        app.reserve(&dropped, &[("SKU-A", 3)]).await.unwrap();
        assert_eq!(stock(&app, "SKU-A").await, (10, 3, 7));
        let released = app.release(&dropped).await.unwrap();
        assert_eq!(released.state, RELEASED);
        assert_eq!(stock(&app, "SKU-A").await, (10, 0, 10));
        assert_eq!(app.release(&dropped).await.unwrap().state, RELEASED);
        assert_eq!(stock(&app, "SKU-A").await, (10, 0, 10));
        let refused = app.commit(&dropped).await.unwrap_err();
        assert_eq!(reason(&refused), "RESERVATION_RELEASED");
        // A repeat ReserveStock returns it released; it holds nothing again.
        let repeat = app.reserve(&dropped, &[("SKU-A", 3)]).await.unwrap();
        assert_eq!(repeat.state, RELEASED);
        assert_eq!(stock(&app, "SKU-A").await, (10, 0, 10));
        let updated = repeat.update_time.unwrap();
        let created = repeat.create_time.unwrap();
        assert!((updated.seconds, updated.nanos) >= (created.seconds, created.nanos));
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn unknown_reservations_are_not_found(db: &TestDatabase) {
        let app = spawn_app(db).await;
        let order = order_id();
        for status in [
            app.get_reservation(&order).await.unwrap_err(),
            app.commit(&order).await.unwrap_err(),
            app.release(&order).await.unwrap_err(),
        ] {
            assert_eq!(status.code(), Code::NotFound);
            assert_eq!(reason(&status), "RESERVATION_NOT_FOUND");
            assert_eq!(metadata(&status, "order_id"), order);
        }
        for status in [
            app.get_reservation("nope").await.unwrap_err(),
            app.commit("").await.unwrap_err(),
            app.release("0b9a2f5e-3c57-4a4e-9d8e-2f0c1c9b4a11").await.unwrap_err(),
        ] {
            assert_eq!(status.code(), Code::InvalidArgument);
            assert_eq!(violated_fields(&status), ["order_id"]);
        }
        app.stop().await.unwrap();
    }
}

type BadReservation = (
    String,
    Vec<(&'static str, i64)>,
    Option<Duration>,
    Vec<&'static str>,
);

backend_test! {
    async fn bad_reservation_requests_are_rejected(db: &TestDatabase) {
        let app = spawn_app(db).await;
        app.product("SKU-A", 100, 10).await;
        let order = order_id();
        // (order_id, lines, ttl, the fields reported)
        let cases: Vec<BadReservation> = vec![
            ("not-a-uuid".into(), vec![("SKU-A", 1)], None, vec!["order_id"]),
            (order.clone(), vec![], None, vec!["lines"]),
            (order.clone(), vec![("SKU-A", 1), ("SKU-A", 2)], None, vec!["lines[1].sku"]),
            (order.clone(), vec![("SKU-A", 0)], None, vec!["lines[0].quantity"]),
            (order.clone(), vec![("sku-a", 10_001)], None, vec!["lines[0].sku", "lines[0].quantity"]),
            (order.clone(), vec![("SKU-A", 1)], Some(Duration::from_secs(25 * 3600)), vec!["ttl"]),
        ];
        for (order_id, lines, ttl, fields) in cases {
            let status = app.reserve_for(&order_id, &lines, ttl).await.unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{lines:?}");
            assert_eq!(violated_fields(&status), fields, "{lines:?}");
        }
        let too_many: Vec<_> = (0..101).map(|i| format!("SKU-{i}")).collect();
        let too_many: Vec<(&str, i64)> = too_many.iter().map(|s| (s.as_str(), 1)).collect();
        let status = app.reserve(&order, &too_many).await.unwrap_err();
        assert_eq!(violated_fields(&status), ["lines"]);

        // A negative ttl, a non-normalised one, and ones whose arithmetic
        // would overflow: each a field violation, never INTERNAL.
        for (seconds, nanos) in [(-5, 0), (1, 2_000_000_000), (1, -1), (i64::MIN, 0), (i64::MIN, -999_999_999), (i64::MAX, 999_999_999)] {
            let status = app
                .client
                .clone()
                .reserve_stock(with_token(
                    pb::ReserveStockRequest {
                        order_id: order.clone(),
                        lines: vec![pb::ReservationLine { sku: "SKU-A".into(), quantity: 1, unit_price: None }],
                        ttl: Some(prost_types::Duration { seconds, nanos }),
                    },
                    &app.service,
                ))
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{seconds}s {nanos}ns");
            assert_eq!(violated_fields(&status), ["ttl"], "{seconds}s {nanos}ns");
        }

        // An explicit ttl within bounds is used as given.
        let reservation = app
            .reserve_for(&order, &[("SKU-A", 1)], Some(Duration::from_secs(90)))
            .await
            .unwrap();
        let expires: SystemTime = reservation.expire_time.unwrap().try_into().unwrap();
        let created: SystemTime = reservation.create_time.unwrap().try_into().unwrap();
        assert_eq!(expires.duration_since(created).unwrap(), Duration::from_secs(90));
        assert_eq!(stock(&app, "SKU-A").await, (10, 1, 9));
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn only_services_hold_stock(db: &TestDatabase) {
        let app = spawn_app(db).await;
        app.product("SKU-A", 100, 10).await;
        let order = order_id();
        let mut client = app.client.clone();
        let reserve = |token: Option<&str>| {
            let request = pb::ReserveStockRequest {
                order_id: order.clone(),
                lines: vec![pb::ReservationLine { sku: "SKU-A".into(), quantity: 1, unit_price: None }],
                ttl: None,
            };
            match token {
                Some(token) => with_token(request, token),
                None => tonic::Request::new(request),
            }
        };
        let anonymous = client.reserve_stock(reserve(None)).await.unwrap_err();
        assert_eq!(anonymous.code(), Code::Unauthenticated);
        for token in [app.customer_token(), app.admin.clone()] {
            let refused = client.reserve_stock(reserve(Some(&token))).await.unwrap_err();
            assert_eq!(refused.code(), Code::PermissionDenied);
            let commit = client
                .commit_reservation(with_token(
                    pb::CommitReservationRequest { order_id: order.clone() },
                    &token,
                ))
                .await
                .unwrap_err();
            assert_eq!(commit.code(), Code::PermissionDenied);
            let release = client
                .release_reservation(with_token(
                    pb::ReleaseReservationRequest { order_id: order.clone() },
                    &token,
                ))
                .await
                .unwrap_err();
            assert_eq!(release.code(), Code::PermissionDenied);
        }
        assert_eq!(stock(&app, "SKU-A").await, (10, 0, 10));

        // Admins may read a reservation; customers may not.
        app.reserve(&order, &[("SKU-A", 1)]).await.unwrap();
        let get = |token: &str| {
            with_token(pb::GetReservationRequest { order_id: order.clone() }, token)
        };
        let as_admin = client.get_reservation(get(&app.admin)).await.unwrap().into_inner();
        assert_eq!(as_admin.reservation.unwrap().state, HELD);
        let as_customer = client.get_reservation(get(&app.customer_token())).await.unwrap_err();
        assert_eq!(as_customer.code(), Code::PermissionDenied);
        app.stop().await.unwrap();
    }
}
