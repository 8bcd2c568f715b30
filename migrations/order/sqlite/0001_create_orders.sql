-- Orders and their saga. The saga's whole state lives here, written in one
-- transaction per change, so a restarted order service resumes every saga
-- that is not finished from its last recorded step.
--
-- state: what callers see (PENDING, CONFIRMED, FAILED, CANCELLING, CANCELLED).
-- phase: what the saga runner must do next (reserve, charge, commit, refund,
--        release) or done. A row with phase <> 'done' is picked up by recovery.
-- payment_token: the caller's payment-method token, kept only while the charge
--        may still have to be (re)tried, then erased.
-- lease_owner/lease_until: the semantic lock. Only the runner holding an
--        unexpired lease may write the order; every saga write is fenced by
--        `lease_owner = $me`.
-- step_count: number of saga_steps rows, so each new row gets the next seq.
CREATE TABLE orders (
    order_id        TEXT   NOT NULL PRIMARY KEY,
    user_id         TEXT   NOT NULL,
    request_id      TEXT   NOT NULL,
    state           TEXT   NOT NULL CHECK (state IN ('PENDING', 'CONFIRMED', 'FAILED', 'CANCELLING', 'CANCELLED')),
    phase           TEXT   NOT NULL CHECK (phase IN ('reserve', 'charge', 'commit', 'refund', 'release', 'done')),
    currency        TEXT,
    total_minor     BIGINT,
    payment_id      TEXT,
    payment_token   TEXT,
    failure_reason  TEXT   NOT NULL DEFAULT '',
    failure_message TEXT   NOT NULL DEFAULT '',
    cancel_reason   TEXT   NOT NULL DEFAULT '',
    step_count      BIGINT NOT NULL DEFAULT 0,
    version         BIGINT NOT NULL DEFAULT 1,
    lease_owner     TEXT,
    lease_until     BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    CONSTRAINT orders_user_request_key UNIQUE (user_id, request_id)
);

CREATE INDEX orders_user_idx ON orders (user_id, order_id);
CREATE INDEX orders_open_idx ON orders (lease_until) WHERE phase <> 'done';

-- The lines of an order; unit prices are filled in from the reservation.
CREATE TABLE order_lines (
    order_id         TEXT   NOT NULL REFERENCES orders (order_id),
    line_no          BIGINT NOT NULL,
    sku              TEXT   NOT NULL,
    quantity         BIGINT NOT NULL,
    unit_price_minor BIGINT,
    currency         TEXT,
    PRIMARY KEY (order_id, line_no),
    CONSTRAINT order_lines_sku_key UNIQUE (order_id, sku)
);

-- The saga's step log: one row per try of a step reaching a status. `effect`
-- says what a finished try did downstream: 'applied', 'none' (certainly
-- nothing), 'refused' (the downstream settled the request without effect, for
-- every try with the same key) or 'unknown' (it may have taken effect);
-- compensation reads it to know what to undo.
CREATE TABLE saga_steps (
    order_id   TEXT   NOT NULL REFERENCES orders (order_id),
    seq        BIGINT NOT NULL,
    step       TEXT   NOT NULL,
    status     TEXT   NOT NULL CHECK (status IN ('STARTED', 'SUCCEEDED', 'FAILED')),
    attempt    BIGINT NOT NULL,
    effect     TEXT   NOT NULL DEFAULT '',
    detail     TEXT   NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    PRIMARY KEY (order_id, seq)
);
