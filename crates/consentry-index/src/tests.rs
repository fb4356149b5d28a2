//! Exactness tests: every search is compared with brute force.

use super::*;
use proptest::prelude::*;
use std::path::PathBuf;

/// splitmix64: a small deterministic generator for test data.
pub(crate) struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn hash(&mut self) -> Hash256 {
        Hash256::from_words([self.next(), self.next(), self.next(), self.next()])
    }
    /// `h` with exactly `k` distinct bits flipped.
    pub fn flip(&mut self, h: &Hash256, k: u32) -> Hash256 {
        let mut out = *h;
        let mut done = std::collections::HashSet::new();
        while done.len() < k as usize {
            let b = self.below(256) as u32;
            if done.insert(b) {
                out.flip_bit(b);
            }
        }
        out
    }
}

fn brute(entries: &[(u64, Hash256)], q: &Hash256, r: u32) -> Vec<Match> {
    let mut v: Vec<Match> = entries
        .iter()
        .filter_map(|&(id, h)| {
            let d = h.distance(q);
            (d <= r).then_some(Match { id, hash: h, distance: d })
        })
        .collect();
    sort_matches(&mut v);
    v
}

/// The real-photo PDQ hashes (51 photos × 9 hashes incl. dihedral variants), if present.
fn pdq_vectors() -> Option<Vec<Hash256>> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/pdq-vectors.tsv");
    let text = std::fs::read_to_string(p).ok()?;
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.starts_with("file\t")) {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() > 6 {
            out.push(Hash256::from_hex(f[4]).ok()?);
            for d in f[6].split(',') {
                out.push(Hash256::from_hex(d).ok()?);
            }
        }
    }
    out.sort();
    out.dedup();
    Some(out)
}

/// Realistic entries: real hashes plus random flips 0..64 (clusters of near-duplicates, skewed bits).
fn realistic(seeds: &[Hash256], n: usize, rng: &mut Rng) -> Vec<(u64, Hash256)> {
    (0..n)
        .map(|i| {
            let s = &seeds[rng.below(seeds.len() as u64) as usize];
            let k = rng.below(65) as u32;
            (i as u64, rng.flip(s, k))
        })
        .collect()
}

fn check_segment(
    entries: &[(u64, Hash256)],
    queries: &[Hash256],
    plan: Option<segment::ChunkPlan>,
    radii: &[u32],
) {
    let seg = Segment::build_with(
        entries.iter().map(|e| e.0).collect(),
        entries.iter().map(|e| H(e.1.words())).collect(),
        plan,
    );
    seg.validate().unwrap();
    let mut scratch = Scratch::default();
    for q in queries {
        for &r in radii {
            let mut got = Vec::new();
            seg.search_mih(&q.words(), r, &mut scratch, &mut |p, d| {
                got.push(Match {
                    id: seg.ids.get(p as usize),
                    hash: Hash256::from_words(seg.hashes[p as usize].0),
                    distance: d,
                })
            });
            let n = got.len();
            sort_matches(&mut got);
            got.dedup();
            assert_eq!(n, got.len(), "duplicate results");
            assert_eq!(got, brute(entries, q, r), "radius {r} query {q}");
        }
    }
    // all the queries at once (the batch search's join): each reported once, as brute force;
    // whole, and with the tables split in two or three parts searched one after the other
    let words: Vec<[u64; 4]> = queries.iter().map(Hash256::words).collect();
    let mut js = segment::JoinScratch::default();
    for of in 1..=3 {
        for &r in radii {
            let mut got = vec![Vec::new(); queries.len()];
            for k in 0..of {
                seg.search_join(&words, r, segment::Part { k, of }, &mut js, &mut |qi, p, d| {
                    got[qi as usize].push(Match {
                        id: seg.ids.get(p as usize),
                        hash: Hash256::from_words(seg.hashes[p as usize].0),
                        distance: d,
                    })
                });
            }
            for (q, g) in queries.iter().zip(&mut got) {
                let n = g.len();
                sort_matches(g);
                g.dedup();
                assert_eq!(n, g.len(), "duplicate results (join in {of} parts)");
                assert_eq!(*g, brute(entries, q, r), "join in {of} parts: radius {r} query {q}");
            }
        }
    }
}

