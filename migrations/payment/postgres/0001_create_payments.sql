-- Charges, their refunds and their history. See ARCHITECTURE.md ("payment")
-- for the state machine these tables hold.
--
-- One payments row per Charge idempotency key, written (PENDING) before the
-- provider is called, so a crash between the provider's answer and our commit
-- leaves a row that the next retry or the reconciler completes with the same
-- provider idempotency key: never a second charge.
CREATE TABLE payments (
    payment_id            TEXT   NOT NULL PRIMARY KEY,
    order_id              TEXT   NOT NULL,
    user_id               TEXT   NOT NULL,
    amount_minor          BIGINT NOT NULL CHECK (amount_minor > 0),
    currency_code         TEXT   NOT NULL,
    -- Refunds completed, and refunds recorded but not yet answered by the
    -- provider; together never more than the amount captured.
    refunded_minor        BIGINT NOT NULL DEFAULT 0,
    refund_reserved_minor BIGINT NOT NULL DEFAULT 0,
    state                 TEXT   NOT NULL CHECK (state IN ('PENDING', 'CAPTURED', 'DECLINED',
                                  'PARTIALLY_REFUNDED', 'REFUNDED', 'FAILED')),
    decline_reason        TEXT   NOT NULL DEFAULT '',
    provider_reference    TEXT   NOT NULL DEFAULT '',
    idempotency_key       TEXT   NOT NULL,
    -- SHA-256 of the request's order, user, amount and payment-method token:
    -- a repeat of the key must match it.
    request_fingerprint   TEXT   NOT NULL,
    -- The payment-method token, kept only while PENDING (the reconciler needs
    -- it to complete the charge) and erased when the charge resolves.
    payment_method_token  TEXT,
    -- order_id while the payment can still be or has been a success (PENDING,
    -- CAPTURED, PARTIALLY_REFUNDED, REFUNDED); NULL once DECLINED or FAILED.
    -- Its unique constraint allows at most one such payment per order, even
    -- under concurrent charges with different keys.
    live_order_id         TEXT,
    -- Provider attempts so far; also the fencing token of the current lease.
    attempts              BIGINT NOT NULL DEFAULT 0,
    -- Until when (microseconds) the holder of the lease may call the provider
    -- for this PENDING payment; 0 when nobody holds it.
    lease_until           BIGINT NOT NULL DEFAULT 0,
    created_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL,
    CONSTRAINT payments_idempotency_key_key UNIQUE (idempotency_key),
    CONSTRAINT payments_live_order_id_key UNIQUE (live_order_id),
    CONSTRAINT payments_refunds_within_amount CHECK (
        refunded_minor >= 0 AND refund_reserved_minor >= 0
        AND refunded_minor + refund_reserved_minor <= amount_minor)
);
CREATE INDEX payments_order_id_idx ON payments (order_id, payment_id);
CREATE INDEX payments_user_id_idx ON payments (user_id, payment_id);
CREATE INDEX payments_state_lease_idx ON payments (state, lease_until);

-- Every state a payment entered, with when and why (refund ids, decline
-- reasons). Append-only.
CREATE TABLE payment_transitions (
    transition_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payment_id    TEXT   NOT NULL REFERENCES payments (payment_id),
    state         TEXT   NOT NULL,
    note          TEXT   NOT NULL DEFAULT '',
    created_at    BIGINT NOT NULL
);
CREATE INDEX payment_transitions_payment_id_idx ON payment_transitions (payment_id, transition_id);

-- Refunds, one row per Refund idempotency key, recorded (PENDING, with the
-- amount reserved on the payment) before the provider is called.
CREATE TABLE refunds (
    refund_id           TEXT   NOT NULL PRIMARY KEY,
    payment_id          TEXT   NOT NULL REFERENCES payments (payment_id),
    amount_minor        BIGINT NOT NULL CHECK (amount_minor > 0),
    currency_code       TEXT   NOT NULL,
    reason              TEXT   NOT NULL,
    state               TEXT   NOT NULL CHECK (state IN ('PENDING', 'SUCCEEDED', 'FAILED')),
    failure_reason      TEXT   NOT NULL DEFAULT '',
    provider_reference  TEXT   NOT NULL DEFAULT '',
    idempotency_key     TEXT   NOT NULL,
    request_fingerprint TEXT   NOT NULL,
    attempts            BIGINT NOT NULL DEFAULT 0,
    lease_until         BIGINT NOT NULL DEFAULT 0,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    CONSTRAINT refunds_idempotency_key_key UNIQUE (idempotency_key)
);
CREATE INDEX refunds_payment_id_idx ON refunds (payment_id, refund_id);
CREATE INDEX refunds_state_lease_idx ON refunds (state, lease_until);
