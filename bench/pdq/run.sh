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
echo "$(wc -l < "$out/files.txt") images; both pinned to core 0, alternating in chunks of 25 so load changes hit both" >&2
rm -f "$out/reference.jsonl" "$out/consentry.jsonl"
split -l 25 -d -a 3 "$out/files.txt" "$out/chunk."
for chunk in "$out"/chunk.*; do
  taskset -c 0 python3 "$here/reference.py" "$chunk" "$chunk.ref.jsonl"
  taskset -c 0 "$here/../../target/release/pdq-bench" "$chunk" "$chunk.rs.jsonl"
  cat "$chunk.ref.jsonl" >> "$out/reference.jsonl"
  cat "$chunk.rs.jsonl" >> "$out/consentry.jsonl"
  rm -f "$chunk" "$chunk.ref.jsonl" "$chunk.rs.jsonl"
done
python3 "$here/table.py" "$out/reference.jsonl" "$out/consentry.jsonl"
