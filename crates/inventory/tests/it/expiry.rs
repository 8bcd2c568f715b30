//! Reservations past their ttl: the sweeper gives their units back without
//! any call, and an expired hold can never be sold.

use std::time::{Duration, SystemTime};

use agora_proto::inventory::v1 as pb;
use agora_testkit::backend_test;
use agora_testkit::eventually;
use agora_testkit::status::reason;
use tonic::Code;

use crate::support::{order_id, spawn_with};

const EXPIRED: i32 = pb::ReservationState::Expired as i32;
const COMMITTED: i32 = pb::ReservationState::Committed as i32;

/// Generous: the sweeper runs every 50 ms in these tests, but the machine
/// may be busy.
const DEADLINE: Duration = Duration::from_secs(20);

backend_test! {
    async fn the_sweeper_releases_expired_holds_on_its_own(db: &TestDatabase) {
        let app = spawn_with(db, |config| {
            config.reservation_sweep_interval = Duration::from_millis(50);
        })
        .await;
        app.product("SKU-A", 100, 5).await;
        let order = order_id();
        let held = app
            .reserve_for(&order, &[("SKU-A", 5)], Some(Duration::from_millis(300)))
            .await
            .unwrap();
        assert_eq!(held.state, pb::ReservationState::Held as i32);

        // No call releases it: the units come back by themselves.
        let product = eventually("the hold expires", DEADLINE, || async {
            let product = app.get_product("SKU-A").await;
            (product.available == 5).then_some(product)
        })
        .await;
        assert_eq!((product.on_hand, product.reserved), (5, 0));
        let expired = app.get_reservation(&order).await.unwrap();
        assert_eq!(expired.state, EXPIRED);
        let expire_time: SystemTime = expired.expire_time.unwrap().try_into().unwrap();
        assert!(SystemTime::now() >= expire_time);

        // An expired reservation cannot be committed; releasing it moves
        // nothing (its units are already back); a repeat reserve returns it.
        let refused = app.commit(&order).await.unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition);
        assert_eq!(reason(&refused), "RESERVATION_EXPIRED");
        assert_eq!(app.release(&order).await.unwrap().state, EXPIRED);
        assert_eq!(app.reserve(&order, &[("SKU-A", 5)]).await.unwrap().state, EXPIRED);
        let product = app.get_product("SKU-A").await;
        assert_eq!((product.on_hand, product.reserved, product.available), (5, 0, 5));

        // The freed units can be held by another order.
        app.reserve(&order_id(), &[("SKU-A", 5)]).await.unwrap();
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn a_due_hold_is_refused_at_commit_even_before_the_sweep(db: &TestDatabase) {
        // The sweeper runs once at start, then not for an hour.
        let app = spawn_with(db, |config| {
            config.reservation_sweep_interval = Duration::from_secs(3600);
        })
        .await;
        app.product("SKU-A", 100, 3).await;
        let order = order_id();
        let held = app
            .reserve_for(&order, &[("SKU-A", 2)], Some(Duration::from_millis(200)))
            .await
            .unwrap();
        let expire_time: SystemTime = held.expire_time.unwrap().try_into().unwrap();
        eventually("the ttl passes", DEADLINE, || async {
            (SystemTime::now() > expire_time + Duration::from_millis(5)).then_some(())
        })
        .await;
        // Not swept: still counted as reserved.
        assert_eq!(app.get_product("SKU-A").await.reserved, 2);

        let refused = app.commit(&order).await.unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition);
        assert_eq!(reason(&refused), "RESERVATION_EXPIRED");
        // The refusal expired it on the spot.
        assert_eq!(app.get_reservation(&order).await.unwrap().state, EXPIRED);
        let product = app.get_product("SKU-A").await;
        assert_eq!((product.on_hand, product.reserved, product.available), (3, 0, 3));
        app.stop().await.unwrap();
    }
}

backend_test! {
    async fn committed_reservations_never_expire(db: &TestDatabase) {
        let app = spawn_with(db, |config| {
            config.reservation_sweep_interval = Duration::from_millis(50);
        })
        .await;
        app.product("SKU-A", 100, 10).await;
        let sold = order_id();
        app.reserve_for(&sold, &[("SKU-A", 4)], Some(Duration::from_secs(2)))
            .await
            .unwrap();
        app.commit(&sold).await.unwrap();

        // A later hold with the same ttl expires after the sale's expire_time,
        // so once the sweeper has released it, it has also looked at the sale.
        let later = order_id();
        app.reserve_for(&later, &[("SKU-A", 1)], Some(Duration::from_secs(2)))
            .await
            .unwrap();
        eventually("the later hold expires", DEADLINE, || async {
            let state = app.get_reservation(&later).await.unwrap().state;
            (state == EXPIRED).then_some(())
        })
        .await;
        assert_eq!(app.get_reservation(&sold).await.unwrap().state, COMMITTED);
        let product = app.get_product("SKU-A").await;
        assert_eq!((product.on_hand, product.reserved, product.available), (6, 0, 6));
        app.stop().await.unwrap();
    }
}
