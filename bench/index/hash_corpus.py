#!/usr/bin/env python3
"""Hash a directory of photos with PyPI pdqhash (Meta's C++ PDQ) -> TSV hash<TAB>quality<TAB>path.
Used only when `consentry hash` is not available; same output shape as `consentry hash`."""
import sys, os
import numpy as np, pdqhash
from PIL import Image
d, out = sys.argv[1], sys.argv[2]
with open(out, "w") as f:
    for name in sorted(os.listdir(d)):
        p = os.path.join(d, name)
        try:
            img = np.asarray(Image.open(p).convert("RGB"))
        except Exception:
            continue
        bits, q = pdqhash.compute(img)
        # pdqhash's bit array is in hex order (index 0 = most significant bit of the
        # 64-hex-digit text); checked equal to `consentry hash` on the corpus
        v = 0
        for k in range(256):
            if bits[k]:
                v |= 1 << (255 - k)
        f.write(f"{v:064x}\t{q}\t{p}\n")
