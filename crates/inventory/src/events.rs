//! The inventory context's domain events in their wire form
//! (`agora.events.v1`), appended to the outbox by [`crate::store`] in the
//! transaction that moves the stock: StockReserved, StockCommitted and
//! StockReleased about a reservation (subject: its order id), StockAdjusted
//! and StockLow about a product (subject: its sku).

use agora_interceptors::outbox::NewEvent;
use agora_proto::events::v1 as pb;
use agora_proto::events::v1::event::Payload;

use crate::domain::{OrderId, Product, ReservedLine, Sku};

fn wire_lines(lines: &[ReservedLine]) -> Vec<pb::StockLine> {
    lines
        .iter()
        .map(|line| pb::StockLine {
            sku: line.sku.as_str().to_owned(),
            quantity: line.quantity.get(),
        })
        .collect()
}

/// StockReserved.
pub fn reserved(order_id: OrderId, lines: &[ReservedLine]) -> NewEvent {
    NewEvent::new(
        order_id.to_string(),
        Payload::StockReserved(pb::StockReserved {
            order_id: order_id.to_string(),
            lines: wire_lines(lines),
        }),
    )
}

/// StockCommitted.
pub fn committed(order_id: OrderId, lines: &[ReservedLine]) -> NewEvent {
    NewEvent::new(
        order_id.to_string(),
        Payload::StockCommitted(pb::StockCommitted {
            order_id: order_id.to_string(),
            lines: wire_lines(lines),
        }),
    )
}

/// StockReleased; `restocked` when the reservation had been committed.
pub fn released(order_id: OrderId, lines: &[ReservedLine], restocked: bool) -> NewEvent {
    NewEvent::new(
        order_id.to_string(),
        Payload::StockReleased(pb::StockReleased {
            order_id: order_id.to_string(),
            lines: wire_lines(lines),
            restocked,
        }),
    )
}

/// StockAdjusted, for `product` as it is after `delta`.
pub fn adjusted(product: &Product, delta: i64) -> NewEvent {
    NewEvent::new(
        product.sku.as_str(),
        Payload::StockAdjusted(pb::StockAdjusted {
            sku: product.sku.as_str().to_owned(),
            delta,
            on_hand: product.on_hand,
            available: product.available(),
        }),
    )
}

/// StockLow, when `available` went from `available + taken` (at or above
/// `threshold`) to below it; `None` otherwise or when `threshold` is 0.
pub fn low(sku: &Sku, available: i64, taken: i64, threshold: i64) -> Option<NewEvent> {
    let crossed = threshold > 0 && available < threshold && available + taken >= threshold;
    crossed.then(|| {
        NewEvent::new(
            sku.as_str(),
            Payload::StockLow(pb::StockLow {
                sku: sku.as_str().to_owned(),
                available,
                threshold,
            }),
        )
    })
}
