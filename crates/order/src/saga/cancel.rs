//! CancelOrder: a CONFIRMED order becomes CANCELLING, and a runner gives its
//! stock and money back.

use crate::domain::{CancelReason, OrderState};
use crate::error::OrderError;
use crate::store::OrderRecord;

use super::Saga;

impl Saga {
    /// Cancels `order` (as the caller read it) and answers it as it stands
    /// once the cancellation has settled or the caller's deadline is nearly
    /// over (CANCELLING; the runner goes on in the background).
    ///
    /// The state CAS is the semantic lock: only one caller turns CONFIRMED
    /// into CANCELLING; a repeat finds it CANCELLING (and drives it if its
    /// runner died) or CANCELLED. PENDING and FAILED orders are refused:
    /// their saga is running or they have nothing to give back.
    pub async fn cancel(
        &self,
        order: OrderRecord,
        reason: &CancelReason,
    ) -> Result<OrderRecord, OrderError> {
        let store = &self.inner.store;
        let id = order.id;
        let runner = match order.state {
            OrderState::Cancelled => None,
            OrderState::Pending | OrderState::Failed => {
                return Err(OrderError::NotCancellable {
                    order_id: id.to_string(),
                    state: order.state.as_str(),
                });
            }
            OrderState::Confirmed | OrderState::Cancelling => {
                let owner = self.new_lease_owner();
                let until = self.first_lease_until();
                let began = order.state == OrderState::Confirmed
                    && store
                        .begin_cancel(id, &owner, until, reason.as_str())
                        .await?;
                if began {
                    tracing::info!(order_id = %id, "cancellation started");
                    self.drive_or_release(id, owner).await?
                } else if store.acquire_lease(id, &owner, until).await? {
                    // Already cancelling and nobody drives it (its runner
                    // died): drive it from here.
                    self.drive_or_release(id, owner).await?
                } else {
                    None
                }
            }
        };
        self.settled_or_deadline(id, runner).await
    }
}