#[test]
fn mih_exact_on_uniform_hashes_for_every_plan() {
    let mut rng = Rng(1);
    let entries: Vec<(u64, Hash256)> = (0..6000).map(|i| (i, rng.hash())).collect();
    let mut queries: Vec<Hash256> = (0..20).map(|_| rng.hash()).collect();
    for i in 0..40 {
        let k = rng.below(45) as u32;
        queries.push(rng.flip(&entries[i * 97].1, k));
    }
    for m in [10, 11, 12, 16, 21] {
        check_segment(
            &entries,
            &queries,
            Some(segment::ChunkPlan::with_chunks(m)),
            &[0, 1, 7, 15, 31, 32, 40],
        );
    }
}

#[test]
fn mih_exact_on_real_photo_hashes() {
    let Some(seeds) = pdq_vectors() else {
        println!("SKIPPED: shared/testdata/pdq-vectors.tsv not found");
        return;
    };
    assert!(seeds.len() > 100);
    let mut rng = Rng(2);
    let entries = realistic(&seeds, 20_000, &mut rng);
    let queries: Vec<Hash256> = (0..60)
        .map(|_| {
            let s = seeds[rng.below(seeds.len() as u64) as usize];
            let k = rng.below(65) as u32;
            rng.flip(&s, k)
        })
        .collect();
    for m in [11, 14] {
        check_segment(&entries, &queries, Some(segment::ChunkPlan::with_chunks(m)), &[0, 10, 31, 48]);
    }
    // and through the public API with the automatic plan and scan fallback
    let idx = Index::build(entries.iter().copied(), IndexConfig::default()).unwrap();
    for q in &queries {
        for r in [31, 64] {
            assert_eq!(idx.search(q, r), brute(&entries, q, r));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn index_matches_brute_force(seed in any::<u64>(), n in 4096usize..9000, radius in 0u32..=64, realistic_data in any::<bool>()) {
        let mut rng = Rng(seed);
        let seeds = if realistic_data { pdq_vectors() } else { None };
        let entries: Vec<(u64, Hash256)> = match &seeds {
            Some(s) => realistic(s, n, &mut rng),
            None => (0..n as u64).map(|i| (i, rng.hash())).collect(),
        };
        let idx = Index::build(entries.iter().copied(), IndexConfig::default()).unwrap();
        let mut queries = Vec::new();
        for _ in 0..20 {
            let base = entries[rng.below(n as u64) as usize].1;
            let k = rng.below(65) as u32;
            let q = rng.flip(&base, k);
            prop_assert_eq!(idx.search(&q, radius), brute(&entries, &q, radius));
            queries.push(q);
        }
        let q = rng.hash();
        prop_assert_eq!(idx.search(&q, radius), brute(&entries, &q, radius));
        queries.push(q);
        // The batch search (queries grouped, several groups and a partial one) agrees query by query.
        let batch = idx.search_batch(&queries, radius);
        prop_assert_eq!(batch.len(), queries.len());
        for (q, b) in queries.iter().zip(&batch) {
            prop_assert_eq!(b, &brute(&entries, q, radius));
        }
    }

    #[test]
    fn inserts_and_removes_match_a_model(seed in any::<u64>()) {
        let mut rng = Rng(seed);
        let idx = Index::new();
        let mut model: Vec<(u64, Hash256)> = Vec::new();
        let mut next_id = 0u64;
        for step in 0..60 {
            match rng.below(10) {
                0..=5 => {
                    // batches of varied size: exercises the buffer, segment creation and merging
                    let k = [1usize, 10, 500, 3000][rng.below(4) as usize];
                    let batch: Vec<(u64, Hash256)> = (0..k).map(|_| { next_id += 1; (next_id % 5000, rng.hash()) }).collect();
                    idx.insert_many(batch.iter().copied()).unwrap();
                    model.extend(batch);
                }
                6..=7 => {
                    let ids: Vec<u64> = (0..50).map(|_| rng.below(5000)).collect();
                    let removed = idx.remove_many(&ids);
                    let before = model.len();
                    model.retain(|(id, _)| !ids.contains(id));
                    prop_assert_eq!(removed, before - model.len());
                }
                8 => idx.compact(),
                _ => {}
            }
            prop_assert_eq!(idx.len(), model.len());
            if step % 6 == 0 && !model.is_empty() {
                let base = model[rng.below(model.len() as u64) as usize].1;
                let k = rng.below(40) as u32;
                let q = rng.flip(&base, k);
                prop_assert_eq!(idx.search(&q, 31), brute(&model, &q, 31));
                // Grouped batch search over segments with removed entries and the insert buffer.
                let qs: Vec<Hash256> = (0..11)
                    .map(|_| {
                        let (i, k) = (rng.below(model.len() as u64) as usize, rng.below(40) as u32);
                        rng.flip(&model[i].1, k)
                    })
                    .collect();
                for (q, b) in qs.iter().zip(idx.search_batch(&qs, 31)) {
                    prop_assert_eq!(b, brute(&model, q, 31));
                }
            }
        }
        let mut a = idx.entries();
        a.sort();
        model.sort();
        prop_assert_eq!(a, model);
    }
}

#[test]
fn dihedral_nearest_and_batch_agree_with_brute_force() {
    let mut rng = Rng(3);
    let entries: Vec<(u64, Hash256)> = (0..8000).map(|i| (i, rng.hash())).collect();
    let idx = Index::build(entries.iter().copied(), IndexConfig::default()).unwrap();
    let mut queries = Vec::new();
    for i in 0..8 {
        let k = rng.below(30) as u32;
        queries.push(rng.flip(&entries[i * 11].1, k));
    }
    queries.push(queries[0]); // the same variant twice must not duplicate results
    let got = idx.search_dihedral(&queries, 31);
    let mut want: std::collections::BTreeMap<u64, Match> = Default::default();
    for q in &queries {
        for m in brute(&entries, q, 31) {
            let e = want.entry(m.id).or_insert(m);
            e.distance = e.distance.min(m.distance);
        }
    }
    let mut want: Vec<Match> = want.into_values().collect();
    sort_matches(&mut want);
    assert_eq!(got, want);
    assert!(got.len() >= 8);

    // nearest k: a cluster of 20 around one hash
    let centre = rng.hash();
    let cluster: Vec<(u64, Hash256)> =
        (0..20).map(|i| (100_000 + i, rng.flip(&centre, 2 + i as u32))).collect();
    idx.insert_many(cluster.iter().copied()).unwrap();
    let mut all = entries.clone();
    all.extend(&cluster);
    for k in [1, 5, 50] {
        let mut want = brute(&all, &centre, 31);
        want.truncate(k);
        assert_eq!(idx.nearest(&centre, k, 31), want, "k {k}");
    }

    let batch = idx.search_batch(&queries, 31);
    for (q, b) in queries.iter().zip(&batch) {
        assert_eq!(b, &brute(&all, q, 31));
        assert_eq!(b, &idx.search_exhaustive(q, 31));
    }
}

#[test]
fn a_batch_large_enough_to_join_agrees_with_brute_force_across_segments_deletions_and_buffer() {
    let mut rng = Rng(21);
    let seeds = pdq_vectors();
    let mut entries: Vec<(u64, Hash256)> = match &seeds {
        Some(s) => realistic(s, 30_000, &mut rng),
        None => (0..30_000).map(|i| (i, rng.hash())).collect(),
    };
    let idx = Index::build(entries.iter().copied(), IndexConfig::default()).unwrap();
    // a second segment, removed entries in both, and entries left in the insert buffer
    let more: Vec<(u64, Hash256)> =
        (0..8_000u64).map(|i| (100_000 + i, rng.flip(&entries[i as usize].1, 6))).collect();
    idx.insert_many(more.iter().copied()).unwrap();
    let buffered: Vec<(u64, Hash256)> =
        (0..300u64).map(|i| (200_000 + i, rng.flip(&entries[i as usize].1, 3))).collect();
    idx.insert_many(buffered.iter().copied()).unwrap();
    entries.extend(more);
    entries.extend(buffered);
    let gone: Vec<u64> = (0..400).map(|_| entries[rng.below(entries.len() as u64) as usize].0).collect();
    idx.remove_many(&gone);
    entries.retain(|(id, _)| !gone.contains(id));
    assert!(idx.stats().segments >= 2 && idx.stats().buffered > 0, "{:?}", idx.stats());
    // enough queries that every thread's block is searched by the join
    let nq = JOIN_MIN * rayon::current_num_threads() + 7;
    let queries: Vec<Hash256> = (0..nq)
        .map(|i| {
            if i % 3 == 0 {
                rng.hash()
            } else {
                let (k, e) = (rng.below(40) as u32, rng.below(entries.len() as u64) as usize);
                rng.flip(&entries[e].1, k)
            }
        })
        .collect();
    // on this machine's threads, on one, and on three (the tables split three ways)
    let pools: Vec<Option<rayon::ThreadPool>> = std::iter::once(None)
        .chain([1, 3].map(|t| Some(rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap())))
        .collect();
    let on = |pool: &Option<rayon::ThreadPool>, f: &(dyn Fn() -> Vec<Vec<Match>> + Sync)| match pool {
        Some(p) => p.install(f),
        None => f(),
    };
    for (pool, r) in pools.iter().flat_map(|p| [0, 12, 31].map(|r| (p, r))) {
        let batch = on(pool, &|| idx.search_batch(&queries, r));
        assert_eq!(batch.len(), nq);
        let mut found = 0;
        for (q, b) in queries.iter().zip(&batch).step_by(7) {
            assert_eq!(b, &idx.search(q, r), "radius {r}");
            found += b.len();
        }
        for (q, b) in queries.iter().zip(&batch).step_by(53) {
            assert_eq!(b, &brute(&entries, q, r), "radius {r}");
        }
        // not vacuous: at radius 31 most near duplicates match, at 12 those within 12 flips
        let least = if r == 31 { nq / 7 / 2 } else { nq / 7 / 10 };
        assert!(r == 0 || found > least, "radius {r}: {found} matches");
    }
    // lists of hashes (an image's dihedral hashes), the same hash twice in some: as search_dihedral
    let lists: Vec<Vec<Hash256>> = (0..nq / 2)
        .map(|i| {
            let mut l = queries[i..i + 1 + i % 4].to_vec();
            if i % 4 == 0 {
                l.push(l[0]);
            }
            l
        })
        .collect();
    assert!(lists.iter().map(Vec::len).sum::<usize>() >= JOIN_MIN * rayon::current_num_threads());
    for (pool, r) in pools.iter().flat_map(|p| [12, 31].map(|r| (p, r))) {
        let got = on(pool, &|| idx.search_batch_dihedral(&lists, r));
        assert_eq!(got.len(), lists.len());
        let mut found = 0;
        for (l, g) in lists.iter().zip(&got) {
            assert_eq!(g, &idx.search_dihedral(l, r), "radius {r}");
            found += g.len();
        }
        assert!(found > lists.len() / 2, "radius {r}: {found} matches");
    }
}

#[test]
fn dense_tables_are_those_a_batch_probes_by_blocks() {
    let mut rng = Rng(5);
    let n = 30_000;
    let hashes: Vec<segment::H> = (0..n).map(|_| segment::H(rng.hash().words())).collect();
    let seg = Segment::build((0..n as u64).collect(), hashes);
    // 17 chunks of 15 bits: at radius 31 fifteen tables take radius 1 (16 keys each) and two
    // radius 0; 2,000 queries probe 32,000 keys in the first, 2,000 in the others (of 32,768)
    let plan = segment::ChunkPlan::for_len(n);
    assert_eq!(plan.len(), 17);
    let wide = plan.rhos(31)[..17].iter().filter(|&&rho| rho == 1).count();
    assert_eq!(wide, 15);
    assert_eq!(seg.dense_tables(2000, 31), wide);
    // radius 8: nine tables of radius 0, sparse; a small batch: nothing dense
    assert_eq!(seg.dense_tables(2000, 8), 0);
    assert_eq!(seg.dense_tables(100, 31), 0);
    assert_eq!(seg.dense_tables(1 << 20, 8), 9);
}

#[test]
fn batch_blocks_cover_every_query_once_in_every_part_and_in_order() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
    // (queries, hashes per query, tables probed densely, parts wanted): below JOIN_MIN (one
    // part), one block, several blocks, queries of several hashes, and few dense tables
    for (n, per, probed, parts) in [
        (500, 1, 16, 1),
        (JOIN_MIN, 1, 16, 3),
        (JOIN_BLOCK * 2 + 5, 1, 16, 3),
        (JOIN_BLOCK / 3, 8, 12, 3),
        (5000, 1, 1, 1),
        (5000, 1, 4, 2),
    ] {
        let got = pool.install(|| {
            in_blocks(
                n,
                |_| per,
                probed,
                |range, part| range.map(|i| vec![(i, part.k, part.of)]).collect(),
                |all, more| all.extend(more),
            )
        });
        assert_eq!(got.len(), n);
        for (i, g) in got.iter().enumerate() {
            let want: Vec<(usize, usize, usize)> = (0..parts).map(|k| (i, k, parts)).collect();
            assert_eq!(g, &want, "{n} queries of {per}: query {i}");
        }
    }
}

#[test]
fn reads_during_writes_see_consistent_snapshots() {
    let mut rng = Rng(4);
    let base: Vec<(u64, Hash256)> = (0..5000).map(|i| (i, rng.hash())).collect();
    let idx = Arc::new(Index::build(base.iter().copied(), IndexConfig::default()).unwrap());
    let extra: Vec<(u64, Hash256)> = (0..20_000).map(|i| (10_000 + i, rng.hash())).collect();
    let writer = {
        let idx = idx.clone();
        let extra = extra.clone();
        std::thread::spawn(move || {
            for (i, e) in extra.iter().enumerate() {
                idx.insert(e.0, e.1).unwrap();
                if i % 4000 == 3999 {
                    idx.remove_many(&[(i as u64) % 5000 + 1_000_000]); // ids not present: no-op remove path
                }
            }
        })
    };
    let mut searched = 0;
    while !writer.is_finished() || searched < 200 {
        let i = rng.below(5000) as usize;
        let q = rng.flip(&base[i].1, 10);
        let got = idx.search(&q, 31);
        assert!(got.iter().any(|m| m.id == base[i].0), "indexed entry lost during writes");
        assert!(got.iter().all(|m| m.distance <= 31 && m.hash.distance(&q) == m.distance));
        searched += 1;
    }
    writer.join().unwrap();
    let mut all = base.clone();
    all.extend(&extra);
    assert_eq!(idx.len(), all.len());
    for e in extra.iter().step_by(997) {
        assert_eq!(idx.search(&e.1, 31), brute(&all, &e.1, 31));
    }
}

#[test]
fn degenerate_hashes_are_rejected_or_handled() {
    let idx = Index::new();
    assert!(matches!(idx.insert(7, Hash256::ZERO), Err(InsertError::Degenerate { id: 7, .. })));
    assert!(idx.insert(8, Hash256::from_words([u64::MAX; 4])).is_err());
    assert!(is_degenerate(&Hash256::from_words([0xff, 0, 0, 0])));
    assert!(!is_degenerate(&Hash256::from_words([u64::MAX, u64::MAX, 0, 0])));
    assert!(idx.is_empty());

    // Accepting 10,000 copies of the zero hash: exact results, and queries away from zero never see them.
    let mut rng = Rng(5);
    let mut entries: Vec<(u64, Hash256)> = (0..10_000).map(|i| (i, Hash256::ZERO)).collect();
    entries.extend((0..10_000).map(|i| (20_000 + i, rng.hash())));
    let idx =
        Index::build(entries.iter().copied(), IndexConfig { degenerate: DegeneratePolicy::Accept }).unwrap();
    let mut near_zero = Hash256::ZERO;
    near_zero.flip_bit(3);
    assert_eq!(idx.search(&near_zero, 31).len(), 10_000);
    for i in 0..50 {
        let q = rng.flip(&entries[10_000 + i * 7].1, 12);
        let got = idx.search(&q, 31);
        assert_eq!(got, brute(&entries, &q, 31));
        assert!(got.iter().all(|m| m.id >= 20_000));
    }
}

#[test]
fn a_bucket_too_full_for_a_compact_directory_and_wide_ids_stay_exact_and_persist() {
    // 70,000 copies of one hash: every table's block holding that key has more than 65,535
    // entries, so those tables keep the plain directory; the others are compact. Ids beyond
    // 32 bits keep the segment's ids 8 bytes wide.
    let mut rng = Rng(8);
    let same = rng.hash();
    let mut entries: Vec<(u64, Hash256)> = (0..70_000).map(|i| (i, same)).collect();
    entries.extend((0..10_000).map(|i| ((1 << 40) + i, rng.hash())));
    let config = IndexConfig { degenerate: DegeneratePolicy::Accept };
    let idx = Index::build(entries.iter().copied(), config).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.snap");
    idx.save(&path).unwrap();
    let back = Index::load(&path, config).unwrap();
    let mut queries = vec![same, rng.flip(&same, 9), rng.flip(&same, 40)];
    for i in 0..20 {
        queries.push(rng.flip(&entries[70_000 + i * 311].1, 1 + (i as u32 % 31)));
    }
    for q in &queries {
        let want = brute(&entries, q, 31);
        assert_eq!(idx.search(q, 31), want, "query {q}");
        assert_eq!(back.search(q, 31), want, "query {q}, loaded");
    }
    assert_eq!(back.search(&same, 0).len(), 70_000);
}

#[test]
fn snapshot_round_trip_and_corruption_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(6);
    let entries: Vec<(u64, Hash256)> = (0..7000).map(|i| (i * 3, rng.hash())).collect();
    let idx = Index::build(entries.iter().copied(), IndexConfig::default()).unwrap();
    idx.insert_many((0..100).map(|i| (1_000_000 + i, rng.hash()))).unwrap(); // buffered
    idx.remove_many(&[0, 3, 6]); // tombstones
    let path = dir.path().join("a.snap");
    idx.save(&path).unwrap();
    let back = Index::load(&path, IndexConfig::default()).unwrap();
    assert_eq!(back.len(), idx.len());
    let mut a = back.entries();
    let mut b = idx.entries();
    a.sort();
    b.sort();
    assert_eq!(a, b);
    for e in entries.iter().step_by(500) {
        let q = rng.flip(&e.1, 20);
        assert_eq!(back.search(&q, 31), idx.search(&q, 31));
    }

    let good = std::fs::read(&path).unwrap();
    let bad = dir.path().join("bad.snap");
    // every truncation point in the first 200 bytes, and a spread of others
    let cuts: Vec<usize> = (0..200).chain((200..good.len()).step_by(good.len() / 97)).collect();
    for cut in cuts {
        std::fs::write(&bad, &good[..cut]).unwrap();
        assert!(Index::load(&bad, IndexConfig::default()).is_err(), "truncated at {cut} accepted");
    }
    for pos in (0..good.len()).step_by(good.len() / 61) {
        let mut c = good.clone();
        c[pos] ^= 0x10;
        std::fs::write(&bad, &c).unwrap();
        let e = Index::load(&bad, IndexConfig::default())
            .err()
            .unwrap_or_else(|| panic!("flip at {pos} accepted"));
        assert!(!e.to_string().is_empty());
    }
    std::fs::write(&bad, b"").unwrap();
    assert!(matches!(Index::load(&bad, IndexConfig::default()), Err(LoadError::Truncated(_))));
}

