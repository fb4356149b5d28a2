"""Fills the SQLite store of a stopped `consentry serve` with N random PDQ entries in bank `bench`,
directly (the HTTP import runs at ~7k lines/s; this is for measuring load time and memory at 10M).
Usage: python3 fill_sqlite.py DATA_DIR N"""
import os, random, sqlite3, sys, time
db = sqlite3.connect(os.path.join(sys.argv[1], "consentry.db"))
n = int(sys.argv[2])
bank = db.execute("SELECT id FROM banks WHERE name = 'bench'").fetchone()[0]
r = random.Random(11)
now = int(time.time() * 1000)
db.execute("BEGIN")
batch = []
for i in range(n):
    batch.append((bank, r.getrandbits(256).to_bytes(32, "big"), now))
    if len(batch) == 200000:
        db.executemany("INSERT INTO entries (bank_id, signal_type, value, source, added_at) VALUES (?, 'pdq', ?, 'import', ?)", batch)
        batch = []
db.executemany("INSERT INTO entries (bank_id, signal_type, value, source, added_at) VALUES (?, 'pdq', ?, 'import', ?)", batch)
db.commit()
print("entries:", db.execute("SELECT count(*) FROM entries").fetchone()[0])
