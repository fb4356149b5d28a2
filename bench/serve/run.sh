#!/usr/bin/env bash
# Load benchmark of `consentry serve` on loopback with wrk (Debian: apt-get install -y wrk).
#
#   bench/serve/run.sh                 # 1M hashes
#   bench/serve/run.sh 1000000 10000000
#
# For each size N: a fresh SQLite data directory, N random hashes streamed through
# POST /v1/banks/bench/import, the server restarted (so the index is loaded from the store as in
# production), then with wrk (2 threads, DURATION seconds each):
#   - single-hash GET /v1/lookup, random hashes (misses: the usual case on a chat);
#   - single-hash GET /v1/lookup, near-duplicates of loaded hashes (5 bits flipped: every
#     request matches and reads its entry and bank from the store);
#   - POST /v1/lookup with 10,000 random hashes per request;
#   - POST /v1/lookup/image with Telegram-sized JPEGs (/work/corpus resized to <= 1280 px);
# and the server's resident memory (VmRSS, VmHWM) after the load and after the runs.
# wrk and the server share the 2 cores: figures are lower bounds of what the server does alone.
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZES=("${@:-1000000}")
DURATION=${DURATION:-15}
CORPUS=${CORPUS:-/work/corpus}
WORK=${WORK:-/tmp/consentry-bench-serve}
PORT=${PORT:-18080}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
if [ -z "${BIN:-}" ]; then cargo build --release -q -p consentry; BIN=$PWD/target/release/consentry; fi
rm -rf "$WORK"; mkdir -p "$WORK"
HERE=bench/serve

# Telegram-sized JPEGs: Telegram re-encodes photos to at most 1280 px on the long side (Pillow).
mkdir -p "$WORK/jpeg"
python3 - "$CORPUS" "$WORK/jpeg" <<'PY'
import sys, glob, os
from PIL import Image, ImageOps
for f in sorted(glob.glob(os.path.join(sys.argv[1], "*.jpg")))[:40]:
    im = ImageOps.exif_transpose(Image.open(f)).convert("RGB")
    im.thumbnail((1280, 1280))
    im.save(os.path.join(sys.argv[2], os.path.basename(f)), quality=87)
PY
ls "$WORK"/jpeg/*.jpg > "$WORK/images.txt"
python3 $HERE/gen.py 1000 7 > "$WORK/miss.txt"
python3 - "$WORK/miss.txt" > "$WORK/batch.json" <<'PY'
import json, sys, random
hs = [l.strip() for l in open(sys.argv[1])]
r = random.Random(3)
print(json.dumps({"hashes": [("%064x" % r.getrandbits(256)) for _ in range(10000)]}))
PY

rss() { awk '/VmRSS|VmHWM/ {printf "%s %.0f MiB  ", $1, $2/1024}' /proc/"$1"/status; echo; }
start() {
  rm -f "$WORK/serve.out"
  "$BIN" serve --data-dir "$1" --listen 127.0.0.1:$PORT --case-rate-limit 0 > "$WORK/serve.out" 2> "$WORK/serve.log" &
  SERVER=$!
  for _ in $(seq 1 600); do grep -q listening "$WORK/serve.out" 2>/dev/null && return; sleep 0.2; done
  echo "server did not start" >&2; cat "$WORK/serve.log" >&2; exit 1
}
stop() { kill -TERM "$SERVER"; wait "$SERVER" || true; }
bench() { # name, connections, lua, env...
  local name=$1 conns=$2 lua=$3; shift 3
  echo "### $name ($conns connections)"
  env "$@" wrk -t2 -c"$conns" -d"${DURATION}s" --timeout 60s --latency -s "$HERE/$lua" "http://127.0.0.1:$PORT" | sed -n '/Latency Distribution/,/Transfer/p' | grep -E ' (50|99)%|Requests/sec|requests in|Non-2xx|timeout'
}

for N in "${SIZES[@]}"; do
  echo "## N = $N"
  D="$WORK/data-$N"
  KEY=$("$BIN" keys create --data-dir "$D" --scope admin --name bench 2>/dev/null)
  start "$D"
  curl -sf -H "Authorization: Bearer $KEY" -H 'content-type: application/json' -d '{"name":"bench"}' "http://127.0.0.1:$PORT/v1/banks" > /dev/null
  python3 $HERE/gen.py "$N" 1 > "$WORK/hashes.txt"
  T0=$(date +%s.%N)
  curl -sf -H "Authorization: Bearer $KEY" -H 'content-type: text/csv' -X POST -T "$WORK/hashes.txt" \
    "http://127.0.0.1:$PORT/v1/banks/bench/import" | python3 -c 'import json,sys; v=json.load(sys.stdin); print("import: added", v["added"], "rejected", v["rejected_total"])'
  T1=$(date +%s.%N)
  echo "import: $(python3 -c "print(f'{$N/($T1-$T0):,.0f} lines/s ({$T1-$T0:.1f} s)')")"
  stop
  T0=$(date +%s.%N); start "$D"; T1=$(date +%s.%N)
  echo "restart with $N entries loaded: $(python3 -c "print(f'{$T1-$T0:.1f} s')")"
  echo -n "memory after load: "; rss "$SERVER"
  shuf -n 1000 --random-source=<(yes) "$WORK/hashes.txt" | python3 $HERE/near.py 5 9 > "$WORK/hit.txt"
  bench "GET /v1/lookup, random hashes (no match)" 64 lookup.lua HASHES="$WORK/miss.txt" KEY="$KEY"
  bench "GET /v1/lookup, near-duplicates (every request matches)" 64 lookup.lua HASHES="$WORK/hit.txt" KEY="$KEY"
  bench "POST /v1/lookup, 10,000 hashes per request" 2 batch.lua BODY="$WORK/batch.json" KEY="$KEY"
  bench "POST /v1/lookup/image, Telegram-sized JPEGs" 8 image.lua IMAGES="$WORK/images.txt" KEY="$KEY"
  echo -n "memory after the runs: "; rss "$SERVER"
  stop
  # The same single lookups without the per-request info log lines (RUST_LOG=warn).
  RUST_LOG=warn start "$D"
  bench "GET /v1/lookup, random hashes (no match), RUST_LOG=warn" 64 lookup.lua HASHES="$WORK/miss.txt" KEY="$KEY"
  stop
  rm -rf "$D" "$WORK/hashes.txt"
done
