#!/usr/bin/env python3
# python3 bench/derive/sky.py  (needs PyPI pdqhash, numpy, Pillow)
# Synthetic featureless top bands (sky-like: smooth vertical/horizontal gradients, mild noise,
# JPEG q87): do unrelated ones collide under PDQ at distance <= 31, by band quality?
import io, itertools, numpy as np, pdqhash
from PIL import Image
rng = np.random.default_rng(5)
bands = []
for i in range(300):
    w, h = 1280, 256
    top, bot = rng.uniform(60, 250, 3), rng.uniform(60, 250, 3)
    t = np.linspace(0, 1, h)[:, None, None]
    img = top * (1 - t) + bot * t + np.zeros((h, w, 3))
    sx = rng.uniform(-30, 30)
    img += (np.linspace(-1, 1, w)[None, :, None] ** 2) * sx * rng.uniform(0, 1)  # vignette-like
    img += rng.normal(0, rng.choice([0.0, 1.0, 2.5]), img.shape)
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    b = io.BytesIO(); im.save(b, "JPEG", quality=87); b.seek(0)
    a = np.asarray(Image.open(b).convert("RGB"))
    hsh, q = pdqhash.compute(a)
    bands.append((np.packbits(hsh.astype(np.uint8)), q))
qs = np.array([q for _, q in bands])
print("quality percentiles 10/50/90/max:", np.percentile(qs, [10, 50, 90]), qs.max())
for thr in [0, 10, 20, 30, 50]:
    ok = [b for b in bands if b[1] >= thr]
    pairs = coll = 0
    for (x, _), (y, _) in itertools.combinations(ok, 2):
        pairs += 1
        coll += int(np.unpackbits(x ^ y).sum()) <= 31
    print(f"q>={thr}: {len(ok)} bands, {pairs} pairs, {coll} within 31")
