-- feed_leases: which replica consumes a gRPC event feed ("agora/order",
--   "agora/payment") now. A replica takes the row when it is free or its
--   holder's lease expired (expires_at, µs since the epoch), renews it while
--   it consumes, and deletes it when it stops; the others wait and take over
--   when it dies. Several replicas on one database so consume each feed one
--   at a time (the inbox keeps one notification per event regardless).
CREATE TABLE feed_leases (
    source     TEXT   NOT NULL PRIMARY KEY,
    holder     TEXT   NOT NULL,
    expires_at BIGINT NOT NULL
);
