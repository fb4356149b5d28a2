#!/usr/bin/env python3
"""False matches of a `consentry-eval --tsv` run, split by the corpus package of the photos.

    python3 bench/derive/false_by_package.py bench/out/derivatives.tsv [/work/corpus]

A false match is a query matching a protected photo other than the one it was made from. Each is
put in one of three classes by the corpus package (manifest.tsv, column `package`):
- same package as the query's source: possibly the same photo (video frames, re-projections,
  thumbnails cut from it), possibly not (different photos of one person in a face dataset);
- the donor's package: the query is an undress copy whose replaced region was pasted from a
  donor photo (TSV column `donor`) of the matched photo's package, so the query carries a large
  part of a photo of the same scene (runs written before the `donor` column cannot tell these
  apart from the next class);
- unrelated: neither source nor donor shares the matched photo's package, certainly a match
  between different photos.
Rates are over all query x protected pairs of the run.

Within the same package one group is certainly different photos: dlib's `examples/johns` face crops
(150x150, aligned on the eyes and mouth), different photos of one man, except 000323 / 000325
(John_Salley 000189 / 000192), which are one photo. Matches between two of them (the query's donor
not being the matched photo) are counted apart as "same face, different photos" (checked by eye on
2026-12-05, bench/RESULTS.md: "False matches, looked at one by one").
"""
import collections
import csv
import os
import sys

tsv = sys.argv[1]
corpus = sys.argv[2] if len(sys.argv) > 2 else "/work/corpus"
package = {}
johns = set()
with open(os.path.join(corpus, "manifest.tsv")) as f:
    for row in csv.DictReader(f, delimiter="\t"):
        package[row["file"]] = row["package"]
        if "/examples/johns/" in row["original_path"]:
            johns.add(row["file"])
ONE_PHOTO = {frozenset(["000323.jpg", "000325.jpg"])}
with open(tsv) as f:
    rows = list(csv.reader(f, delimiter="\t"))
header, rows = rows[0], rows[1:]
has_donor = len(header) > 3 and header[3] == "donor"
first = 4 if has_donor else 3
protected = {r[1] for r in rows if r[2] == "true"}
pairs_total = len(rows) * len(protected)
for col in range(first, len(header)):
    counts = collections.Counter()
    pairs = collections.defaultdict(collections.Counter)
    for r in rows:
        source = r[1]
        donor = r[3] if has_donor and r[3] != "-" else None
        for m in filter(None, r[col].split(",")):
            if m == source:
                continue
            if package[m] == package[source]:
                kind = "same package"
                if source in johns and m in johns and frozenset([source, m]) not in ONE_PHOTO and donor != m:
                    counts["same face, different photos"] += 1
                    pairs["same face, different photos"][(source, m)] += 1
            elif donor and package[m] == package[donor]:
                kind = "donor's package"
            else:
                kind = "unrelated"
            counts[kind] += 1
            pairs[kind][(source, m)] += 1
    parts = []
    for kind in ["same package", "same face, different photos", "donor's package", "unrelated"]:
        if kind == "donor's package" and not has_donor:
            continue
        top = ", ".join(f"{a} -> {b}: {n}" for (a, b), n in pairs[kind].most_common(3))
        indent = "    of which " if kind == "same face, different photos" else "  "
        parts.append(
            f"{indent}{kind}: {counts[kind]} ({counts[kind] / pairs_total:.1e} per query x protected pair; "
            f"{len(pairs[kind])} pairs of photos{'; top: ' + top if top else ''})"
        )
    print(f"{header[col]}:")
    print("\n".join(parts))
