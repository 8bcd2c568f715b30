-- Accounts. The email is kept as typed for display and lower-cased in
-- email_normalized, whose unique constraint makes addresses unique
-- case-insensitively (and settles concurrent registrations in the database).
CREATE TABLE users (
    user_id          TEXT   NOT NULL PRIMARY KEY,
    email            TEXT   NOT NULL,
    email_normalized TEXT   NOT NULL,
    display_name     TEXT   NOT NULL,
    role             TEXT   NOT NULL CHECK (role IN ('customer', 'admin')),
    password_hash    TEXT   NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    CONSTRAINT users_email_normalized_key UNIQUE (email_normalized)
);
