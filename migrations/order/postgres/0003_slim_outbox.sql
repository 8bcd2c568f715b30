-- A leaner outbox to write (agora_interceptors::outbox):
-- - event_id loses its unique index: ids are UUIDv7 made by the appender,
--   and nothing looks an event up by id;
-- - how far the NATS relay published is one number,
--   outbox_relay.published_through, instead of a published_at on every row
--   with its partial index (rows up to it were acknowledged by the broker).
ALTER TABLE outbox_relay ADD COLUMN published_through BIGINT NOT NULL DEFAULT 0;

UPDATE outbox_relay SET published_through = COALESCE(
    (SELECT MIN(position) - 1 FROM outbox WHERE published_at IS NULL),
    (SELECT MAX(position) FROM outbox),
    (SELECT position FROM outbox_head WHERE id = 1)
);

DROP INDEX outbox_unpublished_idx;

ALTER TABLE outbox DROP COLUMN published_at;

ALTER TABLE outbox DROP CONSTRAINT outbox_event_id_key;
