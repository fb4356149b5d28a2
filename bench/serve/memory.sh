#!/usr/bin/env bash
# Start-up time and resident memory of `consentry serve` with N entries (default 10M), plus a
# short wrk run of single lookups. The HTTP import is too slow for 10M here, so the entries are
# written straight into the SQLite store of a stopped server (bench/serve/fill_sqlite.py).
#
#   bench/serve/memory.sh               # N = 10,000,000
#   N=1000000 DURATION=10 bench/serve/memory.sh
#
# Prints: the time from start to listening, VmRSS/VmHWM once listening, wrk req/s and latency,
# batch lookups (POST /v1/lookup, 10,000 random hashes per request at radius $BATCH_RADIUS, default
# 31, 2 connections; BATCH_RADIUS= skips them) in hashes/s, VmRSS after the runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${N:-10000000}
DURATION=${DURATION:-10}
WORK=${WORK:-/tmp/consentry-bench-memory}
PORT=${PORT:-18383}
HERE=bench/serve
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
if [ -z "${BIN:-}" ]; then cargo build --release -q -p consentry; BIN=$PWD/target/release/consentry; fi
D="$WORK/data-$N"
start() {
  rm -f "$WORK/serve.out"
  "$BIN" serve --data-dir "$D" --listen 127.0.0.1:$PORT > "$WORK/serve.out" 2> "$WORK/serve.log" &
  SERVER=$!
  for _ in $(seq 1 3000); do grep -q listening "$WORK/serve.out" 2>/dev/null && return; sleep 0.1; done
  echo "server did not start" >&2; cat "$WORK/serve.log" >&2; exit 1
}
stop() { kill -TERM "$SERVER"; wait "$SERVER" || true; }
rss() { awk '/VmRSS|VmHWM/ {printf "%s %.0f MiB  ", $1, $2/1024}' /proc/"$1"/status; echo; }
if [ ! -f "$WORK/key-$N" ]; then   # KEEP=1 runs reuse a filled store
  rm -rf "$WORK"; mkdir -p "$WORK"
  "$BIN" keys create --data-dir "$D" --scope admin --name bench > "$WORK/key-$N" 2>/dev/null
  start
  curl -sf -H "Authorization: Bearer $(cat "$WORK/key-$N")" -H 'content-type: application/json' \
    -d '{"name":"bench"}' "http://127.0.0.1:$PORT/v1/banks" > /dev/null
  stop
  T0=$(date +%s.%N); python3 $HERE/fill_sqlite.py "$D" "$N"; T1=$(date +%s.%N)
  echo "filled the store with $N entries in $(python3 -c "print(f'{$T1-$T0:.0f} s')")"
fi
KEY=$(cat "$WORK/key-$N")
python3 $HERE/gen.py 1000 7 > "$WORK/miss.txt"
T0=$(date +%s.%N); start; T1=$(date +%s.%N)
echo "start with $N entries (open, paged load, index build) until listening: $(python3 -c "print(f'{$T1-$T0:.1f} s')")"
echo -n "memory once listening: "; rss "$SERVER"
sleep 2; echo -n "memory 2 s later: "; rss "$SERVER"
echo "uptime: $(uptime)"
HASHES="$WORK/miss.txt" KEY="$KEY" wrk -t2 -c64 -d"${DURATION}s" --timeout 60s --latency -s "$HERE/lookup.lua" \
  "http://127.0.0.1:$PORT" | grep -E ' (50|99)%|Requests/sec|requests in|Non-2xx|timeout'
if [ -n "${BATCH_RADIUS-31}" ]; then
  python3 - "${BATCH_RADIUS-31}" > "$WORK/batch.json" <<'PY'
import json, random, sys
rnd = random.Random(3)
print(json.dumps({"hashes": ["%064x" % rnd.getrandbits(256) for _ in range(10000)], "radius": int(sys.argv[1])}))
PY
  echo -n "batch lookups at radius ${BATCH_RADIUS-31}: "
  BODY="$WORK/batch.json" KEY="$KEY" wrk -t2 -c2 -d"${DURATION}s" --timeout 60s --latency -s "$HERE/batch.lua" \
    "http://127.0.0.1:$PORT" | awk '/Requests\/sec/ {r=$2} / 50%/ {p50=$2} END {printf "%.0f hashes/s (p50 %s per request)\n", r * 10000, p50}'
fi
echo -n "memory after the runs: "; rss "$SERVER"
stop
