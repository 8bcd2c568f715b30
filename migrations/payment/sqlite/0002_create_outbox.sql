-- The transactional outbox (agora_interceptors::outbox; the same tables in
-- every service). Events are appended in the transaction of the change that
-- causes them.
--
-- outbox: one row per event. position: from outbox_head, handed out in
--   commit order without gaps (the consumers' cursor). event: the encoded
--   agora.events.v1.Event. published_at: when the NATS relay got the
--   broker's PubAck (NULL: not yet, or no broker configured).
-- outbox_head: the one row holding the last position handed out, and the
--   last position pruned by retention (cursors before it are refused).
-- outbox_sequences: the last per-aggregate sequence of each subject.
-- outbox_relay: see below.
CREATE TABLE outbox (
    position     BIGINT NOT NULL PRIMARY KEY,
    event_id     TEXT   NOT NULL UNIQUE,
    event_type   TEXT   NOT NULL,
    subject      TEXT   NOT NULL,
    sequence     BIGINT NOT NULL,
    event        BLOB  NOT NULL,
    created_at   BIGINT NOT NULL,
    published_at BIGINT
);

CREATE INDEX outbox_unpublished_idx ON outbox (position) WHERE published_at IS NULL;
CREATE INDEX outbox_created_idx ON outbox (created_at);

CREATE TABLE outbox_head (
    id             BIGINT NOT NULL PRIMARY KEY CHECK (id = 1),
    position       BIGINT NOT NULL,
    pruned_through BIGINT NOT NULL
);

INSERT INTO outbox_head (id, position, pruned_through) VALUES (1, 0, 0);

CREATE TABLE outbox_sequences (
    subject       TEXT   NOT NULL PRIMARY KEY,
    last_sequence BIGINT NOT NULL
);

-- The NATS relay's claim: a relay publishes only while it holds this row
-- (PostgreSQL: SELECT … FOR UPDATE SKIP LOCKED), so replicas never publish
-- the same rows at once, and rows go out in position order.
CREATE TABLE outbox_relay (
    id BIGINT NOT NULL PRIMARY KEY CHECK (id = 1)
);

INSERT INTO outbox_relay (id) VALUES (1);
