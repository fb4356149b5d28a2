#!/usr/bin/env bash
# Property-based tests of the HTTP API against its own /openapi.json: schemathesis (PyPI) drives a
# real `consentry serve` on a scratch SQLite store with every check it has (server errors, status
# codes, content types and reply schemas as documented, schema-valid requests accepted and
# schema-violating ones refused, authentication, stateful sequences).
#
#   fuzz/api/run.sh [SECONDS]        # default 300; the report lands in target/schemathesis/
#
# Nothing is kept: the store lives in a temporary directory removed at exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
budget=${1:-300}
port=${PORT:-18511}
command -v st >/dev/null 2>&1 || pip install -q schemathesis
cargo build --release -q -p consentry
bin=$PWD/target/release/consentry
work=$(mktemp -d)
out=$PWD/target/schemathesis
mkdir -p "$out"
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

key=$("$bin" keys create --data-dir "$work/data" --scope admin --name schemathesis | tail -n 1)
RUST_LOG=warn "$bin" serve --data-dir "$work/data" --listen "127.0.0.1:$port" --case-rate-limit 1000000 \
  > "$out/serve.log" 2>&1 &
pid=$!
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.2; done

# Something for the path parameters to find: a bank with an entry, and a case.
api() { curl -sf -H "Authorization: Bearer $key" -H 'Content-Type: application/json' "$@"; }
hash() { python3 -c 'import random; print("".join(random.choice("0123456789abcdef") for _ in range(64)))'; }
api -d '{"name": "known"}' "http://127.0.0.1:$port/v1/banks" >/dev/null
entry=$(api -d "{\"hash\": \"$(hash)\"}" "http://127.0.0.1:$port/v1/banks/known/entries" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
case=$(api -d "{\"hashes\": [\"$(hash)\"]}" "http://127.0.0.1:$port/v1/cases" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["case_number"])')
cat > "$work/schemathesis.toml" <<TOML
[parameters]
"path.id" = $entry
"path.number" = "$case"
TOML

# (run from target/schemathesis so that its example cache lands there too)
cd "$out"
st --config-file "$work/schemathesis.toml" run "http://127.0.0.1:$port/openapi.json" \
  -H "Authorization: Bearer $key" --checks all --max-time "$budget" -w 2 \
  --report junit --report-dir "$out" | tee "$out/run.log"
