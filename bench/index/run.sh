#!/usr/bin/env bash
# consentry-index benchmark, side by side with FAISS (PyPI faiss-cpu) and a brute-force scan.
#
#   bench/index/run.sh                      # N = 1M, 10M, 100M (100M only if >= 20 GiB is available)
#   bench/index/run.sh 1000000 10000000     # chosen sizes
#
# Everything runs in one go on the same generated files (bench/out/index/), one engine at a
# time; results: bench/out/index/results.jsonl and the markdown table bench/out/index/table.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=bench/out/index
mkdir -p "$OUT"
CORPUS=${CORPUS:-bench/out/corpus.tsv}
CORPUS_DIR=${CORPUS_DIR:-/work/corpus}
if [ ! -s "$CORPUS" ]; then
    # real-photo PDQ hashes: `consentry hash` if it works, else Meta's C++ PDQ via PyPI pdqhash
    if cargo run --release -q -p consentry -- hash "$CORPUS_DIR" > "$CORPUS.tmp" 2>/dev/null && [ -s "$CORPUS.tmp" ]; then
        mv "$CORPUS.tmp" "$CORPUS"
    else
        rm -f "$CORPUS.tmp"
        python3 bench/index/hash_corpus.py "$CORPUS_DIR" "$CORPUS"
    fi
fi
cargo build --release -q -p consentry-index --example bench_index
B=target/release/examples/bench_index
RES=$OUT/results.jsonl
: > "$RES"
NS=${*:-1000000 10000000 100000000}
for N in $NS; do
    if [ "$N" -ge 50000000 ]; then
        avail=$(awk '/MemAvailable/ {print int($2/1048576)}' /proc/meminfo)
        if [ "$avail" -lt 20 ]; then
            echo "{\"engine\":\"note\",\"n\":$N,\"note\":\"skipped: only ${avail} GiB available\"}" >> "$RES"
            continue
        fi
    fi
    case $N in
        1000000) T=300 FQ=400 MQ=400 ;;
        10000000) T=100 FQ=100 MQ=100 ;;
        *) T=20 FQ=20 MQ=0 ;;
    esac
    echo "== N=$N" >&2
    # 4,000 queries: searched as one batch (the join takes blocks of 1,024 to 16,384 queries),
    # its tables split between the threads
    $B gen "$CORPUS" "$N" 4000 "$OUT"
    $B run "$OUT" "$N" --truth "$T" >> "$RES"
    if [ "$N" = 1000000 ]; then
        # what 10,000 identical all-zero hashes do (accepted on purpose here)
        $B run "$OUT" "$N" --truth 50 --zeros 10000 >> "$RES"
    fi
    python3 bench/index/faiss_bench.py "$OUT" "$N" flat "$FQ" >> "$RES"
    if [ "$MQ" -gt 0 ]; then
        python3 bench/index/faiss_bench.py "$OUT" "$N" multihash "$MQ" >> "$RES"
    else
        echo "{\"engine\":\"faiss-multihash\",\"n\":$N,\"note\":\"not run: at 10M it holds 2.3 GB and builds in ~70 s, so 100M extrapolates to ~23 GB (more than this machine has free next to the data) and ~12 min of build\"}" >> "$RES"
    fi
    rm -f "$OUT/base_$N.u8"
done
python3 bench/index/table.py "$RES" > "$OUT/table.md"
cat "$OUT/table.md"
