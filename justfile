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

# Formatting, clippy, buf lint, and buf breaking (last release, main).
lint: && breaking
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --locked -- -D warnings
    buf lint

# Breaking-change check of the contracts against the last release (and against main).
breaking:
    buf breaking --against .ci/released-contracts.binpb
    buf breaking --against '.git#branch=main'

# The benchmarks behind BENCHMARKS.md (release build).
bench:
    cargo run --release -p agora-bench

# The suite with a scripted walk through a purchase.
demo:
    cargo run -- demo

# Validate deploy/ (Kubernetes schemas, compose, Dockerfile lint, cross-checks).
deploy-check:
    bash deploy/check

# The container image with every binary (needs a Docker engine).
image tag="agora:dev":
    docker build -f deploy/Dockerfile -t {{tag}} .

# The suite in containers with PostgreSQL, Jaeger and Prometheus (needs a Docker engine).
up:
    docker compose -f deploy/compose.yaml up --build

# Development keys for the dev overlay (deploy/k8s/overlays/dev/keys, git-ignored).
dev-keys:
    deploy/keys/generate --out deploy/k8s/overlays/dev/keys

# What CI runs.
ci:
    bash .ci/run
