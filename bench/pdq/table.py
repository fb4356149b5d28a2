#!/usr/bin/env python3
"""Turns the JSON lines of pdq-bench and reference.py into the Markdown table of bench/RESULTS.md.

usage: table.py RESULTS.jsonl...
Size classes (by pixels of the original): small = longest side < 640; telegram = longest side
640..1280; medium = the rest under 4 MP; large = 4 MP and more. Images/s per core is the number of
images divided by the sum of their best times on one thread.
"""
import json, sys
from collections import defaultdict


def size_class(w, h):
    if w * h >= 4_000_000:
        return "large (>= 4 MP)"
    m = max(w, h)
    if m < 640:
        return "small (< 640 px)"
    if m <= 1280:
        return "telegram (640-1280 px)"
    return "medium (> 1280 px, < 4 MP)"


CLASSES = ["small (< 640 px)", "telegram (640-1280 px)", "medium (> 1280 px, < 4 MP)", "large (>= 4 MP)"]
DECODE = [("reference", "Meta reference: Pillow + pdqhash (C++)"), ("pdqhash-crate", "Rust `pdqhash` crate (image 0.23)"),
          ("consentry-exact", "consentry exact"), ("consentry-fast", "consentry fast (default)")]
HASH = [("reference-hash", "Meta reference C++ (pdqhash)"), ("pdqhash-crate-hash", "Rust `pdqhash` crate"),
        ("consentry-pdq", "consentry-pdq")]


def main():
    rows = [json.loads(l) for f in sys.argv[1:] for l in open(f) if l.strip()]
    dims = {}
    for r in rows:
        if r["method"] == "reference":
            dims[r["path"]] = (r["width"], r["height"])
    secs = defaultdict(lambda: defaultdict(float))
    count = defaultdict(lambda: defaultdict(int))
    paths = defaultdict(set)
    for r in rows:
        paths[r["method"]].add(r["path"])
    common = set.intersection(*(paths[m] for m, _ in DECODE + HASH if m in paths))
    for r in rows:
        if r["path"] not in common:
            continue
        c = size_class(*dims[r["path"]])
        secs[r["method"]][c] += r["secs"]
        count[r["method"]][c] += 1
    for title, methods, base in [("Decode + hash (bytes in memory)", DECODE, "reference"),
                                 ("Hash only (RGB pixels in memory)", HASH, "reference-hash")]:
        print(f"\n**{title}**: images/s on one thread (× the reference)\n")
        print("| method | " + " | ".join(f"{c}, n={count[base][c]}" for c in CLASSES) + " |")
        print("|---|" + "---|" * len(CLASSES))
        for m, label in methods:
            cells = []
            for c in CLASSES:
                if not count[m][c]:
                    cells.append("-")
                    continue
                ips = count[m][c] / secs[m][c]
                ratio = secs[base][c] / secs[m][c]
                cells.append(f"{ips:.1f} ({ratio:.1f}×)")
            print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
