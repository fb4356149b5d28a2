#!/usr/bin/env bash
# Telegram bot benchmark (issue 5): fake Bot API server on loopback, 1M protected hashes,
# Telegram-sized photos from the corpus. Usage: bench/telegram/run.sh [CORPUS] [N_HASHES] [POSTS]
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo run --release -q -p consentry-telegram --features fake-api --example bench_telegram -- \
  "${1:-/work/corpus}" "${2:-1000000}" "${3:-2000}"
