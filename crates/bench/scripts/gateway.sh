#!/usr/bin/env bash
# The gateway's added latency and CPU per call: the same ListProducts
# (page_size 10, the demo catalogue) called directly over gRPC on inventory
# (:50054), through the gateway as plain gRPC (:8080, passed through) and
# through the gateway as HTTP/JSON (GET /v1/products, transcoded), against one
# `agora` process (the suite and its gateway). Load: h2load (Debian
# nghttp2-client). CPU: the process's utime+stime from /proc over the run,
# divided by the calls. Latency: h2load's mean time per request with one
# connection and one stream (serial calls). Rate limits off
# (AGORA_RATE_LIMIT_PER_SECOND=0 reaches the gateway; a service-role token
# is exempt at inventory).
#
#   bash crates/bench/scripts/gateway.sh [path/to/agora] [calls]
set -euo pipefail
agora="${1:-target/release/agora}"
calls="${2:-20000}"
work="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
AGORA_RATE_LIMIT_PER_SECOND=0 "$agora" --data-dir "$work" >"$work/log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do grep -q "Agora is up" "$work/log" && break; sleep 0.1; done
grep -q "Agora is up" "$work/log" || { cat "$work/log"; exit 1; }
token="$("$agora" token --data-dir "$work" --role service)"
# gRPC frame of ListProductsRequest{page_size: 10}: field 1 varint 10.
printf '\x00\x00\x00\x00\x02\x08\x0a' >"$work/list.grpc"
ticks="$(getconf CLK_TCK)"
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }

run() { # name, then h2load arguments
  local name="$1"; shift
  h2load -n 2000 -c 4 -m 8 "$@" >/dev/null 2>&1 # warm-up
  local before after
  before="$(cpu)"
  local out; out="$(h2load -n "$calls" -c 4 -m 8 "$@" 2>&1)"
  after="$(cpu)"
  local ok; ok="$(sed -n 's/.* \([0-9]*\) succeeded.*/\1/p' <<<"$out")"
  local rps; rps="$(sed -n 's/^finished in .*, \([0-9.]*\) req\/s.*/\1/p' <<<"$out")"
  local serial; serial="$(h2load -n 2000 -c 1 -m 1 "$@" 2>&1 | awk '/time for request:/ {print $6, $7}')"
  awk -v n="$name" -v c="$calls" -v ok="$ok" -v r="$rps" -v b="$before" -v a="$after" -v t="$ticks" -v s="$serial" \
    'BEGIN { printf "| %s | %s/%s | %s | %.1f | %s |\n", n, ok, c, r, (a - b) / t / c * 1e6, s }'
}

echo "| path | ok/calls | calls/s (4 conns x 8 streams) | CPU us/call (whole process) | mean latency, serial |"
echo "|---|---:|---:|---:|---:|"
grpc=(-d "$work/list.grpc" -H 'content-type: application/grpc' -H 'te: trailers' -H "authorization: Bearer $token")
run "gRPC direct (inventory)" "${grpc[@]}" http://127.0.0.1:50054/agora.inventory.v1.InventoryService/ListProducts
run "gRPC via gateway" "${grpc[@]}" http://127.0.0.1:8080/agora.inventory.v1.InventoryService/ListProducts
run "HTTP/JSON via gateway" -H "authorization: Bearer $token" 'http://127.0.0.1:8080/v1/products?page_size=10'
