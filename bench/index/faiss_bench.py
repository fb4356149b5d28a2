#!/usr/bin/env python3
"""FAISS side of the consentry-index benchmark: same data files, radius 31.

usage: faiss_bench.py OUTDIR N ENGINE NQ   (ENGINE: flat | multihash)
FAISS range_search keeps distances < radius, so radius 32 means "distance <= 31".
MultiHash is configured as Meta's HMA does: IndexBinaryMultiHash(256, 16, 16), nflip = 1.
Recall = sum(min(found, truth)) / sum(truth) with the exact per-query match counts
written by bench_index (checked against brute force there)."""
import json, sys, time
import numpy as np
import faiss

def rss_kb(field="VmRSS:"):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])
    return 0

out, n, engine, nq = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
base = np.fromfile(f"{out}/base_{n}.u8", dtype=np.uint8).reshape(-1, 32)
queries = np.fromfile(f"{out}/queries_{n}.u8", dtype=np.uint8).reshape(-1, 32)[:nq]
truth = np.loadtxt(f"{out}/truth_{n}.txt", dtype=np.int64)[:nq]
threads = faiss.omp_get_max_threads()
rss0 = rss_kb()
t = time.perf_counter()
if engine == "flat":
    index = faiss.IndexBinaryFlat(256)
elif engine == "multihash":
    index = faiss.IndexBinaryMultiHash(256, 16, 16)
    index.nflip = 1
else:
    raise SystemExit(f"unknown engine {engine}")
index.add(base)
build_s = time.perf_counter() - t
rss1 = rss_kb()
del base

faiss.omp_set_num_threads(1)
lat, found = [], []
t = time.perf_counter()
for i in range(len(queries)):
    t0 = time.perf_counter()
    lims, D, I = index.range_search(queries[i:i + 1], 32)
    lat.append((time.perf_counter() - t0) * 1e6)
    found.append(int(lims[1] - lims[0]))
st_s = time.perf_counter() - t
faiss.omp_set_num_threads(threads)
t = time.perf_counter()
lims, D, I = index.range_search(queries, 32)
mt_s = time.perf_counter() - t
found_mt = np.diff(lims)
assert (found_mt == np.array(found)).all()
found = np.array(found)
recall = float(np.minimum(found, truth).sum() / max(truth.sum(), 1))
lat.sort()
print(json.dumps({
    "engine": f"faiss-{engine}", "n": n, "queries": len(queries), "build_s": round(build_s, 3),
    "rss_delta_bytes_per_entry": round((rss1 - rss0) * 1024 / n, 1), "vmhwm_mb": rss_kb("VmHWM:") // 1024,
    "qps_1t": round(len(queries) / st_s, 2), "p50_us": round(lat[len(lat) // 2], 1),
    "p99_us": round(lat[min(len(lat) - 1, round((len(lat) - 1) * 0.99))], 1),
    "threads": threads, "qps_mt": round(len(queries) / mt_s, 2), "recall": round(recall, 6),
    "matched_queries": int((found > 0).sum()), "truth_matched_queries": int((truth > 0).sum()),
}), flush=True)
