"""Writes N random PDQ-like hashes (64 hex digits, 256 random bits) to stdout, seeded."""
import random, sys
n, seed = int(sys.argv[1]), int(sys.argv[2])
r = random.Random(seed)
out = sys.stdout
buf = []
for i in range(n):
    buf.append("%064x\n" % r.getrandbits(256))
    if len(buf) == 100000:
        out.write("".join(buf)); buf = []
out.write("".join(buf))
