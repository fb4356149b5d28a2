#!/usr/bin/env bash
# A/B of two `consentry` binaries whose store schemas differ (the newer one migrates the data
# directory, which the older then refuses): single-hash lookups, no match and every request
# matching, each binary on its own copy of one data directory filled through OLD's import, the
# order alternating per round (new first in odd rounds). Compare the ratios, not the figures.
#
#   bench/serve/ab_copies.sh OLD NEW [N] [ROUNDS]      # N hashes (default 1,000,000), ROUNDS (4)
set -euo pipefail
cd "$(dirname "$0")/../.."
OLD=$1 NEW=$2 N=${3:-1000000} ROUNDS=${4:-4}
DURATION=${DURATION:-10}
WORK=${WORK:-/tmp/consentry-bench-ab-copies}
W=$WORK
PORT=${PORT:-18082}
HERE=bench/serve
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
rm -rf "$W"; mkdir -p "$W"
python3 $HERE/gen.py 1000 7 > "$W/miss.txt"
python3 $HERE/gen.py "$N" 1 > "$W/hashes.txt"
shuf -n 1000 --random-source=<(yes) "$W/hashes.txt" | python3 $HERE/near.py 5 9 > "$W/hit.txt"
KEY=$("$OLD" keys create --data-dir "$W/old" --scope admin --name bench 2>/dev/null)
. "$HERE/ab_lib.sh"
start "$OLD" "$W/old"
curl -sf -H "Authorization: Bearer $KEY" -H 'content-type: application/json' -d '{"name":"bench"}' "http://127.0.0.1:$PORT/v1/banks" > /dev/null
curl -sf -H "Authorization: Bearer $KEY" -H 'content-type: text/csv' -X POST -T "$W/hashes.txt" \
  "http://127.0.0.1:$PORT/v1/banks/bench/import" > /dev/null
stop
cp -a "$W/old" "$W/new"
echo "| round | binary | no match | every request matches |"
echo "|---|---|---|---|"
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then order="new old"; else order="old new"; fi
  for which in $order; do
    if [ "$which" = new ]; then start "$NEW" "$W/new"; else start "$OLD" "$W/old"; fi
    m=$(rps "$W/miss.txt"); h=$(rps "$W/hit.txt")
    stop
    echo "| $r | $which | $m | $h |"
  done
done
rm -rf "$W"
