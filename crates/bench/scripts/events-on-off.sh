#!/usr/bin/env bash
# PlaceOrder with domain events off, on (embedded gRPC feeds), and on with
# NATS JetStream, back to back: BENCHMARKS.md, "Domain events".
#
#   unshare -n bash -c 'ip link set lo up; bash crates/bench/scripts/events-on-off.sh OFF_BINARY ON_BINARY [ROUNDS] [DURATION]'
#
# OFF_BINARY is a release `agora` built from this tree with events-off.patch
# applied (the outbox writes nothing, the rest is this tree), which isolates
# what events cost:
#
#   git worktree add /tmp/off-now HEAD && git -C /tmp/off-now apply "$PWD/crates/bench/scripts/events-off.patch"
#   (cd /tmp/off-now && cargo build --release -p agora)
#
# ON_BINARY is this tree's `cargo build --release -p agora`. With BEFORE set
# to another release binary (an earlier commit), each round also runs it, on
# the feeds and on NATS, for a before/after comparison in the same run.
#
# Each run: a fresh suite (SQLite files, RUST_LOG=warn) and `agora load` for
# DURATION at 32 workers. A NATS run starts its own nats-server with
# JetStream (fresh storage) on 127.0.0.1:4222, so run the script in a
# private network namespace as above (nothing else may hold the port), and
# reports the broker's CPU per confirmed order beside the suite's.
set -u
off=$1 on=$2 rounds=${3:-2} duration=${4:-20s} before=${BEFORE:-}

run() { # label binary [nats]
  local label=$1 bin=$2 nats=${3:-} dir store broker="" env=() ticks=0
  dir=$(mktemp -d)
  if [[ -n $nats ]]; then
    store=$(mktemp -d)
    nats-server -js -a 127.0.0.1 -p 4222 -sd "$store" >"$store/nats.log" 2>&1 &
    broker=$!
    for _ in $(seq 1 100); do (echo >/dev/tcp/127.0.0.1/4222) 2>/dev/null && break; sleep 0.05; done
    env=(AGORA_NATS_URL=nats://127.0.0.1:4222)
  fi
  env "${env[@]}" RUST_LOG=warn "$bin" --data-dir "$dir" >"$dir/suite.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 600); do grep -q "Agora is up" "$dir/suite.log" && break; sleep 0.1; done
  [[ -n $broker ]] && ticks=$(awk '{print -($14 + $15)}' "/proc/$broker/stat")
  "$bin" --data-dir "$dir" load --duration "$duration" --concurrency 32 --json --quiet >"$dir/load.json"
  [[ -n $broker ]] && ticks=$((ticks + $(awk '{print $14 + $15}' "/proc/$broker/stat")))
  kill -INT "$pid"
  wait "$pid" 2>/dev/null
  # /proc's CPU ticks are 10 ms.
  jq -r --arg run "$label" --argjson broker_ms "$((ticks * 10))" '[$run, .by_state.confirmed.per_second,
      .latency_ms.p50, .latency_ms.p99, ([.processes[] | .cpu_ms_per_order // 0] | add),
      (if .by_state.confirmed.count > 0 then $broker_ms / .by_state.confirmed.count * 1000 | round / 1000 else 0 end),
      .write_transactions_per_order.total] | @tsv' "$dir/load.json"
  if [[ -n $broker ]]; then
    kill "$broker"
    wait "$broker" 2>/dev/null
    rm -rf "$store"
  fi
  rm -rf "$dir"
}

printf 'run\tconfirmed/s\tp50 ms\tp99 ms\tsuite CPU ms/order\tbroker CPU ms/order\twrite tx/order\n'
for _ in $(seq 1 "$rounds"); do
  run off "$off"
  [[ -n $before ]] && run before-feeds "$before"
  run on-feeds "$on"
  [[ -n $before ]] && run before-nats "$before" nats
  run on-nats "$on" nats
done
