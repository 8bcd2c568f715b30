//! A small demo catalogue, so `cargo run` has something to browse and order.

use agora_interceptors::db::Database;
use anyhow::Context;

use crate::domain::{
    Adjustment, AdjustmentReason, Currency, Description, NewProduct, Price, ProductName, RequestId,
    Sku, StockDelta,
};
use crate::error::InventoryError;
use crate::store::Catalog;

/// Who the demo stock adjustments are recorded as.
const ACTOR: &str = "demo-seed";

/// (sku, name, description, price in euro cents, initial stock, the fixed
/// request id that makes the initial stock adjustment happen once).
const DEMO: &[(&str, &str, &str, i64, i64, &str)] = &[
    (
        "SKU-MUG",
        "Agora mug",
        "Stoneware mug, 330 ml.",
        1200,
        100,
        "00000000-0000-4000-8000-000000000001",
    ),
    (
        "SKU-TEE",
        "Agora T-shirt",
        "Organic cotton, unisex.",
        2500,
        50,
        "00000000-0000-4000-8000-000000000002",
    ),
    (
        "SKU-HOODIE",
        "Agora hoodie",
        "Heavy fleece with a front pocket.",
        5900,
        20,
        "00000000-0000-4000-8000-000000000003",
    ),
    (
        "SKU-STICKERS",
        "Sticker pack",
        "Ten vinyl stickers.",
        400,
        500,
        "00000000-0000-4000-8000-000000000004",
    ),
    (
        "SKU-NOTEBOOK",
        "Dot-grid notebook",
        "A5, 120 pages.",
        900,
        5,
        "00000000-0000-4000-8000-000000000005",
    ),
];

/// Adds the demo products (priced in EUR) with their initial stock. Safe to
/// call on every start: existing products are left as they are, and each
/// initial stock adjustment carries a fixed request id, so it is applied
/// once however often this runs (and shows in the audit trail).
pub async fn seed_demo_catalog(database: &Database) -> anyhow::Result<()> {
    // Seeding happens before anyone follows the feed: no one to wake.
    let catalog = Catalog::new(
        database.clone(),
        agora_interceptors::outbox::Outbox::new(database.clone(), "inventory"),
    );
    let eur = Currency::parse("EUR").context("EUR is a currency")?;
    for &(sku, name, description, price, stock, request_id) in DEMO {
        let sku = Sku::parse(sku).context("demo sku")?;
        let product = NewProduct {
            sku: sku.clone(),
            name: ProductName::parse(name).context("demo name")?,
            description: Description::parse(description).context("demo description")?,
            price: Price::new(price, eur).context("demo price")?,
            low_stock_threshold: 0,
        };
        match catalog.create(product).await {
            Ok(_) | Err(InventoryError::SkuTaken(_)) => {}
            Err(error) => return Err(anyhow::Error::new(error).context("adding a demo product")),
        }
        let adjustment = Adjustment {
            sku,
            delta: StockDelta::parse(stock).context("demo stock")?,
            reason: AdjustmentReason::parse("demo catalogue: initial stock")
                .context("demo reason")?,
            request_id: RequestId::parse(request_id).context("demo request id")?,
        };
        catalog
            .adjust(&adjustment, ACTOR)
            .await
            .map_err(|error| anyhow::Error::new(error).context("stocking a demo product"))?;
    }
    tracing::info!(products = DEMO.len(), "demo catalogue in place");
    Ok(())
}