#[test]
fn store_replays_journal_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(7);
    let hs: Vec<Hash256> = (0..3000).map(|_| rng.hash()).collect();
    {
        let mut s = Store::open(dir.path(), IndexConfig::default()).unwrap();
        for (i, h) in hs.iter().enumerate().take(2000) {
            s.insert(i as u64, *h).unwrap();
        }
        s.checkpoint().unwrap();
        for (i, h) in hs.iter().enumerate().skip(2000) {
            s.insert(i as u64, *h).unwrap();
        }
        assert_eq!(s.remove(5).unwrap(), 1);
        assert!(s.insert(9, Hash256::ZERO).is_err());
        s.sync().unwrap();
    }
    let s = Store::open(dir.path(), IndexConfig::default()).unwrap();
    assert_eq!(s.index().len(), 2999);
    assert!(s.index().search(&hs[5], 0).is_empty());
    assert_eq!(s.index().search(&hs[2500], 0)[0].id, 2500);
    drop(s);
    // a torn last record is reported, not silently dropped or crashed on
    let log = dir.path().join("index.log");
    let len = std::fs::metadata(&log).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&log).unwrap();
    f.set_len(len - 7).unwrap();
    let err = Store::open(dir.path(), IndexConfig::default()).unwrap_err();
    assert!(matches!(err, LoadError::Truncated(_)), "{err}");
    // a flipped byte in a record
    f.set_len(len - 45).unwrap(); // back to a record boundary (drops the removal)
    let mut data = std::fs::read(&log).unwrap();
    let n = data.len();
    data[n - 30] ^= 1;
    std::fs::write(&log, &data).unwrap();
    assert!(matches!(Store::open(dir.path(), IndexConfig::default()), Err(LoadError::Corrupt(_))));
}

