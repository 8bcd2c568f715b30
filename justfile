# Everyday recipes. The README's two commands (cargo run, cargo test) never need just.

export CARGO_TARGET_DIR := env_var_or_default("CARGO_TARGET_DIR", env_var("HOME") / ".cache/agora-target")
pg_url := env_var_or_default("AGORA_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")

# Start the suite with SQLite under ./data.
run:
    cargo run

# Every test, SQLite only.
test:
    cargo test

# Every test, SQLite and PostgreSQL.
test-pg:
    AGORA_TEST_POSTGRES_URL={{pg_url}} cargo test

# Formatting, clippy and buf lint.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    buf lint

# Breaking-change check of the contracts against main.
breaking:
    buf breaking --against '.git#branch=main'

# What CI runs.
ci:
    bash .ci/run
