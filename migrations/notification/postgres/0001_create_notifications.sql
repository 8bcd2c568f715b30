-- The notification service's state.
--
-- feed_cursors: per source feed ("agora/order", "agora/payment"), the cursor
--   after the last event processed; written in the same transaction as that
--   event's inbox row, so a restart resumes exactly after it.
-- inbox: every event processed, by event id: a redelivered event finds its
--   row and is skipped (exactly-once in effect). outcome: 'notified' or
--   'dead' (gave up; see dead_letters).
-- notifications: what was sent to whom, one per event.
-- dead_letters: events whose notification kept failing, with the encoded
--   agora.events.v1.Event so they can be replayed.
CREATE TABLE feed_cursors (
    source     TEXT   NOT NULL PRIMARY KEY,
    cursor     TEXT   NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE inbox (
    event_id     TEXT   NOT NULL PRIMARY KEY,
    source       TEXT   NOT NULL,
    event_type   TEXT   NOT NULL,
    outcome      TEXT   NOT NULL CHECK (outcome IN ('notified', 'dead')),
    processed_at BIGINT NOT NULL
);

CREATE TABLE notifications (
    event_id TEXT   NOT NULL PRIMARY KEY,
    user_id  TEXT   NOT NULL,
    kind     TEXT   NOT NULL,
    order_id TEXT   NOT NULL,
    message  TEXT   NOT NULL,
    sent_at  BIGINT NOT NULL
);

CREATE INDEX notifications_user_idx ON notifications (user_id, event_id);

CREATE TABLE dead_letters (
    event_id   TEXT   NOT NULL PRIMARY KEY,
    source     TEXT   NOT NULL,
    event_type TEXT   NOT NULL,
    event      BYTEA  NOT NULL,
    attempts   BIGINT NOT NULL,
    last_error TEXT   NOT NULL,
    dead_at    BIGINT NOT NULL
);
