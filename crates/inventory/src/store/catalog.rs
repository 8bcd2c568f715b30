//! The `products` table and its audit trail, `stock_adjustments`.

use agora_interceptors::api::time::now_micros;
use agora_interceptors::db::{self, Database};
use agora_interceptors::outbox::Outbox;
use sqlx::Row;

use super::{begin_write, product_columns, product_from_row, retrying};
use crate::domain::{
    Adjustment, AdjustmentReason, MAX_ON_HAND, NewProduct, Product, Sku, StockDelta,
};
use crate::error::InventoryError;
use crate::events;

/// Reads and writes products and their stock counts.
#[derive(Clone, Debug)]
pub struct Catalog {
    db: Database,
    outbox: Outbox,
}

impl Catalog {
    /// A catalogue over `db`, whose migrations have been applied; its
    /// events go to `outbox`.
    pub fn new(db: Database, outbox: Outbox) -> Self {
        Self { db, outbox }
    }

    /// Adds a product with no stock; SKU_TAKEN when the sku exists.
    pub async fn create(&self, product: NewProduct) -> Result<Product, InventoryError> {
        let now = now_micros();
        let row = sqlx::query(concat!(
            "INSERT INTO products (sku, name, description, price_minor, currency_code, \
             on_hand, reserved, low_stock_threshold, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 0, 0, $7, $6, $6) RETURNING ",
            product_columns!()
        ))
        .bind(product.sku.as_str().to_owned())
        .bind(product.name.as_str().to_owned())
        .bind(product.description.as_str().to_owned())
        .bind(product.price.amount_minor())
        .bind(product.price.currency().code())
        .bind(now)
        .bind(product.low_stock_threshold)
        .fetch_one(self.db.pool())
        .await
        .map_err(|error| match db::unique_violation(&error) {
            // The sku is the table's only unique key, so the kind is enough
            // (SQLite does not name the constraint).
            Some(_) => InventoryError::SkuTaken(product.sku.clone()),
            None => error.into(),
        })?;
        product_from_row(&row)
    }

    /// The product with this sku, if any.
    pub async fn get(&self, sku: &Sku) -> Result<Option<Product>, InventoryError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            product_columns!(),
            " FROM products WHERE sku = $1"
        ))
        .bind(sku.as_str().to_owned())
        .fetch_optional(self.db.pool())
        .await?;
        row.as_ref().map(product_from_row).transpose()
    }

    /// Up to `limit` products with skus after `after`, in sku order.
    pub async fn list(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Product>, InventoryError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            product_columns!(),
            " FROM products WHERE sku > $1 ORDER BY sku LIMIT $2"
        ))
        .bind(after.unwrap_or_default().to_owned())
        .bind(i64::from(limit))
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(product_from_row).collect()
    }

    /// Applies an adjustment once per request id and records it, by `actor`,
    /// in the audit trail. A repeat of the same adjustment returns the
    /// product as it is now; a different adjustment under a used request id
    /// is REQUEST_ID_REUSED.
    pub async fn adjust(
        &self,
        adjustment: &Adjustment,
        actor: &str,
    ) -> Result<Product, InventoryError> {
        retrying("AdjustStock", || self.try_adjust(adjustment, actor)).await
    }

    async fn try_adjust(
        &self,
        adjustment: &Adjustment,
        actor: &str,
    ) -> Result<Product, InventoryError> {
        let now = now_micros();
        let sku = adjustment.sku.as_str();
        let mut tx = begin_write(&self.db).await?;

        // Claim the request id first: a repeat must be recognised before any
        // stock moves, even when applying it again would now be refused. The
        // SELECT yields no row for an unknown sku, so nothing is inserted.
        let claimed = sqlx::query(
            "INSERT INTO stock_adjustments \
               (request_id, sku, delta, reason, actor, created_at, updated_at) \
             SELECT $1, sku, $2, $3, $4, $5, $5 FROM products WHERE sku = $6 \
             ON CONFLICT (request_id) DO NOTHING",
        )
        .bind(adjustment.request_id.to_string())
        .bind(adjustment.delta.get())
        .bind(adjustment.reason.as_str().to_owned())
        .bind(actor.to_owned())
        .bind(now)
        .bind(sku.to_owned())
        .execute(&mut *tx)
        .await?
        .rows_affected();

        if claimed == 0 {
            let earlier = sqlx::query(
                "SELECT sku, delta, reason FROM stock_adjustments WHERE request_id = $1",
            )
            .bind(adjustment.request_id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
            tx.rollback().await?;
            let Some(earlier) = earlier else {
                return Err(InventoryError::ProductNotFound(vec![
                    adjustment.sku.clone(),
                ]));
            };
            let same = earlier.try_get::<String, _>("sku")? == sku
                && StockDelta::from_stored(earlier.try_get("delta")?) == adjustment.delta
                && AdjustmentReason::from_stored(earlier.try_get("reason")?) == adjustment.reason;
            if !same {
                return Err(InventoryError::RequestIdReused);
            }
            return self
                .get(&adjustment.sku)
                .await?
                .ok_or_else(|| InventoryError::ProductNotFound(vec![adjustment.sku.clone()]));
        }

        // One conditional statement checks and applies the change, so no
        // concurrent reservation can slip between a check and a write.
        let updated = sqlx::query(concat!(
            "UPDATE products SET on_hand = on_hand + $1, updated_at = $2 \
             WHERE sku = $3 AND on_hand + $1 >= reserved AND on_hand + $1 <= $4 \
             RETURNING ",
            product_columns!()
        ))
        .bind(adjustment.delta.get())
        .bind(now)
        .bind(sku.to_owned())
        .bind(MAX_ON_HAND)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = updated else {
            // Refused: read why while the row is still ours, then undo the
            // claim so the same request id may be tried again later.
            let current = sqlx::query(concat!(
                "SELECT ",
                product_columns!(),
                " FROM products WHERE sku = $1"
            ))
            .bind(sku.to_owned())
            .fetch_one(&mut *tx)
            .await?;
            tx.rollback().await?;
            let product = product_from_row(&current)?;
            return Err(refusal(&product, adjustment.delta));
        };
        let product = product_from_row(&row)?;
        let delta = adjustment.delta.get();
        let mut changes = vec![events::adjusted(&product, delta)];
        changes.extend(events::low(
            &product.sku,
            product.available(),
            -delta,
            product.low_stock_threshold,
        ));
        let appended = self.outbox.append(&mut tx, &changes).await?;
        tx.commit().await?;
        self.outbox.committed(appended);
        Ok(product)
    }
}

/// Why `delta` cannot be applied to `product`.
fn refusal(product: &Product, delta: StockDelta) -> InventoryError {
    let after = product.on_hand + delta.get();
    if after < product.reserved {
        InventoryError::StockAdjustmentRefused {
            sku: product.sku.clone(),
            reason: "STOCK_BELOW_RESERVED",
            message: format!(
                "on hand would be {after}, below the {} units reserved (on hand {}, delta {})",
                product.reserved,
                product.on_hand,
                delta.get()
            ),
        }
    } else {
        InventoryError::StockAdjustmentRefused {
            sku: product.sku.clone(),
            reason: "STOCK_LIMIT_EXCEEDED",
            message: format!("on hand would be {after}, above the limit of {MAX_ON_HAND}"),
        }
    }
}
