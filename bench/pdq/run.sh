#!/usr/bin/env bash
# bench/pdq/run.sh CORPUS_DIR [OUT_DIR]
# Times PDQ hashing of every image in CORPUS_DIR (see ../shared/corpus/build-corpus.sh) on one
# thread, side by side in one run: Meta's reference (Pillow + PyPI pdqhash), the Rust pdqhash
# crate, consentry exact and fast; decode+hash and hash-only. Prints the Markdown table.
set -euo pipefail
corpus=${1:?usage: run.sh CORPUS_DIR [OUT_DIR]}
here=$(cd "$(dirname "$0")" && pwd)
out=${2:-$here/../out/pdq}
mkdir -p "$out"
python3 -c "import pdqhash, PIL, numpy" 2>/dev/null || python3 -m pip install -q pdqhash pillow numpy
(cd "$here/../.." && cargo build -q --release -p pdq-bench)
find "$corpus" -maxdepth 1 -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' \) | sort > "$out/files.txt"
echo "$(wc -l < "$out/files.txt") images; pinned to one core" >&2
taskset -c 0 python3 "$here/reference.py" "$out/files.txt" "$out/reference.jsonl"
taskset -c 0 "$here/../../target/release/pdq-bench" "$out/files.txt" "$out/consentry.jsonl"
python3 "$here/table.py" "$out/reference.jsonl" "$out/consentry.jsonl"
