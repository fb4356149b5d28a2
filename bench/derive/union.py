#!/usr/bin/env python3
"""Recall and false matches of the union of two matchers' columns in a consentry-eval TSV
(`--tsv`): a query matches under A|B when either column lists the protected photo.

    python3 bench/derive/union.py RUN.tsv 'derive(s≥64)' 'PDQ top 20%≤31' [ROW_PREFIX...]
    python3 bench/derive/union.py RUN.tsv 'derive(s≥64)' OTHER_RUN.tsv::'PDQ top 20%≤31'   # same seed,
        # the rows of OTHER_RUN only (it may have been run on fewer transforms)

Prints, per transform row (or only rows starting with a ROW_PREFIX), recall of A, B and A|B in %,
then the false matches of each over all rows, split into all pairs and pairs whose two photos
come from different corpus packages (the corpus manifest's `package` column, if
/work/corpus/manifest.tsv is there).
"""
import csv, os, sys
from collections import defaultdict

path, a, b, *prefixes = sys.argv[1:]
rows = list(csv.DictReader(open(path, encoding="utf-8"), delimiter="\t"))
if "::" in b:
    # B from another run with the same seed and protected set (possibly fewer transforms, with
    # --transforms): OTHER.tsv::COLUMN; only the rows of that run are compared.
    other, b = b.split("::", 1)
    orows = {(o["transform"], o["source"]): o for o in csv.DictReader(open(other, encoding="utf-8"), delimiter="\t")}
    rows = [r for r in rows if (r["transform"], r["source"]) in orows]
    for r in rows:
        o = orows[(r["transform"], r["source"])]
        assert r["protected"] == o["protected"], "the runs' protected sets differ"
        r[b] = o.get(b, "")
pkg = {}
man = os.path.join(os.environ.get("CORPUS", "/work/corpus"), "manifest.tsv")
if os.path.exists(man):
    for r in csv.DictReader(open(man, encoding="utf-8"), delimiter="\t"):
        name = r.get("file") or r.get("name") or r.get("path")
        if name:
            pkg[os.path.basename(name)] = r.get("package", "")
hit = defaultdict(lambda: [0, 0, 0, 0])  # per transform: queries, A, B, A|B
false = {k: [0, 0] for k in ("A", "B", "A|B")}  # all, different packages
for r in rows:
    t, src, prot = r["transform"], r["source"], r["protected"] == "true"
    ma = set(filter(None, r[a].split(","))) if r.get(a) else set()
    mb = set(filter(None, r[b].split(","))) if r.get(b) else set()
    if prot:
        h = hit[t]
        h[0] += 1
        h[1] += src in ma
        h[2] += src in mb
        h[3] += src in (ma | mb)
    for k, s in (("A", ma), ("B", mb), ("A|B", ma | mb)):
        for m in s - {src}:
            false[k][0] += 1
            if pkg and pkg.get(m) != pkg.get(src):
                false[k][1] += 1
print(f"| transform | {a} | {b} | union |")
print("|---|---:|---:|---:|")
for t, (n, x, y, z) in hit.items():
    if prefixes and not any(t.startswith(p) for p in prefixes):
        continue
    print(f"| {t} | {100*x/n:.1f} | {100*y/n:.1f} | {100*z/n:.1f} |")
tot = [sum(h[i] for h in hit.values()) for i in range(4)]
print(f"| **all** | {100*tot[1]/tot[0]:.1f} | {100*tot[2]/tot[0]:.1f} | {100*tot[3]/tot[0]:.1f} |")
for k, (n, d) in false.items():
    print(f"false matches {k}: {n} (different packages: {d if pkg else 'no manifest'})")
