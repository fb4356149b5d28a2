#!/usr/bin/env python3
"""The evidence behind false derive matches between photos of different corpus packages.

    CONSENTRY_EVAL_EVIDENCE=1 consentry-eval /work/corpus ... 2> RUN.log
    python3 bench/derive/evidence.py RUN.log [/work/corpus] [--all]

Reads the harness's `query` and `evidence` lines (see consentry-eval's derive_matcher.rs) and, per
matcher, lists each false match between photos of different packages (certainly different photos;
for undress copies with a pasted region, the donor photo's package must differ too)
with the rule that fired: global PDQ (distance), top band (band distance), keypoints (inliers,
score, mirrored). `--all` lists every false match, same package included.
"""
import collections
import csv
import os
import sys

args = [a for a in sys.argv[1:] if not a.startswith("--")]
log = args[0]
corpus = args[1] if len(args) > 1 else "/work/corpus"
show_all = "--all" in sys.argv
package = {}
with open(os.path.join(corpus, "manifest.tsv")) as f:
    for row in csv.DictReader(f, delimiter="\t"):
        package[row["file"]] = row["package"]
queries = {}
names = {}
hits = collections.defaultdict(list)
with open(log) as f:
    for line in f:
        p = line.rstrip("\n").split("\t")
        if p[0] == "query":
            queries[p[1]] = (p[2], p[3], p[4], p[5] if len(p) > 5 else "-")
            names[p[2]] = p[3]
        elif p[0] == "evidence":
            hits[p[2]].append(p[1:])
for matcher, hs in hits.items():
    rows = []
    for key, _, pid, pdq, band, inl, score, mirrored in hs:
        src_id, src, label, donor = queries[key]
        if pid == src_id:
            continue
        other = names.get(pid, pid)
        same = package.get(other) == package.get(src) or (donor != "-" and package.get(other) == package.get(donor))
        if same and not show_all:
            continue
        rule = "pdq" if pdq != "-" else ("band" if band != "-" and int(score) == 0 else "keypoints")
        rows.append((rule, int(score), int(inl), band, pdq, mirrored, label, src, other, same))
    by_rule = collections.Counter(r[0] for r in rows)
    print(f"## {matcher}: {len(rows)} false matches{'' if show_all else ' between packages'}; by rule: {dict(by_rule)}")
    pairs = collections.Counter((r[7], r[8]) for r in rows)
    print("pairs of photos:", len(pairs), "; most frequent:", ", ".join(f"{a}->{b} {n}" for (a, b), n in pairs.most_common(8)))
    print("rule\tscore\tinliers\tband\tpdq\tmirrored\ttransform\tquery source\tprotected")
    for r in sorted(rows, key=lambda r: (r[0], -r[1])):
        print("\t".join(str(x) for x in r[:9]))
