# Shared by bench/serve/ab.sh and ab_copies.sh (sourced): a `consentry serve` on 127.0.0.1:$PORT
# with its output in $WORK, and wrk's single-lookup rate. Needs WORK, PORT, HERE, KEY, DURATION.

# start BIN DATA_DIR: runs BIN serve on DATA_DIR and waits until it listens.
start() {
  "$1" serve --data-dir "$2" --listen 127.0.0.1:$PORT --case-rate-limit 0 > "$WORK/serve.out" 2> "$WORK/serve.log" &
  SERVER=$!
  for _ in $(seq 1 600); do grep -q listening "$WORK/serve.out" 2>/dev/null && return; sleep 0.2; done
  echo "server did not start" >&2; cat "$WORK/serve.log" >&2; exit 1
}

# stop: SIGTERM, and wait for the clean exit.
stop() { kill -TERM "$SERVER"; wait "$SERVER" || true; rm -f "$WORK/serve.out"; }

# rps HASHES_FILE: single lookups/s (2 threads, 64 connections) with p50 and p99.
rps() {
  HASHES=$1 KEY=$KEY wrk -t2 -c64 -d"${DURATION}s" --latency -s "$HERE/lookup.lua" "http://127.0.0.1:$PORT" \
    | awk '/Requests\/sec/ {r=$2} / 50%/ {p50=$2} / 99%/ {p99=$2} END {printf "%s req/s (p50 %s, p99 %s)", r, p50, p99}'
}
