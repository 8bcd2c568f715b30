-- A product's low-stock threshold: when its available units (on_hand -
-- reserved) fall below it, the inventory service emits a StockLow event.
-- 0 never alerts.
ALTER TABLE products ADD COLUMN low_stock_threshold BIGINT NOT NULL DEFAULT 0;
