-- Disabled accounts and revoked tokens.
--
-- users.disabled_at: when an admin disabled the account (NULL: enabled). A
--   disabled account cannot sign in.
-- token_revocations: one row per subject whose tokens issued at or before
--   revoked_at (µs since the epoch; the verifiers compare whole seconds with
--   the token's iat) are refused, written in the transaction of the change
--   that causes it (delete, disable, role change, RevokeTokens). Every
--   service follows the table through ListRevocations; rows older than the
--   longest token lifetime no longer matter and are pruned.
ALTER TABLE users ADD COLUMN disabled_at BIGINT;

CREATE TABLE token_revocations (
    subject    TEXT   NOT NULL PRIMARY KEY,
    revoked_at BIGINT NOT NULL,
    reason     TEXT   NOT NULL
);

CREATE INDEX token_revocations_revoked_at_idx ON token_revocations (revoked_at);
