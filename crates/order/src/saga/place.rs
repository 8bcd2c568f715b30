//! PlaceOrder: record the order, start its saga, answer once it settles.

use std::future::Future;

use crate::domain::{Cart, OrderId};
use crate::error::OrderError;
use crate::store::{Inserted, NewOrder, OrderRecord};

use super::Saga;

impl Saga {
    /// Places `order` and answers it as it stands once its saga has settled
    /// it (CONFIRMED or FAILED) or the caller's deadline is nearly over
    /// (PENDING; the saga goes on in the background).
    ///
    /// The order is recorded PENDING, with the saga's first phase and its
    /// runner's lease, before any remote call. A repeat of the customer's
    /// `request_id` (AIP-155) answers the order it made, as it is now, and
    /// starts nothing; with other lines it is refused. `admit` is the
    /// caller's own check that the customer may order (their account still
    /// exists); it is awaited only for a new order, so repeats skip it.
    pub async fn place(
        &self,
        order: NewOrder,
        admit: impl Future<Output = Result<(), OrderError>>,
    ) -> Result<OrderRecord, OrderError> {
        let store = &self.inner.store;
        if let Some(existing) = store
            .find_by_request(order.customer, order.request_id)
            .await?
        {
            return repeat(existing, &order.cart);
        }
        admit.await?;

        let id = OrderId::new();
        let owner = self.new_lease_owner();
        let inserted = store
            .insert(id, &order, &owner, self.first_lease_until())
            .await?;
        if let Inserted::Duplicate = inserted {
            // A concurrent repeat won the race.
            let existing = store
                .find_by_request(order.customer, order.request_id)
                .await?
                .ok_or_else(|| OrderError::from(anyhow::anyhow!("duplicate order vanished")))?;
            return repeat(existing, &order.cart);
        }
        tracing::info!(order_id = %id, user_id = %order.customer, "order placed");
        let runner = self.drive_or_release(id, owner).await?;
        self.settled_or_deadline(id, runner).await
    }
}

/// The answer to a repeat: the order it made, unless `cart` differs from the
/// first request's lines.
fn repeat(existing: OrderRecord, cart: &Cart) -> Result<OrderRecord, OrderError> {
    if cart.same_as(&existing.cart_lines()) {
        Ok(existing)
    } else {
        Err(OrderError::RequestIdReused)
    }
}
