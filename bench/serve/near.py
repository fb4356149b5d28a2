"""Reads hashes on stdin, writes each with `bits` random bits flipped (near-duplicates)."""
import random, sys
bits, seed = int(sys.argv[1]), int(sys.argv[2])
r = random.Random(seed)
for line in sys.stdin:
    h = int(line.strip(), 16)
    for b in r.sample(range(256), bits):
        h ^= 1 << b
    sys.stdout.write("%064x\n" % h)
