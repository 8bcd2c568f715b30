-- A leaner outbox to write (agora_interceptors::outbox). Each commit with
-- events rewrites one page of every b-tree the events touch, so:
-- - outbox.position is the rowid (INTEGER PRIMARY KEY): one b-tree where a
--   BIGINT key made a table and an index;
-- - event_id loses its unique index: ids are UUIDv7 made by the appender,
--   and nothing looks an event up by id;
-- - how far the NATS relay published is one number,
--   outbox_relay.published_through, instead of a published_at on every row
--   with its partial index (rows up to it were acknowledged by the broker);
-- - outbox_sequences is clustered by subject (WITHOUT ROWID).
CREATE TABLE outbox_slim (
    position   INTEGER PRIMARY KEY,
    event_id   TEXT    NOT NULL,
    event_type TEXT    NOT NULL,
    subject    TEXT    NOT NULL,
    sequence   INTEGER NOT NULL,
    event      BLOB    NOT NULL,
    created_at INTEGER NOT NULL
);

INSERT INTO outbox_slim (position, event_id, event_type, subject, sequence, event, created_at)
SELECT position, event_id, event_type, subject, sequence, event, created_at FROM outbox;

ALTER TABLE outbox_relay ADD COLUMN published_through INTEGER NOT NULL DEFAULT 0;

UPDATE outbox_relay SET published_through = COALESCE(
    (SELECT MIN(position) - 1 FROM outbox WHERE published_at IS NULL),
    (SELECT MAX(position) FROM outbox),
    (SELECT position FROM outbox_head WHERE id = 1)
);

DROP TABLE outbox;

ALTER TABLE outbox_slim RENAME TO outbox;

CREATE INDEX outbox_created_idx ON outbox (created_at);

CREATE TABLE outbox_sequences_slim (
    subject       TEXT    NOT NULL PRIMARY KEY,
    last_sequence INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO outbox_sequences_slim (subject, last_sequence)
SELECT subject, last_sequence FROM outbox_sequences;

DROP TABLE outbox_sequences;

ALTER TABLE outbox_sequences_slim RENAME TO outbox_sequences;
