#!/usr/bin/env bash
# PlaceOrder with domain events off, on (embedded gRPC feeds), and on with
# NATS JetStream, back to back: BENCHMARKS.md, "Domain events".
#
#   bash crates/bench/scripts/events-on-off.sh OFF_BINARY ON_BINARY [ROUNDS] [DURATION]
#
# OFF_BINARY is a release `agora` built from a tree without events (the commit
# before "Merge wt/events", with the write-path work: wt/perf 25b0d71); ON_BINARY
# is this tree's `cargo build --release -p agora`. With OFF_NOW set to a third
# binary, each round also runs it as "off-now": this tree with
# events-off.patch applied (the outbox writes nothing), which isolates what
# events cost from everything else that changed since 25b0d71:
#
#   git worktree add /tmp/off-now HEAD && git -C /tmp/off-now apply "$PWD/crates/bench/scripts/events-off.patch"
#   (cd /tmp/off-now && cargo build --release -p agora)
#
# NATS runs need a nats-server with JetStream at 127.0.0.1:4222. Each run: a
# fresh suite (SQLite files, RUST_LOG=warn) and `agora load` for DURATION at
# 32 workers.
set -u
off=$1 on=$2 rounds=${3:-2} duration=${4:-15s} off_now=${OFF_NOW:-}

run() { # label binary [VAR=value...]
  local label=$1 bin=$2 dir
  shift 2
  dir=$(mktemp -d)
  env "$@" RUST_LOG=warn "$bin" --data-dir "$dir" >"$dir/suite.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 600); do grep -q "Agora is up" "$dir/suite.log" && break; sleep 0.1; done
  "$bin" --data-dir "$dir" load --duration "$duration" --concurrency 32 --json --quiet >"$dir/load.json"
  kill -INT "$pid"
  wait "$pid" 2>/dev/null
  jq -r --arg run "$label" '[$run, .by_state.confirmed.per_second, .latency_ms.p50, .latency_ms.p99,
      ([.processes[] | .cpu_ms_per_order // 0] | add), .write_transactions_per_order.total] | @tsv' "$dir/load.json"
  rm -rf "$dir"
}

printf 'run\tconfirmed/s\tp50 ms\tp99 ms\tsuite CPU ms/order\twrite tx/order\n'
for _ in $(seq 1 "$rounds"); do
  run off "$off"
  [[ -n $off_now ]] && run off-now "$off_now"
  run on-feed "$on"
  run on-nats "$on" AGORA_NATS_URL=nats://127.0.0.1:4222
done