#[test]
fn compaction_is_worthwhile_only_beside_a_sizeable_second_segment() {
    let mut rng = Rng(9);
    let idx = Index::new();
    assert!(!idx.compaction_worthwhile(), "empty");
    let big: Vec<(u64, Hash256)> = (0..200_000).map(|i| (i, rng.hash())).collect();
    idx.insert_many(big.iter().copied()).unwrap();
    assert_eq!(idx.stats().segments, 1);
    assert!(!idx.compaction_worthwhile(), "one segment");
    // 1,500 entries beside 200,000: under 1 %, not worth rebuilding the large segment for.
    let small: Vec<(u64, Hash256)> = (0..1_500).map(|i| (300_000 + i, rng.hash())).collect();
    idx.insert_many(small.iter().copied()).unwrap();
    assert_eq!(idx.stats().segments, 2);
    assert!(!idx.compaction_worthwhile(), "a segment of 0.75 %");
    // 20,000 more (10 %, still under a third: the merge policy leaves it separate).
    let more: Vec<(u64, Hash256)> = (0..20_000).map(|i| (400_000 + i, rng.hash())).collect();
    idx.insert_many(more.iter().copied()).unwrap();
    assert!(idx.stats().segments >= 2);
    assert!(idx.compaction_worthwhile());
    let q = rng.flip(&more[7].1, 5);
    let before = idx.search(&q, 31);
    idx.compact();
    assert_eq!(idx.stats().segments, 1);
    assert!(!idx.compaction_worthwhile());
    assert_eq!(idx.search(&q, 31), before);
    assert_eq!(idx.len(), 221_500);
}
