#!/usr/bin/env python3
"""Recall per transform of two or more matcher columns of `consentry-eval --tsv` runs, side by side.

    python3 bench/derive/compare_rows.py RUN.tsv[:COLUMN] [RUN.tsv[:COLUMN] ...] [--all]

Each argument names a TSV and, after a colon, a matcher column (its header, e.g. `derive(s≥64)`,
or its 0-based number among the matcher columns; the first matcher column if left out), so two
columns of one run or the same column of two runs on the same split can be compared. Prints the
overall recall of each, then the rows (transform@strength, in the harness's order) whose recall
differs between them, or every row with `--all`. Recall: share of the queries made from a
protected photo whose match set holds that photo.
"""
import csv
import sys


def load(spec):
    path, _, col = spec.partition(":")
    with open(path) as f:
        rows = list(csv.reader(f, delimiter="\t"))
    head = rows[0]
    matchers = head[4:]
    if col == "":
        k = 0
    elif col.isdigit():
        k = int(col)
    elif col in matchers:
        k = matchers.index(col)
    else:
        sys.exit(f"{path}: no column {col!r} (columns: {', '.join(matchers)})")
    hit, total, order = {}, {}, []
    for r in rows[1:]:
        if r[2] != "true":
            continue
        t = r[0]
        if t not in total:
            order.append(t)
            total[t] = hit[t] = 0
        total[t] += 1
        hit[t] += r[1] in r[4 + k].split(",")
    return f"{path}:{matchers[k]}", order, hit, total


def main():
    args = [a for a in sys.argv[1:] if a != "--all"]
    if not args:
        sys.exit(__doc__)
    runs = [load(a) for a in args]
    order = runs[0][1]
    for name, _, hit, total in runs:
        n = sum(total[t] for t in order if t in total)
        h = sum(hit[t] for t in order if t in total)
        print(f"{name}: {100 * h / n:.1f} % of {n} queries")
    print("| transform | " + " | ".join(f"({i + 1})" for i in range(len(runs))) + " |")
    print("|---|" + "---:|" * len(runs))
    for t in order:
        vals = [100 * r[2][t] / r[3][t] if t in r[3] else float("nan") for r in runs]
        if "--all" in sys.argv or len(set(vals)) > 1:
            print(f"| {t} | " + " | ".join(f"{v:.1f}" for v in vals) + " |")


main()
