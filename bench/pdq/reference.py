#!/usr/bin/env python3
"""Times Meta's reference PDQ pipeline as HMA and python-threatexchange run it:
Pillow decodes to 8-bit RGB, PyPI `pdqhash` (Meta's C++ PDQ) hashes it.

usage: reference.py FILELIST OUT.jsonl      (REPS env var: best of N, default 3)

Writes one JSON line per image and method, like pdq-bench:
  reference        decode (bytes already in memory) + convert("RGB") + hash
  reference-hash   hash only, on the RGB array already in memory
"""
import io, json, os, sys, time
import numpy as np
from PIL import Image
import pdqhash

Image.MAX_IMAGE_PIXELS = None


def to_hex(bits):
    return "%064x" % int("".join(str(int(b)) for b in bits), 2)


def best_of(reps, f):
    best, r = float("inf"), None
    for _ in range(reps):
        t = time.perf_counter()
        r = f()
        best = min(best, time.perf_counter() - t)
    return best, r


def pipeline(data):
    im = Image.open(io.BytesIO(data))
    a = np.ascontiguousarray(np.asarray(im.convert("RGB")))
    return pdqhash.compute(a), a


def main():
    files, out = sys.argv[1], sys.argv[2]
    reps = int(os.environ.get("REPS", "3"))
    with open(out, "w") as o:
        for path in open(files).read().split("\n"):
            if not path:
                continue
            data = open(path, "rb").read()
            t, ((h, q), a) = best_of(reps, lambda: pipeline(data))
            w, hgt = a.shape[1], a.shape[0]
            o.write(json.dumps({"path": path, "method": "reference", "secs": t, "hash": to_hex(h), "width": w, "height": hgt}) + "\n")
            t, (h, q) = best_of(reps, lambda: pdqhash.compute(a))
            o.write(json.dumps({"path": path, "method": "reference-hash", "secs": t, "hash": to_hex(h), "width": w, "height": hgt}) + "\n")


if __name__ == "__main__":
    main()
