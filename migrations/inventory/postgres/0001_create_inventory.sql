-- The catalogue and its stock. `reserved` counts units held by HELD
-- reservations; the CHECK keeps 0 <= reserved <= on_hand true in the database
-- itself, whatever a query does, so a bug can fail a call but never oversell.
CREATE TABLE products (
    sku           TEXT   NOT NULL PRIMARY KEY,
    name          TEXT   NOT NULL,
    description   TEXT   NOT NULL,
    price_minor   BIGINT NOT NULL CHECK (price_minor > 0),
    currency_code TEXT   NOT NULL,
    on_hand       BIGINT NOT NULL DEFAULT 0,
    reserved      BIGINT NOT NULL DEFAULT 0,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    CONSTRAINT products_stock_check CHECK (reserved >= 0 AND reserved <= on_hand)
);

-- The audit trail of AdjustStock: one row per applied adjustment. The primary
-- key is the caller's request_id, which makes the adjustment idempotent.
CREATE TABLE stock_adjustments (
    request_id TEXT   NOT NULL PRIMARY KEY,
    sku        TEXT   NOT NULL REFERENCES products (sku),
    delta      BIGINT NOT NULL CHECK (delta <> 0),
    reason     TEXT   NOT NULL,
    actor      TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX stock_adjustments_sku_idx ON stock_adjustments (sku, created_at);

-- Stock held for one order; the order id is the idempotency key of
-- ReserveStock. `currency_code` and `total_minor` are the lines' shared
-- currency and sum, fixed when the reservation is made.
CREATE TABLE reservations (
    order_id      TEXT   NOT NULL PRIMARY KEY,
    state         TEXT   NOT NULL CHECK (state IN ('HELD', 'COMMITTED', 'RELEASED', 'EXPIRED')),
    currency_code TEXT   NOT NULL,
    total_minor   BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
-- The sweeper looks for HELD reservations past their expiry.
CREATE INDEX reservations_state_expires_idx ON reservations (state, expires_at);

-- The lines of a reservation with the unit price captured when it was made.
CREATE TABLE reservation_lines (
    order_id         TEXT   NOT NULL REFERENCES reservations (order_id),
    sku              TEXT   NOT NULL REFERENCES products (sku),
    quantity         BIGINT NOT NULL CHECK (quantity > 0),
    unit_price_minor BIGINT NOT NULL,
    PRIMARY KEY (order_id, sku)
);
