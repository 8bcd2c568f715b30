//! The per-order lease at the store, where it is decided: a live runner's
//! lease never lapses between its steps, so no other process's recovery
//! loop mistakes its order for an orphan.

use std::time::Duration;

use agora_interceptors::api::time::now_micros;
use agora_interceptors::db::{Database, PoolSettings};
use agora_order::domain::{Cart, CustomerId, OrderId, PaymentToken, Quantity, RequestId, Sku};
use agora_order::steps::{Effect, Phase, StepKind, StepStatus};
use agora_order::store::{Inserted, NewOrder, NewStep, OrderStore, Transition};
use agora_testkit::{TestDatabase, backend_test};

const RUNNER: &str = "runner-a";

/// A store on `db` holding one PENDING order leased to [`RUNNER`] for a
/// minute, as PlaceOrder records it.
async fn store_with_leased_order(db: &TestDatabase) -> (OrderStore, OrderId) {
    let database = Database::open(db.url(), &PoolSettings::default(), &agora_order::MIGRATIONS)
        .await
        .unwrap();
    let store = OrderStore::new(database);
    let id = OrderId::new();
    let cart = Cart::new(vec![(
        Sku::parse("MUG").unwrap(),
        Quantity::parse(1).unwrap(),
    )])
    .unwrap();
    let order = NewOrder {
        customer: CustomerId::parse(&uuid::Uuid::now_v7().to_string()).unwrap(),
        request_id: RequestId::parse(&uuid::Uuid::now_v7().to_string()).unwrap(),
        cart,
        payment_token: PaymentToken::parse("tok_visa").unwrap(),
    };
    let until = now_micros() + Duration::from_secs(60).as_micros() as i64;
    let inserted = store.insert(id, &order, RUNNER, until).await.unwrap();
    assert!(matches!(inserted, Inserted::Created));
    (store, id)
}

backend_test! {
    async fn a_step_that_is_not_the_last_keeps_the_runners_lease(db: &TestDatabase) {
        let (store, id) = store_with_leased_order(db).await;
        assert!(!store.orphaned(100).await.unwrap().contains(&id), "a fresh lease is live");

        // RESERVE_STOCK succeeded; the runner goes on to CHARGE_PAYMENT.
        let reserved = Transition {
            steps: vec![NewStep {
                step: StepKind::ReserveStock,
                status: StepStatus::Succeeded,
                attempt: 1,
                effect: Effect::Applied,
                detail: String::new(),
            }],
            phase: Some(Phase::Charge),
            ..Transition::default()
        };
        assert!(store.apply(id, RUNNER, &reserved).await.unwrap(), "the runner holds the lease");

        assert!(
            !store.orphaned(100).await.unwrap().contains(&id),
            "between two steps of a live runner the order is not orphaned"
        );
        let other = now_micros() + Duration::from_secs(60).as_micros() as i64;
        assert!(
            !store.acquire_lease(id, "recovery-b", other).await.unwrap(),
            "nobody else can take the order from its live runner"
        );
        store.database().close().await;
    }
}
