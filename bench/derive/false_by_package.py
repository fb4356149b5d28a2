#!/usr/bin/env python3
"""False matches of a `consentry-eval --tsv` run, split by the corpus package of the two photos.

    python3 bench/derive/false_by_package.py bench/out/derivatives.tsv [/work/corpus]

A pair of photos from different packages (manifest.tsv, column `package`) is certainly two
different photos; a pair from one package may be the same photo (video frames, re-projections,
thumbnails), so the different-package count is a lower bound of the false matches between
different photos. Rates are over all query x protected pairs of the run.
"""
import collections
import csv
import os
import sys

tsv = sys.argv[1]
corpus = sys.argv[2] if len(sys.argv) > 2 else "/work/corpus"
package = {}
with open(os.path.join(corpus, "manifest.tsv")) as f:
    for row in csv.DictReader(f, delimiter="\t"):
        package[row["file"]] = row["package"]
with open(tsv) as f:
    rows = list(csv.reader(f, delimiter="\t"))
header, rows = rows[0], rows[1:]
protected = {r[1] for r in rows if r[2] == "true"}
pairs_total = len(rows) * len(protected)
for col in range(3, len(header)):
    same = diff = 0
    pairs = collections.Counter()
    for r in rows:
        source = r[1]
        for m in filter(None, r[col].split(",")):
            if m == source:
                continue
            if package[m] == package[source]:
                same += 1
            else:
                diff += 1
                pairs[(source, m)] += 1
    top = ", ".join(f"{a} -> {b}: {n}" for (a, b), n in pairs.most_common(4))
    print(
        f"{header[col]}: same package {same}, different packages {diff} "
        f"({diff / pairs_total:.1e} per query x protected pair; {len(pairs)} pairs of photos; top: {top})"
    )
