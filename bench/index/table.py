#!/usr/bin/env python3
"""results.jsonl -> markdown table."""
import json, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
def f(v, fmt="{:.0f}"):
    return "—" if v is None else fmt.format(v)
print("| N | engine | build s (CPU s) | load s | bytes/entry | q/s 1 thread | p50 µs | p99 µs | q/s all threads | recall | queries |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    n = f"{r['n']/1e6:g}M"
    if "note" in r:
        print(f"| {n} | {r['engine']} | {r['note']} |||||||||")
        continue
    eng = r["engine"] + (f" + {r['zeros']} zero hashes" if r.get("zeros") else "")
    bpe = r.get("heap_bytes_per_entry") or r.get("rss_delta_bytes_per_entry")
    build = f(r.get('build_s'), '{:.2f}') + (f" ({r['build_cpu_s']:.2f})" if 'build_cpu_s' in r else "")
    print(f"| {n} | {eng} | {build} | {f(r.get('load_s'), '{:.2f}')} | {f(bpe, '{:.0f}')} "
          f"| {f(r['qps_1t'])} | {f(r['p50_us'])} | {f(r['p99_us'])} | {f(r['qps_mt'])} | {r['recall']:.4f} | {r['queries']} |")
    if "qps_batch_1t" in r:
        print(f"| {n} | consentry-index, the queries as one batch (join) on 1 thread; all threads query by query "
              f"| — | — | — | {f(r['qps_batch_1t'])} | — | — | {f(r['qps_mt_per_query'])} | — | {r['queries']} |")
    if r["engine"] == "consentry-index" and not r.get("zeros"):
        print(f"| {n} | brute-force scan (Rust, popcount) | — | — | 40 | {f(r['bf_qps_1t'], '{:.1f}')} | {f(r['bf_p50_us'])} "
              f"| {f(r['bf_p99_us'])} | — | 1.0000 | {r['truth_queries']} |")
