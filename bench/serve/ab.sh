#!/usr/bin/env bash
# A/B of two `consentry` binaries on the same data: single-hash lookups (no match, and
# near-duplicates that always match), alternating A, B, A, B ... so that a noisy shared
# machine hits both alike. Compare the ratios, not the absolute figures.
#
#   bench/serve/ab.sh BIN_A BIN_B [N] [ROUNDS]      # N hashes (default 1,000,000), ROUNDS (2)
#   MODE=batch RADII="0 8 31" bench/serve/ab.sh ...  # POST /v1/lookup, 10,000 random hashes per
#                                                    # request, 2 connections: hashes/s per radius
#
# The data directory is filled once through BIN_A's import; both binaries must read its schema.
set -euo pipefail
cd "$(dirname "$0")/../.."
A=$1 B=$2 N=${3:-1000000} ROUNDS=${4:-2}
DURATION=${DURATION:-10}
WORK=${WORK:-/tmp/consentry-bench-ab}
PORT=${PORT:-18081}
HERE=bench/serve
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
rm -rf "$WORK"; mkdir -p "$WORK"
D="$WORK/data"
python3 $HERE/gen.py 1000 7 > "$WORK/miss.txt"
python3 $HERE/gen.py "$N" 1 > "$WORK/hashes.txt"
for r in ${RADII:-0 8 31}; do
  python3 - "$r" > "$WORK/batch$r.json" <<'PY'
import json, sys, random
rnd = random.Random(3)
print(json.dumps({"hashes": ["%064x" % rnd.getrandbits(256) for _ in range(10000)], "radius": int(sys.argv[1])}))
PY
done
shuf -n 1000 --random-source=<(yes) "$WORK/hashes.txt" | python3 $HERE/near.py 5 9 > "$WORK/hit.txt"
KEY=$("$A" keys create --data-dir "$D" --scope admin --name bench 2>/dev/null)

. "$HERE/ab_lib.sh"

hps() { # radius: hashes/s through the batch endpoint
  BODY=$WORK/batch$1.json KEY=$KEY wrk -t2 -c2 -d"${DURATION}s" --timeout 60s --latency -s "$HERE/batch.lua" "http://127.0.0.1:$PORT" \
    | awk '/Requests\/sec/ {r=$2} / 50%/ {p50=$2} END {printf "%\047.0f hashes/s (p50 %s)", r * 10000, p50}'
}

start "$A" "$D"
curl -sf -H "Authorization: Bearer $KEY" -H 'content-type: application/json' -d '{"name":"bench"}' "http://127.0.0.1:$PORT/v1/banks" > /dev/null
curl -sf -H "Authorization: Bearer $KEY" -H 'content-type: text/csv' -X POST -T "$WORK/hashes.txt" \
  "http://127.0.0.1:$PORT/v1/banks/bench/import" > /dev/null
stop
if [ "${MODE:-single}" = batch ]; then
  echo "| round | binary |$(for r in ${RADII:-0 8 31}; do echo -n " radius $r |"; done)"
  echo "|---|---|$(for r in ${RADII:-0 8 31}; do echo -n "---|"; done)"
else
  echo "| round | binary | no match | every request matches |"
  echo "|---|---|---|---|"
fi
for r in $(seq 1 "$ROUNDS"); do
  for which in A B; do
    if [ $which = A ]; then bin=$A; else bin=$B; fi
    start "$bin" "$D"
    if [ "${MODE:-single}" = batch ]; then
      row=""; for rad in ${RADII:-0 8 31}; do row="$row $(hps "$rad") |"; done
      stop
      echo "| $r | $which |$row"
    else
      miss=$(rps "$WORK/miss.txt"); hit=$(rps "$WORK/hit.txt")
      stop
      echo "| $r | $which | $miss | $hit |"
    fi
  done
done
rm -rf "$WORK"
