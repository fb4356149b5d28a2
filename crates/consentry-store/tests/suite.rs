//! The store test suite, run once against SQLite and once against PostgreSQL.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::common::{hash_with_ones, random_pdq, Kind, TestDb};
use consentry_pdq::Hash256;
use consentry_store::*;
use serde_json::json;

backend_tests!(
    migrations_are_applied_once,
    bank_crud,
    entry_lifecycle_feeds_changes,
    degenerate_hashes_are_rejected_with_reason,
    bulk_import_keeps_good_lines_and_reports_bad_ones,
    bank_toggle_and_delete_feed_changes,
    case_create_status_withdraw,
    case_with_degenerate_hash_stores_nothing,
    pin_attempts_lock_the_case,
    parallel_pin_guesses_cannot_exceed_the_limit,
    api_keys_are_hashed_scoped_and_revocable,
    audit_log_is_append_only_and_transactional,
    concurrent_writers_never_make_a_poller_skip,
    another_process_sees_writes_within_one_second,
    webhook_outbox_claims_leases_and_retries,
    metadata_is_checked,
    data_survives_reopen,
    upgrades_a_version_1_database,
    feed_can_be_pruned,
    listeners_wake_on_commits,
    derive_entries_are_stored_fed_and_loaded,
    derive_values_are_validated,
    cases_take_derive_values,
    large_bulk_adds_map_every_line_to_its_entry,
    active_set_pages_equal_the_whole_active_set,
    details_generation_moves_on_changes_to_existing_rows,
    match_counts_add_up_by_bank_entry_source_day_and_signal,
    retention_prunes_old_changes_and_match_counts,
    case_status_counts_what_matched,
    staff_reset_a_lost_pin,
    withdrawn_cases_lose_their_codes_when_purged,
    case_events_are_written_with_the_change,
);

fn admin() -> Actor {
    Actor::named("moderator:test")
}

async fn bank(store: &Store, name: &str, purpose: BankPurpose) -> Bank {
    store
        .create_bank(
            &admin(),
            NewBank { name: name.into(), description: String::new(), enabled: true, purpose },
        )
        .await
        .expect("create bank")
}

fn pdq_entry(bank_id: i64, h: Hash256) -> NewEntry {
    NewEntry {
        bank_id,
        value: SignalValue::Pdq(h),
        quality: Some(90),
        source: EntrySourceKind::Moderator,
        metadata: json!({"note": "test"}),
    }
}

/// Applies changes to a map of active entries, checking seqs are consecutive from `*seq`.
fn apply(active: &mut BTreeMap<i64, SignalValue>, seq: &mut i64, changes: &[Change]) {
    for c in changes {
        assert_eq!(c.seq, *seq + 1, "change feed skipped or repeated a sequence number");
        *seq = c.seq;
        match &c.op {
            ChangeOp::Activate(v) => {
                active.insert(c.entry_id, v.clone());
            }
            ChangeOp::Deactivate(_) => {
                active.remove(&c.entry_id);
            }
        }
    }
}

async fn active_map(store: &Store) -> (i64, BTreeMap<i64, SignalValue>) {
    let set = store.load_all_active(SignalType::Pdq).await.unwrap();
    (set.seq, set.entries.into_iter().collect())
}

async fn migrations_are_applied_once(db: TestDb) {
    assert_eq!(db.store.schema_version().await.unwrap(), 3);
    // Opening again (another process) finds the schema in place and changes nothing.
    let b = bank(&db.store, "one", BankPurpose::Other).await;
    let again = db.open_another().await;
    assert_eq!(again.schema_version().await.unwrap(), 3);
    assert_eq!(again.get_bank(b.id).await.unwrap(), b);
    let versions = db.raw_texts("SELECT name FROM schema_migrations ORDER BY version").await.unwrap();
    assert_eq!(versions, vec!["initial".to_string(), "feed_pruning".to_string(), "match_counts".to_string()]);
    // A database written by a newer build is refused, with a clear message.
    db.raw_exec("INSERT INTO schema_migrations (version, name, applied_at) VALUES (99, 'future', 0)")
        .await
        .unwrap();
    let err = Store::open(db.location.clone(), StoreOptions::default()).await.unwrap_err();
    assert!(matches!(err, StoreError::Migration(_)), "{err}");
    assert!(err.to_string().contains("version 99"), "{err}");
}

async fn upgrades_a_version_1_database(db: TestDb) {
    // Build a v1 database by hand (as a previous release left it), with data in it.
    let fresh = match db.kind {
        Kind::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("old.db");
            {
                use sqlx::Connection;
                let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", path.display()))
                    .await
                    .unwrap();
                sqlx::raw_sql(include_str!("../migrations/sqlite/0001_initial.sql"))
                    .execute(&mut c)
                    .await
                    .unwrap();
                sqlx::raw_sql(V1_TAIL).execute(&mut c).await.unwrap();
            }
            (StoreLocation::Sqlite(path), Some(dir), None)
        }
        Kind::Postgres => {
            use sqlx::Connection;
            let schema = common::random_schema();
            let mut c = sqlx::PgConnection::connect(&common::pg_url()).await.unwrap();
            sqlx::raw_sql(&format!("CREATE SCHEMA {schema}; SET search_path TO {schema};"))
                .execute(&mut c)
                .await
                .unwrap();
            sqlx::raw_sql(include_str!("../migrations/postgres/0001_initial.sql"))
                .execute(&mut c)
                .await
                .unwrap();
            sqlx::raw_sql(V1_TAIL).execute(&mut c).await.unwrap();
            (
                StoreLocation::Postgres { url: common::pg_url(), schema: Some(schema.clone()) },
                None,
                Some(schema),
            )
        }
    };
    let _guard = common::SchemaGuard(fresh.2.clone());
    let store = Store::open(fresh.0.clone(), StoreOptions::default()).await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), 3);
    let b = store.get_bank_by_name("legacy").await.unwrap();
    assert_eq!(b.purpose, BankPurpose::KnownAbuse);
    assert_eq!(store.current_seq().await.unwrap(), 0);
    // The new column works.
    store.add_entry(&admin(), pdq_entry(b.id, random_pdq())).await.unwrap();
    store.prune_changes(&admin(), 1).await.unwrap();
    store.close().await;
    drop(db);
}

const V1_TAIL: &str = "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL);
INSERT INTO schema_migrations VALUES (1, 'initial', 0);
INSERT INTO banks (name, description, enabled, purpose, created_at, updated_at) VALUES ('legacy', '', TRUE, 'known-abuse', 0, 0);";

async fn feed_can_be_pruned(db: TestDb) {
    let s = &db.store;
    let b = bank(s, "b", BankPurpose::KnownAbuse).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(s.add_entry(&admin(), pdq_entry(b.id, random_pdq())).await.unwrap().id);
    }
    s.disable_entry(&admin(), ids[0]).await.unwrap();
    assert_eq!(s.current_seq().await.unwrap(), 6);
    assert_eq!(s.prune_changes(&admin(), 4).await.unwrap(), 4);
    assert_eq!(s.prune_changes(&admin(), 3).await.unwrap(), 0, "pruning is monotonic");
    // Readers at or past the prune point go on; readers behind it are told to reload.
    assert_eq!(s.changes_since(4, 100).await.unwrap().iter().map(|c| c.seq).collect::<Vec<_>>(), vec![5, 6]);
    let err = s.changes_since(3, 100).await.unwrap_err();
    assert!(matches!(err, StoreError::FeedTruncated { since: 3, pruned_through: 4 }), "{err}");
    assert!(!err.is_user_error());
    // A reload then continues without loss.
    let set = s.load_all_active(SignalType::Pdq).await.unwrap();
    assert_eq!(set.seq, 6);
    assert_eq!(set.entries.iter().map(|e| e.0).collect::<Vec<_>>(), ids[1..].to_vec());
    s.enable_entry(&admin(), ids[0]).await.unwrap();
    let ch = s.changes_since(set.seq, 100).await.unwrap();
    assert_eq!(ch.iter().map(|c| (c.seq, c.entry_id)).collect::<Vec<_>>(), vec![(7, ids[0])]);
    // Never past the head.
    assert_eq!(s.prune_changes(&admin(), 1000).await.unwrap(), 3);
    assert_eq!(s.changes_since(7, 10).await.unwrap(), vec![]);
    let e = s.add_entry(&admin(), pdq_entry(b.id, random_pdq())).await.unwrap();
    assert_eq!(s.changes_since(7, 10).await.unwrap()[0].entry_id, e.id);
}

async fn bank_crud(db: TestDb) {
    let s = &db.store;
    let a = bank(s, "survivors", BankPurpose::SurvivorProtected).await;
    assert!(a.enabled);
    assert_eq!(a.purpose, BankPurpose::SurvivorProtected);
    let b = bank(s, "known", BankPurpose::KnownAbuse).await;
    assert_ne!(a.id, b.id);
    assert_eq!(s.get_bank(a.id).await.unwrap(), a);
    assert_eq!(s.get_bank_by_name("known").await.unwrap(), b);
    assert_eq!(s.list_banks().await.unwrap(), vec![a.clone(), b.clone()]);

    let dup = s
        .create_bank(
            &admin(),
            NewBank {
                name: "known".into(),
                description: "x".into(),
                enabled: true,
                purpose: BankPurpose::Other,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(dup, StoreError::Conflict(_)), "{dup}");
    assert!(dup.is_user_error());
    let empty = s
        .create_bank(
            &admin(),
            NewBank { name: "".into(), description: "".into(), enabled: true, purpose: BankPurpose::Other },
        )
        .await
        .unwrap_err();
    assert!(matches!(empty, StoreError::InvalidInput(_)), "{empty}");

    let upd = s
        .update_bank(
            &admin(),
            b.id,
            BankUpdate {
                name: Some("known-abuse-2".into()),
                description: Some("list".into()),
                purpose: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(upd.name, "known-abuse-2");
    assert_eq!(upd.description, "list");
    assert_eq!(upd.purpose, BankPurpose::KnownAbuse);
    let clash = s
        .update_bank(&admin(), b.id, BankUpdate { name: Some("survivors".into()), ..Default::default() })
        .await
        .unwrap_err();
    assert!(matches!(clash, StoreError::Conflict(_)), "{clash}");

    s.delete_bank(&admin(), b.id).await.unwrap();
    assert!(matches!(s.get_bank(b.id).await.unwrap_err(), StoreError::NotFound(_)));
    assert!(matches!(s.delete_bank(&admin(), b.id).await.unwrap_err(), StoreError::NotFound(_)));
    assert_eq!(s.list_banks().await.unwrap(), vec![a]);
}

async fn entry_lifecycle_feeds_changes(db: TestDb) {
    let s = &db.store;
    let b = bank(s, "b", BankPurpose::KnownAbuse).await;
    assert_eq!(s.current_seq().await.unwrap(), 0);
    let h = random_pdq();
    let e = s.add_entry(&admin(), pdq_entry(b.id, h)).await.unwrap();
    assert_eq!(e.value, SignalValue::Pdq(h));
    assert_eq!(e.quality, Some(90));
    assert_eq!(e.source, EntrySource::Moderator);
    assert_eq!(e.metadata, json!({"note": "test"}));
    assert!(e.disabled_at.is_none());
    assert_eq!(s.get_entry(e.id).await.unwrap(), e);
    assert_eq!(s.find_entries(&SignalValue::Pdq(h)).await.unwrap(), vec![e.clone()]);

    let ch = s.changes_since(0, 100).await.unwrap();
    assert_eq!(ch.len(), 1);
    assert_eq!(
        (ch[0].seq, ch[0].entry_id, ch[0].op.clone()),
        (1, e.id, ChangeOp::Activate(SignalValue::Pdq(h)))
    );

    let d = s.disable_entry(&admin(), e.id).await.unwrap();
    assert!(d.disabled_at.is_some());
    // Idempotent: no second change.
    s.disable_entry(&admin(), e.id).await.unwrap();
    assert!(active_map(s).await.1.is_empty());
    let en = s.enable_entry(&admin(), e.id).await.unwrap();
    assert!(en.disabled_at.is_none());
    assert_eq!(active_map(s).await.1.get(&e.id), Some(&SignalValue::Pdq(h)));
    s.remove_entry(&admin(), e.id).await.unwrap();
    assert!(matches!(s.get_entry(e.id).await.unwrap_err(), StoreError::NotFound(_)));
    assert!(matches!(s.remove_entry(&admin(), e.id).await.unwrap_err(), StoreError::NotFound(_)));

    let ops: Vec<_> =
        s.changes_since(0, 100).await.unwrap().into_iter().map(|c| (c.seq, c.op, c.cause)).collect();
    let deact = ChangeOp::Deactivate(SignalType::Pdq);
    let act = ChangeOp::Activate(SignalValue::Pdq(h));
    assert_eq!(
        ops,
        vec![
            (1, act.clone(), "entry.add".to_string()),
            (2, deact.clone(), "entry.disable".to_string()),
            (3, act, "entry.enable".to_string()),
            (4, deact, "entry.remove".to_string()),
        ]
    );
    assert_eq!(s.current_seq().await.unwrap(), 4);
    assert_eq!(s.changes_since(2, 1).await.unwrap().len(), 1, "limit honoured");
    // Ids are never reused after a delete.
    let e2 = s.add_entry(&admin(), pdq_entry(b.id, random_pdq())).await.unwrap();
    assert!(e2.id > e.id);
    // Missing bank.
    let err = s.add_entry(&admin(), pdq_entry(9999, random_pdq())).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    assert_eq!(s.current_seq().await.unwrap(), 5, "a failed write appends no change");
}

async fn degenerate_hashes_are_rejected_with_reason(db: TestDb) {
    let s = &db.store;
    let b = bank(s, "b", BankPurpose::KnownAbuse).await;
    let cases: Vec<(Hash256, Option<i32>, &str)> = vec![
        (Hash256::ZERO, None, "all bits are zero"),
        (Hash256::from_words([u64::MAX; 4]), None, "all bits are one"),
        (hash_with_ones(40), None, "40 one bits"),
        (hash_with_ones(200), None, "200 one bits"),
        (random_pdq(), Some(10), "quality 10 is below the minimum 50"),
        (random_pdq(), Some(101), "quality 101 is not in 0..=100"),
    ];
    for (h, q, want) in cases {
        let mut ne = pdq_entry(b.id, h);
        ne.quality = q;
        let err = s.add_entry(&admin(), ne).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidHash { index: 0, .. }), "{err}");
        assert!(err.to_string().contains(want), "`{err}` should say `{want}`");
        assert!(err.is_user_error());
    }
    // Boundaries of the default policy are accepted; no quality is fine.
    for ones in [96, 128, 160] {
        let mut ne = pdq_entry(b.id, hash_with_ones(ones));
        ne.quality = None;
        s.add_entry(&admin(), ne).await.unwrap();
    }
    assert_eq!(s.list_entries(b.id, 0, 100).await.unwrap().len(), 3);
    assert_eq!(s.current_seq().await.unwrap(), 3);
}

async fn bulk_import_keeps_good_lines_and_reports_bad_ones(db: TestDb) {
    let s = &db.store;
    let b = bank(s, "imports", BankPurpose::KnownAbuse).await;
    let (h1, h2, h3) = (random_pdq(), random_pdq(), random_pdq());
    let text = format!(
        "# exported list\n{h1}\nnot-a-hash\n{zero}\n\n{h2},80\n{h3}\t12\n{h1},90,extra\n{h3} 70\n",
        zero = Hash256::ZERO
    );
    let r = s.import_pdq_text(&admin(), b.id, &text).await.unwrap();
    let added_lines: Vec<u64> = r.added.iter().map(|a| a.0).collect();
    assert_eq!(added_lines, vec![2, 6, 9]);
    let rejected: Vec<(u64, &str)> = r.rejected.iter().map(|e| (e.line, e.reason.as_str())).collect();
    assert_eq!(rejected.len(), 4, "{rejected:?}");
    assert_eq!(rejected[0].0, 3);
    assert!(rejected[0].1.contains("not a PDQ hash"), "{rejected:?}");
    assert_eq!(rejected[1].0, 4);
    assert!(rejected[1].1.contains("all bits are zero"), "{rejected:?}");
    assert_eq!(rejected[2].0, 7);
    assert!(rejected[2].1.contains("quality 12"), "{rejected:?}");
    assert_eq!(rejected[3].0, 8);
    assert!(rejected[3].1.contains("unexpected field"), "{rejected:?}");

    let entries = s.list_entries(b.id, 0, 100).await.unwrap();
    let stored: Vec<(i64, SignalValue, Option<i32>, EntrySource)> =
        entries.iter().map(|e| (e.id, e.value.clone(), e.quality, e.source)).collect();
    assert_eq!(
        stored,
        vec![
            (r.added[0].1, SignalValue::Pdq(h1), None, EntrySource::Import),
            (r.added[1].1, SignalValue::Pdq(h2), Some(80), EntrySource::Import),
            (r.added[2].1, SignalValue::Pdq(h3), Some(70), EntrySource::Import),
        ]
    );
    let ch = s.changes_since(0, 100).await.unwrap();
    assert_eq!(
        ch.iter().map(|c| c.entry_id).collect::<Vec<_>>(),
        r.added.iter().map(|a| a.1).collect::<Vec<_>>()
    );

    // All lines bad: nothing stored, everything reported; unknown bank is an error.
    let r2 = s.import_pdq_text(&admin(), b.id, "zz\n").await.unwrap();
    assert!(r2.added.is_empty());
    assert_eq!(r2.rejected.len(), 1);
    assert!(matches!(
        s.import_pdq_text(&admin(), 4242, &format!("{h1}\n")).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.list_entries(b.id, 0, 100).await.unwrap().len(), 3);

    // A large import is one transaction and one contiguous run of changes.
    let lines: Vec<BulkLine> = (0..500)
        .map(|i| BulkLine {
            line: i + 1,
            value: SignalValue::Pdq(random_pdq()),
            quality: None,
            metadata: json!(null),
        })
        .collect();
    let seq0 = s.current_seq().await.unwrap();
    let r3 = s.add_entries_bulk(&admin(), b.id, EntrySourceKind::Import, lines).await.unwrap();
    assert_eq!(r3.added.len(), 500);
    assert_eq!(s.current_seq().await.unwrap(), seq0 + 500);
}

async fn bank_toggle_and_delete_feed_changes(db: TestDb) {
    let s = &db.store;
    let b = bank(s, "b", BankPurpose::KnownAbuse).await;
    let other = bank(s, "other", BankPurpose::KnownAbuse).await;
    let e1 = s.add_entry(&admin(), pdq_entry(b.id, random_pdq())).await.unwrap();
    let e2 = s.add_entry(&admin(), pdq_entry(b.id, random_pdq())).await.unwrap();
    let e3 = s.add_entry(&admin(), pdq_entry(b.id, random_pdq())).await.unwrap();
    let o1 = s.add_entry(&admin(), pdq_entry(other.id, random_pdq())).await.unwrap();
    s.disable_entry(&admin(), e2.id).await.unwrap();

    let (mut seq, mut mirror) = active_map(s).await;
    assert_eq!(mirror.keys().copied().collect::<Vec<_>>(), vec![e1.id, e3.id, o1.id]);

    let off = s.set_bank_enabled(&admin(), b.id, false).await.unwrap();
    assert!(!off.enabled);
    let ch = s.changes_since(seq, 100).await.unwrap();
    assert_eq!(
        ch.iter().map(|c| (c.entry_id, c.op.clone())).collect::<Vec<_>>(),
        vec![(e1.id, ChangeOp::Deactivate(SignalType::Pdq)), (e3.id, ChangeOp::Deactivate(SignalType::Pdq)),]
    );
    apply(&mut mirror, &mut seq, &ch);
    assert_eq!(mirror, active_map(s).await.1);
    // While the bank is disabled, enabling an entry does not make it match.
    s.enable_entry(&admin(), e2.id).await.unwrap();
    assert_eq!(s.changes_since(seq, 100).await.unwrap(), vec![]);
    // A new entry in a disabled bank does not match either.
    let e4 = s.add_entry(&admin(), pdq_entry(b.id, random_pdq())).await.unwrap();
    assert_eq!(s.changes_since(seq, 100).await.unwrap(), vec![]);
    assert_eq!(active_map(s).await.1.keys().copied().collect::<Vec<_>>(), vec![o1.id]);
    // Setting the same state again is a no-op.
    s.set_bank_enabled(&admin(), b.id, false).await.unwrap();
    assert_eq!(s.current_seq().await.unwrap(), seq);

    s.set_bank_enabled(&admin(), b.id, true).await.unwrap();
    let ch = s.changes_since(seq, 100).await.unwrap();
    assert_eq!(ch.iter().map(|c| c.entry_id).collect::<Vec<_>>(), vec![e1.id, e2.id, e3.id, e4.id]);
    assert!(ch.iter().all(|c| matches!(c.op, ChangeOp::Activate(_))));
    apply(&mut mirror, &mut seq, &ch);
    assert_eq!(mirror, active_map(s).await.1);

    s.delete_bank(&admin(), b.id).await.unwrap();
    let ch = s.changes_since(seq, 100).await.unwrap();
    assert_eq!(ch.len(), 4);
    apply(&mut mirror, &mut seq, &ch);
    assert_eq!(mirror.keys().copied().collect::<Vec<_>>(), vec![o1.id]);
    assert_eq!(mirror, active_map(s).await.1);
    assert!(matches!(s.get_entry(e1.id).await.unwrap_err(), StoreError::NotFound(_)));

    // A bank holding survivors' cases cannot be deleted.
    let sp = bank(s, "survivors", BankPurpose::SurvivorProtected).await;
    s.create_case(
        &Actor::named("submitter"),
        NewCase { bank_id: sp.id, hashes: vec![CaseHash::pdq(random_pdq(), None)], metadata: json!(null) },
    )
    .await
    .unwrap();
    let err = s.delete_bank(&admin(), sp.id).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert!(s.get_bank(sp.id).await.is_ok());
}

async fn case_create_status_withdraw(db: TestDb) {
    let s = &db.store;
    let b = bank(s, "survivors", BankPurpose::SurvivorProtected).await;
    let (h1, h2) = (random_pdq(), random_pdq());
    let created = s
        .create_case(
            &Actor::named("submit-page"),
            NewCase {
                bank_id: b.id,
                hashes: vec![CaseHash::pdq(h1, Some(100)), CaseHash::pdq(h2, None)],
                metadata: json!({"client": "browser"}),
            },
        )
        .await
        .unwrap();
    let number = created.case.number.clone();
    let pin = created.pin.clone();
    assert!(!format!("{created:?}").contains(&pin), "Debug must not print the PIN");
    assert_eq!(number.len(), CASE_NUMBER_LEN);
    assert!(number.bytes().all(|c| CASE_ALPHABET.contains(&c)));
    assert_eq!(pin.len(), PIN_DIGITS);
    assert!(pin.bytes().all(|c| c.is_ascii_digit()));
    assert_eq!(created.case.status, CaseStatus::Received);
    assert_eq!(created.entries.len(), 2);
    assert!(created.entries.iter().all(|e| e.source == EntrySource::Case(created.case.id)));
    let active = active_map(s).await.1;
    assert_eq!(active.len(), 2, "case hashes match from submission on");

    // The PIN exists nowhere in the database; its hash is Argon2id.
    let stored = db.raw_texts("SELECT pin_hash FROM cases").await.unwrap();
    assert_eq!(stored.len(), 1);
    assert!(stored[0].starts_with("$argon2id$"), "{}", stored[0]);
    let everything =
        db.raw_texts("SELECT number || ' ' || pin_hash || ' ' || status FROM cases").await.unwrap().join(" ")
            + &db.raw_texts("SELECT metadata FROM entries").await.unwrap().join(" ")
            + &db.raw_texts("SELECT details FROM audit_events").await.unwrap().join(" ");
    assert!(!everything.contains(&pin), "the PIN must not be stored in clear");

    // Status needs the PIN; the number may be typed with dashes and in lower case.
    let typed = created.case.display_number().to_lowercase();
    let view = s.case_status(&typed, &pin).await.unwrap();
    assert_eq!(view.case, created.case);
    assert_eq!(view.entries, created.entries);
    let wrong_pin = if pin.starts_with('0') { pin.replacen('0', "1", 1) } else { format!("0{}", &pin[1..]) };
    assert!(matches!(s.case_status(&number, &wrong_pin).await, Err(StoreError::BadCredentials)));
    let other_number: String = number.chars().rev().collect();
    if other_number != number {
        assert!(matches!(s.case_status(&other_number, &pin).await, Err(StoreError::BadCredentials)));
    }
    assert!(matches!(s.case_status("garbage", &pin).await, Err(StoreError::BadCredentials)));
    assert!(matches!(s.withdraw_case(&number, &wrong_pin).await, Err(StoreError::BadCredentials)));
    assert_eq!(s.get_case(created.case.id).await.unwrap().case.status, CaseStatus::Received);

    let staff = Actor::named("staff:amy");
    let activated = s.set_case_status(&staff, created.case.id, CaseStatus::Active).await.unwrap();
    assert_eq!(activated.status, CaseStatus::Active);

    let seq = s.current_seq().await.unwrap();
    let w = s.withdraw_case(&number, &pin).await.unwrap();
    assert_eq!(w.status, CaseStatus::Withdrawn);
    assert!(w.withdrawn_at.is_some());
    let ch = s.changes_since(seq, 100).await.unwrap();
    assert_eq!(ch.len(), 2);
    assert!(ch.iter().all(|c| c.op == ChangeOp::Deactivate(SignalType::Pdq) && c.cause == "case.withdraw"));
    assert!(active_map(s).await.1.is_empty());
    let view = s.case_status(&number, &pin).await.unwrap();
    assert_eq!(view.case.status, CaseStatus::Withdrawn);
    assert!(view.entries.iter().all(|e| e.disabled_at.is_some()));
    // Withdrawn stays withdrawn.
    let err = s.enable_entry(&staff, created.entries[0].id).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    let err = s.set_case_status(&staff, created.case.id, CaseStatus::Active).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    // Withdrawing twice is harmless and appends nothing.
    let seq = s.current_seq().await.unwrap();
    s.withdraw_case(&number, &pin).await.unwrap();
    assert_eq!(s.current_seq().await.unwrap(), seq);

    let actors: Vec<(String, String)> = s
        .audit_events(0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action.starts_with("case."))
        .map(|e| (e.action, e.actor))
        .collect();
    assert!(actors.contains(&("case.create".into(), "submit-page".into())), "{actors:?}");
    assert!(actors.contains(&("case.status".into(), "staff:amy".into())), "{actors:?}");
    assert!(
        actors.contains(&("case.withdraw".into(), format!("case-owner:{}", created.case.id))),
        "{actors:?}"
    );
    let all_audit = db
        .raw_texts("SELECT actor || ' ' || target || ' ' || details FROM audit_events")
        .await
        .unwrap()
        .join(" ");
    assert!(!all_audit.contains(&number), "the case number (half of the credentials) is not logged");
    assert!(actors.iter().any(|a| a.0 == "case.pin_failure"), "{actors:?}");

    // Staff withdrawal by id.
    let c2 = s
        .create_case(
            &Actor::named("x"),
            NewCase { bank_id: b.id, hashes: vec![CaseHash::pdq(random_pdq(), None)], metadata: json!(null) },
        )
        .await
        .unwrap();
    assert_ne!(c2.case.number, number);
    assert_eq!(
        s.list_cases(None, 0, 10).await.unwrap().iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![created.case.id, c2.case.id]
    );
    assert_eq!(s.list_cases(Some(CaseStatus::Received), 0, 10).await.unwrap(), vec![c2.case.clone()]);
    assert_eq!(s.list_cases(None, created.case.id, 10).await.unwrap(), vec![c2.case.clone()]);
    assert_eq!(s.admin_withdraw_case(&staff, c2.case.id).await.unwrap().status, CaseStatus::Withdrawn);
    assert_eq!(s.list_cases(Some(CaseStatus::Withdrawn), 0, 10).await.unwrap().len(), 2);
    assert!(active_map(s).await.1.is_empty());
}

async fn case_with_degenerate_hash_stores_nothing(db: TestDb) {
    let s = &db.store;
    let b = bank(s, "survivors", BankPurpose::SurvivorProtected).await;
    let err = s
        .create_case(
            &Actor::named("x"),
            NewCase {
                bank_id: b.id,
                hashes: vec![CaseHash::pdq(random_pdq(), Some(80)), CaseHash::pdq(Hash256::ZERO, None)],
                metadata: json!(null),
            },
        )
        .await
        .unwrap_err();
    match &err {
        StoreError::InvalidHash { index, reason } => {
            assert_eq!(*index, 1);
            assert_eq!(*reason, HashRejection::AllZeros);
        }
        other => panic!("expected InvalidHash, got {other}"),
    }
    let err = s
        .create_case(
            &Actor::named("x"),
            NewCase {
                bank_id: b.id,
                hashes: vec![CaseHash::pdq(random_pdq(), Some(20))],
                metadata: json!(null),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::InvalidHash { index: 0, reason: HashRejection::LowQuality { quality: 20, min: 50 } }
        ),
        "{err}"
    );
    let err = s
        .create_case(&Actor::named("x"), NewCase { bank_id: b.id, hashes: vec![], metadata: json!(null) })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidInput(_)), "{err}");
    let err = s
        .create_case(
            &Actor::named("x"),
            NewCase { bank_id: 777, hashes: vec![CaseHash::pdq(random_pdq(), None)], metadata: json!(null) },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    assert!(db.raw_texts("SELECT number FROM cases").await.unwrap().is_empty());
    assert!(s.list_entries(b.id, 0, 10).await.unwrap().is_empty());
    assert_eq!(s.current_seq().await.unwrap(), 0);
}

/// A store that locks a case after `max_attempts` wrong PINs for `lockout`, with one case of one
/// hash; returns the store, the case and a wrong PIN for it.
async fn store_with_a_case(
    db: &TestDb,
    max_attempts: u32,
    lockout: Duration,
) -> (Store, CreatedCase, String) {
    let opts = StoreOptions { pin_max_attempts: max_attempts, pin_lockout: lockout, ..Default::default() };
    let s = db.open_another_with(opts).await;
    let b = bank(&s, "survivors", BankPurpose::SurvivorProtected).await;
    let c = s
        .create_case(
            &Actor::named("x"),
            NewCase { bank_id: b.id, hashes: vec![CaseHash::pdq(random_pdq(), None)], metadata: json!(null) },
        )
        .await
        .unwrap();
    let wrong = if c.pin == "0000000000" { "0000000001".to_string() } else { "0000000000".to_string() };
    (s, c, wrong)
}

async fn pin_attempts_lock_the_case(db: TestDb) {
    let (s, c, wrong) = store_with_a_case(&db, 3, Duration::from_millis(1500)).await;
    let n = c.case.number.clone();
    // A success resets the counter.
    assert!(matches!(s.case_status(&n, &wrong).await, Err(StoreError::BadCredentials)));
    assert!(matches!(s.case_status(&n, &wrong).await, Err(StoreError::BadCredentials)));
    assert_eq!(s.case_pin_counters(c.case.id).await.unwrap().failed_attempts, 2);
    s.case_status(&n, &c.pin).await.unwrap();
    assert_eq!(s.case_pin_counters(c.case.id).await.unwrap().failed_attempts, 0);
    // Three wrong in a row lock it; then even the right PIN is refused until the lock ends.
    for _ in 0..3 {
        assert!(matches!(s.case_status(&n, &wrong).await, Err(StoreError::BadCredentials)));
    }
    let counters = s.case_pin_counters(c.case.id).await.unwrap();
    assert_eq!(counters.lockouts, 1);
    assert!(counters.locked_until.is_some());
    let err = s.case_status(&n, &c.pin).await.unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    assert!(err.is_user_error());
    assert!(matches!(s.withdraw_case(&n, &c.pin).await, Err(StoreError::Locked { .. })));
    // The lock is stored, not kept in memory: another process sees it.
    let other = db.open_another().await;
    assert!(matches!(other.case_status(&n, &c.pin).await, Err(StoreError::Locked { .. })));
    tokio::time::sleep(Duration::from_millis(1700)).await;
    s.case_status(&n, &c.pin).await.unwrap();
    assert_eq!(s.get_case(c.case.id).await.unwrap().case.status, CaseStatus::Received);
    let locks =
        s.audit_events(0, 1000).await.unwrap().into_iter().filter(|e| e.action == "case.locked").count();
    assert_eq!(locks, 1);
}

async fn parallel_pin_guesses_cannot_exceed_the_limit(db: TestDb) {
    let opts = StoreOptions { pin_max_attempts: 4, ..Default::default() };
    let s = db.open_another_with(opts).await;
    let b = bank(&s, "survivors", BankPurpose::SurvivorProtected).await;
    let c = s
        .create_case(
            &Actor::named("x"),
            NewCase { bank_id: b.id, hashes: vec![CaseHash::pdq(random_pdq(), None)], metadata: json!(null) },
        )
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..16u64 {
        let s = s.clone();
        let n = c.case.number.clone();
        let guess = format!("{:010}", (c.pin.parse::<u64>().unwrap() + 1 + i) % 10_000_000_000);
        tasks.push(tokio::spawn(async move { s.case_status(&n, &guess).await.map(|_| ()) }));
    }
    let mut bad = 0;
    let mut locked = 0;
    for t in tasks {
        match t.await.unwrap() {
            Err(StoreError::BadCredentials) => bad += 1,
            Err(StoreError::Locked { .. }) => locked += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(bad <= 4, "{bad} guesses were checked, the limit is 4");
    assert_eq!(bad + locked, 16);
    assert!(matches!(s.case_status(&c.case.number, &c.pin).await, Err(StoreError::Locked { .. })));
}

async fn api_keys_are_hashed_scoped_and_revocable(db: TestDb) {
    let s = &db.store;
    let k = s.create_api_key(&Actor::system(), "ingest", &[Scope::Lookup, Scope::Submit]).await.unwrap();
    assert!(k.secret.starts_with("csk_"));
    assert!(!format!("{k:?}").contains(&k.secret), "Debug must not print the secret");
    assert_eq!(k.key.scopes, [Scope::Lookup, Scope::Submit].into_iter().collect::<BTreeSet<_>>());
    let v = s.verify_api_key(&k.secret).await.unwrap();
    assert_eq!(v, k.key);
    assert!(v.allows(Scope::Lookup) && v.allows(Scope::Submit));
    assert!(!v.allows(Scope::Curate) && !v.allows(Scope::Admin));
    let a = s.create_api_key(&Actor::system(), "root", &[Scope::Admin]).await.unwrap();
    let av = s.verify_api_key(&a.secret).await.unwrap();
    assert!(Scope::ALL.iter().all(|sc| av.allows(*sc)), "admin implies every scope");

    // Only exactly the secret works.
    let mut tampered = k.secret.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'0' { b'1' } else { b'0' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert!(matches!(s.verify_api_key(&tampered).await, Err(StoreError::Unauthorized)));
    assert!(matches!(s.verify_api_key("csk_nope").await, Err(StoreError::Unauthorized)));
    assert!(matches!(s.verify_api_key("").await, Err(StoreError::Unauthorized)));

    // The secret is stored nowhere in clear.
    let body = k.secret.rsplit('_').next().unwrap().to_string();
    let all = db.raw_texts("SELECT name || prefix || scopes FROM api_keys").await.unwrap().join(" ")
        + &db.raw_texts("SELECT details FROM audit_events").await.unwrap().join(" ");
    assert!(!all.contains(&body));
    let hashes = match db.kind {
        Kind::Sqlite => db.raw_texts("SELECT hex(secret_hash) FROM api_keys").await.unwrap(),
        Kind::Postgres => db.raw_texts("SELECT encode(secret_hash, 'hex') FROM api_keys").await.unwrap(),
    };
    assert_eq!(hashes.len(), 2);
    assert!(hashes.iter().all(|h| h.len() == 64 && !body.eq_ignore_ascii_case(h)));

    assert_eq!(s.list_api_keys().await.unwrap().len(), 2);
    let r = s.revoke_api_key(&Actor::system(), k.key.id).await.unwrap();
    assert!(r.revoked_at.is_some());
    assert!(!r.allows(Scope::Lookup));
    assert!(matches!(s.verify_api_key(&k.secret).await, Err(StoreError::Unauthorized)));
    assert!(s.verify_api_key(&a.secret).await.is_ok());
    let err = s.create_api_key(&Actor::system(), "none", &[]).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidInput(_)));
}

async fn audit_log_is_append_only_and_transactional(db: TestDb) {
    let s = &db.store;
    let b = bank(s, "b", BankPurpose::KnownAbuse).await;
    let e = s.add_entry(&Actor::api_key(7), pdq_entry(b.id, random_pdq())).await.unwrap();
    s.disable_entry(&Actor::named("moderator:bo"), e.id).await.unwrap();
    s.record_audit(&Actor::api_key(7), "lookup", "pdq", json!({"matches": 1})).await.unwrap();
    // A failed write leaves no audit record.
    let _ = s
        .create_bank(
            &admin(),
            NewBank { name: "b".into(), description: "".into(), enabled: true, purpose: BankPurpose::Other },
        )
        .await
        .unwrap_err();

    let ev = s.audit_events(0, 100).await.unwrap();
    let got: Vec<(&str, &str, &str)> =
        ev.iter().map(|e| (e.actor.as_str(), e.action.as_str(), e.target.as_str())).collect();
    assert_eq!(
        got,
        vec![
            ("moderator:test", "bank.create", &*format!("bank:{}", b.id)),
            ("api-key:7", "entry.add", &*format!("entry:{}", e.id)),
            ("moderator:bo", "entry.disable", &*format!("entry:{}", e.id)),
            ("api-key:7", "lookup", "pdq"),
        ]
    );
    assert!(ev.windows(2).all(|w| w[0].id < w[1].id && w[0].at <= w[1].at));
    assert_eq!(ev[3].details, json!({"matches": 1}));
    assert_eq!(s.audit_events(ev[1].id, 2).await.unwrap(), ev[2..4].to_vec());

    // The database itself refuses to rewrite history.
    let upd = db.raw_exec("UPDATE audit_events SET actor = 'someone-else'").await;
    assert!(upd.unwrap_err().contains("append-only"));
    let del = db.raw_exec("DELETE FROM audit_events").await;
    assert!(del.unwrap_err().contains("append-only"));
    assert_eq!(s.audit_events(0, 100).await.unwrap(), ev);
}

async fn concurrent_writers_never_make_a_poller_skip(db: TestDb) {
    let s = db.store.clone();
    let b = bank(&s, "b", BankPurpose::KnownAbuse).await;
    let b2 = bank(&s, "b2", BankPurpose::KnownAbuse).await;
    // The poller is another store (as another process would be).
    let poller = db.open_another().await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Set once the poller holds its snapshot: the writers then write their second half.
    let snapshot = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poll_task = {
        let stop = stop.clone();
        let snapshot = snapshot.clone();
        tokio::spawn(async move {
            // Start from a snapshot taken while writers run, then follow the feed.
            tokio::time::sleep(Duration::from_millis(10)).await;
            let (mut seq, mut mirror) = active_map(&poller).await;
            snapshot.store(true, std::sync::atomic::Ordering::SeqCst);
            let mut polls = 0;
            loop {
                let done = stop.load(std::sync::atomic::Ordering::SeqCst);
                let ch = poller.changes_since(seq, 50).await.unwrap();
                apply(&mut mirror, &mut seq, &ch);
                polls += 1;
                if done && ch.is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (seq, mirror, polls)
        })
    };
    let mut writers = Vec::new();
    for w in 0..4 {
        let s = s.clone();
        let bank_id = if w % 2 == 0 { b.id } else { b2.id };
        let snapshot = snapshot.clone();
        writers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..15 {
                // Half the writes before the poller's snapshot, half after it, paced so that it
                // polls between them however fast or loaded the machine is.
                while i >= 7 && !snapshot.load(std::sync::atomic::Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                if i >= 7 {
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
                if i % 5 == 4 {
                    let lines = (0..5)
                        .map(|l| BulkLine {
                            line: l + 1,
                            value: SignalValue::Pdq(random_pdq()),
                            quality: None,
                            metadata: json!(null),
                        })
                        .collect();
                    let r =
                        s.add_entries_bulk(&admin(), bank_id, EntrySourceKind::Import, lines).await.unwrap();
                    ids.extend(r.added.iter().map(|a| a.1));
                } else {
                    let e = s.add_entry(&admin(), pdq_entry(bank_id, random_pdq())).await.unwrap();
                    if i % 3 == 0 {
                        s.disable_entry(&admin(), e.id).await.unwrap();
                    } else {
                        ids.push(e.id);
                    }
                }
            }
            ids
        }));
    }
    // Meanwhile toggle a bank a few times.
    for _ in 0..3 {
        s.set_bank_enabled(&admin(), b2.id, false).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        s.set_bank_enabled(&admin(), b2.id, true).await.unwrap();
    }
    let mut expected = BTreeSet::new();
    for w in writers {
        expected.extend(w.await.unwrap());
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (seq, mirror, polls) = poll_task.await.unwrap();
    assert!(polls > 3, "the poller ran during the writes");
    assert_eq!(seq, s.current_seq().await.unwrap());
    let (_, truth) = active_map(&s).await;
    assert_eq!(mirror, truth, "feed replayed on a snapshot equals the database");
    assert_eq!(truth.keys().copied().collect::<BTreeSet<_>>(), expected);
    // The full feed is gapless from 1.
    let all = s.changes_since(0, 100_000).await.unwrap();
    assert!(all.iter().enumerate().all(|(i, c)| c.seq == i as i64 + 1));
}

async fn another_process_sees_writes_within_one_second(db: TestDb) {
    let a = &db.store;
    let b_store = db.open_another().await;
    let bank_ = bank(a, "survivors", BankPurpose::SurvivorProtected).await;
    let (mut seq, mut mirror) = active_map(&b_store).await;

    async fn wait_for(
        reader: &Store,
        seq: &mut i64,
        mirror: &mut BTreeMap<i64, SignalValue>,
        pred: impl Fn(&BTreeMap<i64, SignalValue>) -> bool,
    ) -> Duration {
        let t = Instant::now();
        loop {
            let ch = reader.changes_since(*seq, 1000).await.unwrap();
            apply(mirror, seq, &ch);
            if pred(mirror) {
                return t.elapsed();
            }
            assert!(t.elapsed() < Duration::from_secs(1), "write not visible to the other store within 1 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let h = random_pdq();
    let created = a
        .create_case(
            &Actor::named("x"),
            NewCase { bank_id: bank_.id, hashes: vec![CaseHash::pdq(h, None)], metadata: json!(null) },
        )
        .await
        .unwrap();
    let id = created.entries[0].id;
    wait_for(&b_store, &mut seq, &mut mirror, |m| m.get(&id) == Some(&SignalValue::Pdq(h))).await;
    a.withdraw_case(&created.case.number, &created.pin).await.unwrap();
    wait_for(&b_store, &mut seq, &mut mirror, |m| !m.contains_key(&id)).await;
}

async fn webhook_outbox_claims_leases_and_retries(db: TestDb) {
    let s = &db.store;
    let hook = |n: i32| NewWebhook {
        url: "https://example.org/hook".into(),
        event_type: "match".into(),
        payload: json!({"n": n}),
    };
    let ids = s.enqueue_webhooks(&[hook(1), hook(2), hook(3)]).await.unwrap();
    assert_eq!(ids.len(), 3);
    assert!(matches!(
        s.enqueue_webhooks(&[NewWebhook {
            url: "ftp://x".into(),
            event_type: "match".into(),
            payload: json!({})
        }])
        .await,
        Err(StoreError::InvalidInput(_))
    ));
    let now = Timestamp::now().plus(Duration::from_millis(10));
    let lease = Duration::from_secs(30);
    let first = s.claim_due_webhooks(now, 2, lease).await.unwrap();
    assert_eq!(first.iter().map(|w| w.id).collect::<Vec<_>>(), ids[..2].to_vec());
    assert_eq!(first[0].payload, json!({"n": 1}));
    // A second worker (another process) gets only what is not leased.
    let other = db.open_another().await;
    let second = other.claim_due_webhooks(now, 10, lease).await.unwrap();
    assert_eq!(second.iter().map(|w| w.id).collect::<Vec<_>>(), vec![ids[2]]);
    assert!(s.claim_due_webhooks(now, 10, lease).await.unwrap().is_empty());

    let t0 = first[0].lease_token.unwrap();
    assert!(!s.mark_webhook_delivered(first[0].id, t0 ^ 1).await.unwrap(), "wrong lease token refused");
    assert!(s.mark_webhook_delivered(first[0].id, t0).await.unwrap());
    assert_eq!(s.get_webhook(first[0].id).await.unwrap().state, WebhookState::Delivered);
    assert!(!s.mark_webhook_delivered(first[0].id, t0).await.unwrap(), "delivered once");

    // Failure with a retry time: not due before it, due after it, attempts counted.
    let t1 = first[1].lease_token.unwrap();
    let retry_at = now.plus(Duration::from_secs(10));
    assert!(s.mark_webhook_failed(first[1].id, t1, "HTTP 503", Some(retry_at)).await.unwrap());
    let w = s.get_webhook(first[1].id).await.unwrap();
    assert_eq!(
        (w.attempts, w.state, w.next_attempt_at, w.last_error.as_deref()),
        (1, WebhookState::Pending, retry_at, Some("HTTP 503"))
    );
    assert!(s.claim_due_webhooks(now.plus(Duration::from_secs(9)), 10, lease).await.unwrap().is_empty());
    let again = s.claim_due_webhooks(retry_at, 10, lease).await.unwrap();
    assert_eq!(again.iter().map(|w| w.id).collect::<Vec<_>>(), vec![first[1].id]);
    // Giving up.
    assert!(s
        .mark_webhook_failed(again[0].id, again[0].lease_token.unwrap(), "HTTP 410", None)
        .await
        .unwrap());
    assert_eq!(s.get_webhook(again[0].id).await.unwrap().state, WebhookState::Dead);
    assert_eq!(s.get_webhook(again[0].id).await.unwrap().attempts, 2);

    // A worker that dies leaves a lease that expires; the old token is then useless.
    let stale = second[0].lease_token.unwrap();
    let later = now.plus(lease).plus(Duration::from_millis(1));
    let reclaimed = s.claim_due_webhooks(later, 10, lease).await.unwrap();
    assert_eq!(reclaimed.iter().map(|w| w.id).collect::<Vec<_>>(), vec![ids[2]]);
    assert_ne!(reclaimed[0].lease_token, Some(stale));
    assert!(!other.mark_webhook_delivered(ids[2], stale).await.unwrap());
    assert!(s.mark_webhook_delivered(ids[2], reclaimed[0].lease_token.unwrap()).await.unwrap());
    assert!(s.claim_due_webhooks(later.plus(Duration::from_secs(3600)), 10, lease).await.unwrap().is_empty());
}

async fn metadata_is_checked(db: TestDb) {
    let s = &db.store;
    let b = bank(s, "b", BankPurpose::KnownAbuse).await;
    let mut ne = pdq_entry(b.id, random_pdq());
    ne.metadata = json!([1, 2]);
    assert!(matches!(s.add_entry(&admin(), ne.clone()).await, Err(StoreError::InvalidInput(_))));
    ne.metadata = json!({"blob": "x".repeat(20_000)});
    let err = s.add_entry(&admin(), ne.clone()).await.unwrap_err();
    assert!(err.to_string().contains("metadata is"), "{err}");
    ne.metadata = json!(null);
    assert_eq!(s.add_entry(&admin(), ne).await.unwrap().metadata, json!({}));
    let lines = vec![
        BulkLine {
            line: 1,
            value: SignalValue::Pdq(random_pdq()),
            quality: None,
            metadata: json!({"src": "list-a"}),
        },
        BulkLine { line: 2, value: SignalValue::Pdq(random_pdq()), quality: None, metadata: json!("text") },
    ];
    let r = s.add_entries_bulk(&admin(), b.id, EntrySourceKind::Import, lines).await.unwrap();
    assert_eq!(r.added.len(), 1);
    assert_eq!(
        r.rejected,
        vec![LineError { line: 2, reason: "invalid input: metadata must be a JSON object".into() }]
    );
    assert_eq!(s.get_entry(r.added[0].1).await.unwrap().metadata, json!({"src": "list-a"}));
    let err = s.add_entries_bulk(&admin(), b.id, EntrySourceKind::Case, vec![]).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidInput(_)));
}

async fn data_survives_reopen(db: TestDb) {
    let b = bank(&db.store, "b", BankPurpose::KnownAbuse).await;
    let e = db.store.add_entry(&admin(), pdq_entry(b.id, random_pdq())).await.unwrap();
    let k = db.store.create_api_key(&Actor::system(), "k", &[Scope::Lookup]).await.unwrap();
    db.store.close().await;
    let s = db.open_another().await;
    assert_eq!(s.get_entry(e.id).await.unwrap(), e);
    assert_eq!(s.verify_api_key(&k.secret).await.unwrap().id, k.key.id);
    assert_eq!(s.current_seq().await.unwrap(), 1);
    if let StoreLocation::Sqlite(p) = &db.location {
        let mode = db.raw_texts("PRAGMA journal_mode").await.unwrap();
        assert_eq!(mode, vec!["wal".to_string()]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let m = std::fs::metadata(p.parent().unwrap()).unwrap().permissions().mode();
            assert_eq!(m & 0o777, 0o700, "data directory is private");
        }
    }
}

async fn listeners_wake_on_commits(db: TestDb) {
    let s = db.store.clone();
    let b = bank(&s, "b", BankPurpose::KnownAbuse).await;
    // On PostgreSQL the listener sits on another store (another process's view); SQLite wakes
    // listeners of the same store (the embedded case is one process).
    let reader = match db.kind {
        Kind::Postgres => db.open_another().await,
        Kind::Sqlite => s.clone(),
    };
    let mut l = reader.listen_changes().await.unwrap();
    assert!(!l.wait(Duration::from_millis(150)).await.unwrap(), "no write, no wake-up");
    let writer = s.clone();
    let bank_id = b.id;
    let t = Instant::now();
    let w = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        writer.add_entry(&admin(), pdq_entry(bank_id, random_pdq())).await.unwrap()
    });
    assert!(l.wait(Duration::from_secs(5)).await.unwrap());
    let waited = t.elapsed();
    let e = w.await.unwrap();
    assert!(waited < Duration::from_secs(1), "woken after {waited:?}");
    assert_eq!(reader.changes_since(0, 10).await.unwrap().last().unwrap().entry_id, e.id);
    if db.kind == Kind::Postgres {
        // Another schema's writes do not wake this listener.
        let other = TestDb::new(Kind::Postgres).await;
        let _g = common::SchemaGuard(other.schema.clone());
        let ob = bank(&other.store, "x", BankPurpose::KnownAbuse).await;
        while l.wait(Duration::from_millis(50)).await.unwrap() {}
        other.store.add_entry(&admin(), pdq_entry(ob.id, random_pdq())).await.unwrap();
        assert!(!l.wait(Duration::from_millis(300)).await.unwrap(), "woken by another schema");
        other.store.close().await;
    }
}

/// A derivative signature with a realistic PDQ hash and `n` random keypoints.
fn derive_sig(n: usize) -> consentry_derive::Signature {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let keypoints = (0..n)
        .map(|_| consentry_derive::Keypoint {
            x: rng.gen_range(0..4096),
            y: rng.gen_range(0..4096),
            level: rng.gen_range(0..4),
            desc: rng.gen(),
        })
        .collect();
    consentry_derive::Signature {
        pdq: random_pdq(),
        quality: 90,
        keypoints,
        band: None,
        source_side: 0,
        grid: None,
    }
}

fn derive_entry(bank_id: i64, sig: &consentry_derive::Signature) -> NewEntry {
    NewEntry {
        bank_id,
        value: SignalValue::from_signature(sig),
        quality: None,
        source: EntrySourceKind::Moderator,
        metadata: json!({"note": "derive"}),
    }
}

async fn active_of(store: &Store, signal: SignalType) -> BTreeMap<i64, SignalValue> {
    store.load_all_active(signal).await.unwrap().entries.into_iter().collect()
}

async fn derive_entries_are_stored_fed_and_loaded(db: TestDb) {
    let s = &db.store;
    let b = bank(s, "b", BankPurpose::SurvivorProtected).await;
    let sig = derive_sig(50);
    let value = SignalValue::from_signature(&sig);
    assert_eq!(value.signal_type(), SignalType::Derive);
    assert_eq!("derive".parse::<SignalType>().unwrap(), SignalType::Derive);
    assert_eq!(SignalValue::parse(SignalType::Derive, &value.to_text()).unwrap(), value);
    let e = s.add_entry(&admin(), derive_entry(b.id, &sig)).await.unwrap();
    assert_eq!(e.value, value);
    assert_eq!(e.value.derive_signature().unwrap().unwrap(), sig);
    assert!(e.value.as_pdq().is_none());
    assert_eq!(s.get_entry(e.id).await.unwrap(), e);
    assert_eq!(s.find_entries(&value).await.unwrap(), vec![e.clone()]);
    let p = s.add_entry(&admin(), pdq_entry(b.id, sig.pdq)).await.unwrap();

    // Each signal's active set holds only its own entries.
    assert_eq!(active_of(s, SignalType::Derive).await, BTreeMap::from([(e.id, value.clone())]));
    assert_eq!(active_of(s, SignalType::Pdq).await, BTreeMap::from([(p.id, SignalValue::Pdq(sig.pdq))]));

    s.disable_entry(&admin(), e.id).await.unwrap();
    assert!(active_of(s, SignalType::Derive).await.is_empty());
    s.enable_entry(&admin(), e.id).await.unwrap();
    assert_eq!(active_of(s, SignalType::Derive).await.len(), 1);
    s.set_bank_enabled(&admin(), b.id, false).await.unwrap();
    assert!(active_of(s, SignalType::Derive).await.is_empty());
    s.set_bank_enabled(&admin(), b.id, true).await.unwrap();
    s.remove_entry(&admin(), e.id).await.unwrap();
    assert!(active_of(s, SignalType::Derive).await.is_empty());

    let act = ChangeOp::Activate(value.clone());
    let deact = ChangeOp::Deactivate(SignalType::Derive);
    let feed: Vec<(i64, ChangeOp, String)> = s
        .changes_since(0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.entry_id == e.id)
        .map(|c| (c.seq, c.op, c.cause))
        .collect();
    let ops: Vec<(ChangeOp, &str)> = feed.iter().map(|(_, o, c)| (o.clone(), c.as_str())).collect();
    assert_eq!(
        ops,
        vec![
            (act.clone(), "entry.add"),
            (deact.clone(), "entry.disable"),
            (act.clone(), "entry.enable"),
            (deact.clone(), "bank.disable"),
            (act, "bank.enable"),
            (deact, "entry.remove"),
        ]
    );
    // Replaying the whole feed gives the same active sets as loading them.
    let mut replay = BTreeMap::new();
    let mut seq = 0;
    apply(&mut replay, &mut seq, &s.changes_since(0, 100).await.unwrap());
    let mut want = active_of(s, SignalType::Pdq).await;
    want.extend(active_of(s, SignalType::Derive).await);
    assert_eq!(replay, want);

    // Bulk lines may mix signals.
    let sig2 = derive_sig(10);
    let report = s
        .add_entries_bulk(
            &admin(),
            b.id,
            EntrySourceKind::Import,
            vec![
                BulkLine {
                    line: 1,
                    value: SignalValue::from_signature(&sig2),
                    quality: None,
                    metadata: json!({}),
                },
                BulkLine {
                    line: 2,
                    value: SignalValue::Pdq(random_pdq()),
                    quality: None,
                    metadata: json!({}),
                },
                BulkLine {
                    line: 3,
                    value: SignalValue::Derive(vec![1u8, 2, 3].into()),
                    quality: None,
                    metadata: json!({}),
                },
            ],
        )
        .await
        .unwrap();
    assert_eq!(report.added.len(), 2);
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(report.rejected[0].line, 3);
    assert!(report.rejected[0].reason.contains("not a derivative signature"), "{:?}", report.rejected);
    let d = active_of(s, SignalType::Derive).await;
    assert_eq!(d.values().cloned().collect::<Vec<_>>(), vec![SignalValue::from_signature(&sig2)]);
}

async fn derive_values_are_validated(db: TestDb) {
    let s = &db.store;
    let b = bank(s, "b", BankPurpose::KnownAbuse).await;
    // Undecodable bytes and text are user errors that say why.
    for bad in [vec![], vec![1u8, 2, 3], vec![9u8; 40]] {
        let mut ne = derive_entry(b.id, &derive_sig(1));
        ne.value = SignalValue::Derive(bad.into());
        let err = s.add_entry(&admin(), ne).await.unwrap_err();
        assert!(err.is_user_error(), "{err}");
        assert!(
            matches!(err, StoreError::InvalidHash { reason: HashRejection::NotASignature(_), .. }),
            "{err}"
        );
        assert!(err.to_string().contains("not a derivative signature"), "{err}");
    }
    let err = SignalValue::derive_from_base64("not base64!").unwrap_err();
    assert!(matches!(err, StoreError::InvalidInput(_)) && err.to_string().contains("base64"), "{err}");
    let mut truncated = derive_sig(3).to_bytes();
    truncated.pop();
    let err = SignalValue::derive_from_bytes(&truncated).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    // A degenerate global PDQ hash would match every flat image: rejected like a PDQ entry.
    let mut flat = derive_sig(20);
    flat.pdq = Hash256::ZERO;
    let err = s.add_entry(&admin(), derive_entry(b.id, &flat)).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidHash { reason: HashRejection::AllZeros, .. }), "{err}");
    let mut low = derive_sig(20);
    low.quality = 10;
    let err = s.add_entry(&admin(), derive_entry(b.id, &low)).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidHash { reason: HashRejection::LowQuality { .. }, .. }), "{err}");
    // More keypoints than any extractor makes.
    let big = derive_sig(60);
    let err = s.add_entry(&admin(), derive_entry(b.id, &big)).await.unwrap_err();
    assert!(err.to_string().contains("larger than the maximum"), "{err}");
    assert!(s.list_entries(b.id, 0, 10).await.unwrap().is_empty());
    assert_eq!(s.current_seq().await.unwrap(), 0);
}

async fn cases_take_derive_values(db: TestDb) {
    let s = &db.store;
    let b = bank(s, "survivors", BankPurpose::SurvivorProtected).await;
    let sig = derive_sig(40);
    let dv = SignalValue::from_signature(&sig);
    let created = s
        .create_case(
            &Actor::named("submit-page"),
            NewCase {
                bank_id: b.id,
                hashes: vec![CaseHash::pdq(sig.pdq, Some(90)), CaseHash { value: dv.clone(), quality: None }],
                metadata: json!({"client": "cli"}),
            },
        )
        .await
        .unwrap();
    assert_eq!(created.entries.len(), 2);
    let de = created.entries.iter().find(|e| e.value == dv).expect("derive entry");
    assert_eq!(de.source, EntrySource::Case(created.case.id));
    assert_eq!(active_of(s, SignalType::Derive).await, BTreeMap::from([(de.id, dv.clone())]));
    assert_eq!(active_of(s, SignalType::Pdq).await.len(), 1);
    let view = s.case_status(&created.case.number, &created.pin).await.unwrap();
    assert!(view.entries.iter().any(|e| e.value == dv));

    s.withdraw_case(&created.case.number, &created.pin).await.unwrap();
    assert!(active_of(s, SignalType::Derive).await.is_empty());
    assert!(active_of(s, SignalType::Pdq).await.is_empty());
    let last = s.changes_since(0, 100).await.unwrap();
    assert!(last.iter().any(|c| c.entry_id == de.id
        && c.op == ChangeOp::Deactivate(SignalType::Derive)
        && c.cause == "case.withdraw"));

    // A bad derive value stores nothing and names its position.
    let err = s
        .create_case(
            &Actor::named("x"),
            NewCase {
                bank_id: b.id,
                hashes: vec![
                    CaseHash::pdq(random_pdq(), None),
                    CaseHash { value: SignalValue::Derive(vec![1u8].into()), quality: None },
                ],
                metadata: json!(null),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::InvalidHash { index: 1, reason: HashRejection::NotASignature(_) }),
        "{err}"
    );
}

/// A bulk add larger than one multi-row INSERT (1,000 rows): every line gets the id of the row
/// holding its own value, metadata and quality, ids ascend with the lines, and the change feed
/// holds one activation per entry, in order, with consecutive sequence numbers.
async fn large_bulk_adds_map_every_line_to_its_entry(db: TestDb) {
    let s = &db.store;
    let b = bank(s, "large", BankPurpose::KnownAbuse).await;
    let seq0 = s.current_seq().await.unwrap();
    let hashes: Vec<Hash256> = (0..2_345).map(|_| random_pdq()).collect();
    let lines: Vec<BulkLine> = hashes
        .iter()
        .enumerate()
        .map(|(i, h)| BulkLine {
            line: 10 + 2 * i as u64,
            value: SignalValue::Pdq(*h),
            quality: Some(50 + (i % 50) as i32),
            metadata: json!({"i": i}),
        })
        .collect();
    let r = s.add_entries_bulk(&admin(), b.id, EntrySourceKind::Import, lines).await.unwrap();
    assert!(r.rejected.is_empty(), "{:?}", r.rejected);
    assert_eq!(r.added.len(), hashes.len());
    assert!(r.added.windows(2).all(|w| w[0].1 < w[1].1), "ids ascend with the lines");
    let stored = s.list_entries(b.id, 0, 10_000).await.unwrap();
    assert_eq!(stored.len(), hashes.len());
    let by_id: BTreeMap<i64, &Entry> = stored.iter().map(|e| (e.id, e)).collect();
    for (i, (line, id)) in r.added.iter().enumerate() {
        assert_eq!(*line, 10 + 2 * i as u64);
        let e = by_id[id];
        assert_eq!(e.value, SignalValue::Pdq(hashes[i]), "line {line}");
        assert_eq!(e.quality, Some(50 + (i % 50) as i32));
        assert_eq!(e.metadata, json!({"i": i}));
        assert_eq!(e.source, EntrySource::Import);
    }
    let ch = s.changes_since(seq0, 10_000).await.unwrap();
    assert_eq!(ch.len(), hashes.len());
    for (i, c) in ch.iter().enumerate() {
        assert_eq!(c.seq, seq0 + 1 + i as i64);
        assert_eq!(c.entry_id, r.added[i].1);
        assert_eq!(c.op, ChangeOp::Activate(SignalValue::Pdq(hashes[i])));
    }
    assert_eq!(s.current_seq().await.unwrap(), seq0 + hashes.len() as i64);
    // A case's hashes go through the same multi-row path.
    let survivors = bank(s, "survivors", BankPurpose::SurvivorProtected).await;
    let case_hashes: Vec<CaseHash> = (0..3).map(|_| CaseHash::pdq(random_pdq(), Some(90))).collect();
    let created = s
        .create_case(
            &Actor::named("anonymous"),
            NewCase { bank_id: survivors.id, hashes: case_hashes.clone(), metadata: json!({}) },
        )
        .await
        .unwrap();
    let got: Vec<SignalValue> = created.entries.iter().map(|e| e.value.clone()).collect();
    let want: Vec<SignalValue> = case_hashes.iter().map(|h| h.value.clone()).collect();
    assert_eq!(got, want);
}

/// `for_each_active_page` streams exactly `load_all_active`'s set, in id order, in pages of at
/// most the size asked, with the same feed position: disabled entries and entries of disabled
/// banks are left out.
async fn active_set_pages_equal_the_whole_active_set(db: TestDb) {
    let s = &db.store;
    let on = bank(s, "on", BankPurpose::KnownAbuse).await;
    let off = bank(s, "off", BankPurpose::KnownAbuse).await;
    let mut ids = Vec::new();
    for i in 0..23 {
        let b = if i % 4 == 3 { off.id } else { on.id };
        let e = s
            .add_entry(
                &admin(),
                NewEntry {
                    bank_id: b,
                    value: SignalValue::Pdq(random_pdq()),
                    quality: None,
                    source: EntrySourceKind::Moderator,
                    metadata: json!(null),
                },
            )
            .await
            .unwrap();
        ids.push(e.id);
    }
    s.disable_entry(&admin(), ids[0]).await.unwrap();
    s.disable_entry(&admin(), ids[9]).await.unwrap();
    s.set_bank_enabled(&admin(), off.id, false).await.unwrap();
    let whole = s.load_all_active(SignalType::Pdq).await.unwrap();
    assert_eq!(whole.entries.len(), 23 - 5 - 2);
    for size in [1u32, 4, 16, 1000] {
        let mut pages = Vec::new();
        let seq = s
            .for_each_active_page(SignalType::Pdq, size, |p| {
                pages.push(p);
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(seq, whole.seq);
        assert!(pages.iter().all(|p| !p.is_empty() && p.len() <= size as usize), "page size {size}");
        let flat: Vec<(i64, SignalValue)> = pages.into_iter().flatten().collect();
        let w: Vec<(i64, SignalValue)> = whole.entries.clone();
        assert_eq!(flat, w, "page size {size}");
    }
    // An error from the callback stops the load and is returned.
    let mut calls = 0;
    let err = s
        .for_each_active_page(SignalType::Pdq, 2, |_| {
            calls += 1;
            Err(StoreError::Internal("stop".into()))
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Internal(ref m) if m == "stop"), "{err:?}");
    assert_eq!(calls, 1);
}

/// `details_generation` (what a cache of entry and bank details keys on) moves after every write
/// that changes an existing entry, bank or case, and not after writes that only add rows.
async fn details_generation_moves_on_changes_to_existing_rows(db: TestDb) {
    let s = &db.store;
    let g = || s.details_generation();
    let g0 = g();
    let b = bank(s, "details", BankPurpose::KnownAbuse).await;
    let e = s.add_entry(&admin(), pdq_entry(b.id, random_pdq())).await.unwrap();
    let created = s
        .create_case(
            &Actor::named("submit-page"),
            NewCase { bank_id: b.id, hashes: vec![CaseHash::pdq(random_pdq(), None)], metadata: json!({}) },
        )
        .await
        .unwrap();
    assert_eq!(g(), g0, "adding banks, entries and cases changes no existing row");
    let mut last = g();
    let mut moved = |what: &str| {
        let now = s.details_generation();
        assert!(now > last, "{what} must move the details generation");
        last = now;
    };
    s.disable_entry(&admin(), e.id).await.unwrap();
    moved("disable_entry");
    s.enable_entry(&admin(), e.id).await.unwrap();
    moved("enable_entry");
    let update = BankUpdate { name: Some("details-renamed".into()), description: None, purpose: None };
    s.update_bank(&admin(), b.id, update).await.unwrap();
    moved("update_bank");
    s.set_bank_enabled(&admin(), b.id, false).await.unwrap();
    moved("set_bank_enabled");
    s.set_case_status(&admin(), created.case.id, CaseStatus::Active).await.unwrap();
    moved("set_case_status");
    s.withdraw_case(&created.case.number, &created.pin).await.unwrap();
    moved("withdraw_case");
    s.remove_entry(&admin(), e.id).await.unwrap();
    moved("remove_entry");
    // A failed write moves it too (harmless; a cache just reads again).
    assert!(s.disable_entry(&admin(), e.id).await.is_err());
    moved("a failed disable_entry");
}

/// `off` milliseconds into UTC day `d`.
fn ms(d: i64, off: i64) -> Timestamp {
    Timestamp(d * 86_400_000 + off)
}

/// A row of summed match counts.
fn row(
    key: StatsKey,
    matches: i64,
    entries: i64,
    sources: i64,
    days: i64,
    first_at: Timestamp,
    last_at: Timestamp,
) -> StatsRow {
    StatsRow { key, matches, entries, sources, days, first_at, last_at }
}

async fn match_counts_add_up_by_bank_entry_source_day_and_signal(db: TestDb) {
    let s = &db.store;
    let known = bank(s, "known", BankPurpose::KnownAbuse).await;
    let cases = bank(s, "cases", BankPurpose::SurvivorProtected).await;
    let a = s.add_entry(&admin(), pdq_entry(known.id, random_pdq())).await.unwrap();
    let b = s.add_entry(&admin(), pdq_entry(known.id, random_pdq())).await.unwrap();
    let d = s.add_entry(&admin(), derive_entry(cases.id, &derive_sig(20))).await.unwrap();
    let gone = s.add_entry(&admin(), pdq_entry(cases.id, random_pdq())).await.unwrap();
    s.remove_entry(&admin(), gone.id).await.unwrap();
    let day = 20_000; // 2024-10-04
    let t = |entry_id, source: &str, day: i64, matches, first: i64, last: i64| MatchTally {
        entry_id,
        source: source.into(),
        day,
        matches,
        first_at: Timestamp(day * 86_400_000 + first),
        last_at: Timestamp(day * 86_400_000 + last),
    };
    // Two batches; the same (entry, day, source) adds up, keeping the earliest first and the
    // latest last match; a removed entry's tally is dropped.
    let first = [
        t(a.id, "platform-x", day, 2, 500, 900),
        t(b.id, "telegram:-100", day, 1, 50, 50),
        t(gone.id, "x", day, 7, 0, 0),
    ];
    assert_eq!(s.record_matches(&first).await.unwrap(), 2);
    let second = [
        t(a.id, "platform-x", day, 3, 100, 1_000),
        t(a.id, "telegram:-100", day + 1, 1, 10, 10),
        t(d.id, "platform-x", day + 2, 4, 0, 5),
        t(b.id, "platform-x", day, 0, 0, 0),
    ];
    assert_eq!(s.record_matches(&second).await.unwrap(), 3);
    assert_eq!(s.record_matches(&[]).await.unwrap(), 0);

    let q = |group| StatsQuery::over(group, day, day + 2);
    assert_eq!(
        s.match_stats(&q(StatsGroup::Entry)).await.unwrap(),
        vec![
            row(StatsKey::Entry { id: a.id, bank_id: known.id }, 6, 1, 2, 2, ms(day, 100), ms(day + 1, 10)),
            row(StatsKey::Entry { id: d.id, bank_id: cases.id }, 4, 1, 1, 1, ms(day + 2, 0), ms(day + 2, 5)),
            row(StatsKey::Entry { id: b.id, bank_id: known.id }, 1, 1, 1, 1, ms(day, 50), ms(day, 50)),
        ]
    );
    assert_eq!(
        s.match_stats(&q(StatsGroup::Bank)).await.unwrap(),
        vec![
            row(StatsKey::Bank(known.id), 7, 2, 2, 2, ms(day, 50), ms(day + 1, 10)),
            row(StatsKey::Bank(cases.id), 4, 1, 1, 1, ms(day + 2, 0), ms(day + 2, 5)),
        ]
    );
    assert_eq!(
        s.match_stats(&q(StatsGroup::Source)).await.unwrap(),
        vec![
            row(StatsKey::Source("platform-x".into()), 9, 2, 1, 2, ms(day, 100), ms(day + 2, 5)),
            row(StatsKey::Source("telegram:-100".into()), 2, 2, 1, 2, ms(day, 50), ms(day + 1, 10)),
        ]
    );
    let days: Vec<(StatsKey, i64)> =
        s.match_stats(&q(StatsGroup::Day)).await.unwrap().into_iter().map(|r| (r.key, r.matches)).collect();
    assert_eq!(days, vec![(StatsKey::Day(day), 6), (StatsKey::Day(day + 1), 1), (StatsKey::Day(day + 2), 4)]);
    let signals: Vec<(StatsKey, i64)> = s
        .match_stats(&q(StatsGroup::Signal))
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.key, r.matches))
        .collect();
    assert_eq!(
        signals,
        vec![(StatsKey::Signal(SignalType::Pdq), 7), (StatsKey::Signal(SignalType::Derive), 4)]
    );

    // Filters and limits.
    let only_known_day1 = StatsQuery { bank_id: Some(known.id), until_day: day, ..q(StatsGroup::Source) };
    let r = s.match_stats(&only_known_day1).await.unwrap();
    assert_eq!(r.iter().map(|r| r.matches).collect::<Vec<_>>(), vec![5, 1]);
    let one_entry = StatsQuery { entry_id: Some(a.id), ..q(StatsGroup::Day) };
    assert_eq!(s.match_stats(&one_entry).await.unwrap().len(), 2);
    let one_source = StatsQuery { source: Some("telegram:-100".into()), ..q(StatsGroup::Entry) };
    assert_eq!(s.match_stats(&one_source).await.unwrap().len(), 2);
    let top = StatsQuery { limit: 1, ..q(StatsGroup::Entry) };
    assert_eq!(s.match_stats(&top).await.unwrap()[0].key, StatsKey::Entry { id: a.id, bank_id: known.id });
    let later = StatsQuery { since_day: day + 3, until_day: day + 9, ..q(StatsGroup::Bank) };
    assert!(s.match_stats(&later).await.unwrap().is_empty());
    let backwards = StatsQuery { since_day: day + 1, until_day: day, ..q(StatsGroup::Bank) };
    assert!(matches!(s.match_stats(&backwards).await, Err(StoreError::InvalidInput(_))));
    assert_eq!("entry".parse::<StatsGroup>().unwrap(), StatsGroup::Entry);
    assert!("everything".parse::<StatsGroup>().is_err());
    assert_eq!(day_of(Timestamp(day * 86_400_000 + 86_399_999)), day);
    assert_eq!(day_of(Timestamp(-1)), -1);

    // The counts outlive their entry, and another process sees them.
    s.remove_entry(&admin(), d.id).await.unwrap();
    let again = db.open_another().await;
    assert_eq!(again.match_stats(&q(StatsGroup::Entry)).await.unwrap().len(), 3);
}

async fn retention_prunes_old_changes_and_match_counts(db: TestDb) {
    let s = &db.store;
    let b = bank(s, "b", BankPurpose::KnownAbuse).await;
    assert_eq!(s.prune_changes_before(&admin(), Timestamp(0), 100).await.unwrap(), 0, "nothing that old");
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(s.add_entry(&admin(), pdq_entry(b.id, random_pdq())).await.unwrap().id);
    }
    let head = s.current_seq().await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cut = Timestamp::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let later = s.add_entry(&admin(), pdq_entry(b.id, random_pdq())).await.unwrap();
    // The changes made before the cut go, two at a time; a reader behind it reloads, one past
    // it goes on.
    assert_eq!(head, 3);
    assert_eq!(s.prune_changes_before(&admin(), cut, 2).await.unwrap(), 2);
    assert_eq!(s.prune_changes_before(&admin(), cut, 2).await.unwrap(), 1);
    assert_eq!(s.prune_changes_before(&admin(), cut, 2).await.unwrap(), 0, "once");
    assert!(matches!(s.changes_since(0, 10).await, Err(StoreError::FeedTruncated { .. })));
    let after: Vec<i64> = s.changes_since(head, 10).await.unwrap().iter().map(|c| c.entry_id).collect();
    assert_eq!(after, vec![later.id]);
    let set = s.load_all_active(SignalType::Pdq).await.unwrap();
    assert_eq!(set.entries.len(), 4, "the entries themselves stay");

    let today = day_of(Timestamp::now());
    let t = |day: i64, source: &str| MatchTally {
        entry_id: ids[0],
        source: source.into(),
        day,
        matches: 2,
        first_at: Timestamp(day * 86_400_000),
        last_at: Timestamp(day * 86_400_000 + 5),
    };
    let tallies = [t(today - 400, "a"), t(today - 31, "a"), t(today - 30, "b"), t(today, "a")];
    assert_eq!(s.record_matches(&tallies).await.unwrap(), 4);
    assert_eq!(s.prune_match_counts(&admin(), today - 30, 1).await.unwrap(), 1);
    assert_eq!(s.prune_match_counts(&admin(), today - 30, 5).await.unwrap(), 1);
    assert_eq!(s.prune_match_counts(&admin(), today - 30, 5).await.unwrap(), 0);
    let days: Vec<StatsKey> = s
        .match_stats(&StatsQuery::over(StatsGroup::Day, today - 500, today))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.key)
        .collect();
    assert_eq!(days, vec![StatsKey::Day(today - 30), StatsKey::Day(today)]);
    // Both prunes are in the audit log.
    let actions: Vec<String> = s.audit_events(0, 1000).await.unwrap().into_iter().map(|e| e.action).collect();
    assert!(
        actions.iter().any(|a| a == "changes.prune") && actions.iter().any(|a| a == "match_counts.prune")
    );
}

async fn case_status_counts_what_matched(db: TestDb) {
    let s = &db.store;
    let b = bank(s, "survivors", BankPurpose::SurvivorProtected).await;
    let actor = Actor::named("submit-page");
    let case = |hashes: Vec<Hash256>| {
        s.create_case(
            &actor,
            NewCase {
                bank_id: b.id,
                hashes: hashes.into_iter().map(|h| CaseHash::pdq(h, None)).collect(),
                metadata: json!({}),
            },
        )
    };
    let mine = case(vec![random_pdq(), random_pdq(), random_pdq()]).await.unwrap();
    let other = case(vec![random_pdq()]).await.unwrap();
    let loose = s.add_entry(&admin(), pdq_entry(b.id, random_pdq())).await.unwrap();
    let view = s.case_status(&mine.case.number, &mine.pin).await.unwrap();
    assert_eq!(view.matches, CaseMatches::default(), "nothing matched yet");

    let day = 20_100;
    let t = |entry_id, source: &str, d: i64, matches, first: i64, last: i64| MatchTally {
        entry_id,
        source: source.into(),
        day: d,
        matches,
        first_at: ms(d, first),
        last_at: ms(d, last),
    };
    let (e0, e1, e2) = (mine.entries[0].id, mine.entries[1].id, mine.entries[2].id);
    let tallies = [
        t(e0, "platform-x", day, 3, 10, 90),
        t(e0, "telegram:-100", day + 4, 1, 7, 7),
        t(e2, "platform-x", day + 1, 2, 0, 50),
        // Neither is this case's: another case's entry, and an entry of the same bank outside any case.
        t(other.entries[0].id, "platform-y", day + 9, 5, 0, 0),
        t(loose.id, "platform-y", day - 3, 8, 0, 0),
    ];
    assert_eq!(s.record_matches(&tallies).await.unwrap(), 5);

    let entry = |id| StatsKey::Entry { id, bank_id: b.id };
    let expected = CaseMatches {
        total: Some(row(StatsKey::Bank(b.id), 6, 2, 2, 3, ms(day, 10), ms(day + 4, 7))),
        by_entry: vec![
            row(entry(e0), 4, 1, 2, 2, ms(day, 10), ms(day + 4, 7)),
            row(entry(e2), 2, 1, 1, 1, ms(day + 1, 0), ms(day + 1, 50)),
        ],
    };
    let view = s.case_status(&mine.case.number, &mine.pin).await.unwrap();
    assert_eq!(view.matches, expected);
    assert_eq!(view.matches.entry(e0).map(|r| r.matches), Some(4));
    assert_eq!(view.matches.entry(e1), None);
    assert_eq!(s.get_case(mine.case.id).await.unwrap().matches, expected, "the staff view has them too");
    let theirs = s.case_status(&other.case.number, &other.pin).await.unwrap().matches;
    assert_eq!(theirs.total.map(|r| (r.matches, r.entries)), Some((5, 1)));
    assert_eq!(theirs.by_entry.len(), 1);

    // The staff statistics filter by case the same way.
    let by_day =
        StatsQuery { case_id: Some(mine.case.id), ..StatsQuery::over(StatsGroup::Day, day - 10, day + 10) };
    let days: Vec<(StatsKey, i64)> =
        s.match_stats(&by_day).await.unwrap().into_iter().map(|r| (r.key, r.matches)).collect();
    assert_eq!(days, vec![(StatsKey::Day(day), 3), (StatsKey::Day(day + 1), 2), (StatsKey::Day(day + 4), 1)]);

    // A withdrawn case still shows what was caught before.
    s.withdraw_case(&mine.case.number, &mine.pin).await.unwrap();
    assert_eq!(s.case_status(&mine.case.number, &mine.pin).await.unwrap().matches, expected);
}

async fn staff_reset_a_lost_pin(db: TestDb) {
    let (s, c, wrong) = store_with_a_case(&db, 2, Duration::from_secs(3600)).await;
    let n = c.case.number.clone();
    for _ in 0..2 {
        assert!(matches!(s.case_status(&n, &wrong).await, Err(StoreError::BadCredentials)));
    }
    assert!(matches!(s.case_status(&n, &c.pin).await, Err(StoreError::Locked { .. })), "locked for an hour");

    let staff = Actor::named("staff:amy");
    let (case, pin) = s.reset_case_pin(&staff, c.case.id).await.unwrap();
    assert_eq!((case.id, case.status), (c.case.id, CaseStatus::Received));
    assert_eq!(pin.len(), PIN_DIGITS);
    assert_ne!(pin, c.pin);
    // The lock is gone; the new PIN opens the case, the old one no longer does.
    assert_eq!(s.case_status(&n, &pin).await.unwrap().case.id, c.case.id);
    assert!(matches!(s.case_status(&n, &c.pin).await, Err(StoreError::BadCredentials)));
    let counters = s.case_pin_counters(c.case.id).await.unwrap();
    assert_eq!((counters.failed_attempts, counters.locked_until.is_some()), (1, false));
    // Stored hashed only, and audited under the staff's name.
    let stored = db.raw_texts("SELECT pin_hash FROM cases").await.unwrap().join(" ");
    assert!(stored.starts_with("$argon2id$") && !stored.contains(&pin), "{stored}");
    let resets: Vec<String> = s
        .audit_events(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "case.pin_reset")
        .map(|e| e.actor)
        .collect();
    assert_eq!(resets, ["staff:amy"]);
    assert!(matches!(s.reset_case_pin(&staff, 999_999).await, Err(StoreError::NotFound(_))));
}

async fn withdrawn_cases_lose_their_codes_when_purged(db: TestDb) {
    let s = &db.store;
    let b = bank(s, "survivors", BankPurpose::SurvivorProtected).await;
    let actor = Actor::named("x");
    let open = |n: usize| {
        s.create_case(
            &actor,
            NewCase {
                bank_id: b.id,
                hashes: (0..n).map(|_| CaseHash::pdq(random_pdq(), None)).collect(),
                metadata: json!(null),
            },
        )
    };
    let (gone, kept) = (open(3).await.unwrap(), open(1).await.unwrap());
    let before_withdrawal = Timestamp::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    s.withdraw_case(&gone.case.number, &gone.pin).await.unwrap();
    let values: Vec<String> = gone.entries.iter().map(|e| e.value.to_text()).collect();
    // Withdrawn after the cut: nothing yet.
    assert_eq!(s.purge_withdrawn_cases(&admin(), before_withdrawal, 10).await.unwrap(), 0);
    // Withdrawn before it: its codes go, two at a time; the other case keeps its own.
    let cut = Timestamp(Timestamp::now().0 + 1);
    assert_eq!(s.purge_withdrawn_cases(&admin(), cut, 2).await.unwrap(), 2);
    assert_eq!(s.purge_withdrawn_cases(&admin(), cut, 2).await.unwrap(), 1);
    assert_eq!(s.purge_withdrawn_cases(&admin(), cut, 2).await.unwrap(), 0, "once");
    let view = s.case_status(&gone.case.number, &gone.pin).await.unwrap();
    assert_eq!((view.case.status, view.entries.len()), (CaseStatus::Withdrawn, 0));
    assert_eq!(s.case_status(&kept.case.number, &kept.pin).await.unwrap().entries.len(), 1);
    assert_eq!(active_map(s).await.1.len(), 1);
    // The values are nowhere in the database any more, the audit log included.
    let left: Vec<String> =
        s.list_entries(b.id, 0, 100).await.unwrap().iter().map(|e| e.value.to_text()).collect();
    let everything =
        left.join(" ") + &db.raw_texts("SELECT details FROM audit_events").await.unwrap().join(" ");
    assert_eq!(left.len(), 1);
    assert!(values.iter().all(|v| !everything.contains(v.as_str())), "a purged code is still stored");
    let purges = s
        .audit_events(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "cases.purge_withdrawn")
        .count();
    assert_eq!(purges, 2);
    // A code removed one by one by staff is gone as well; a moderator's entry keeps its value
    // in the audit log (to be restored if removed by mistake).
    let code = &kept.entries[0];
    s.remove_entry(&admin(), code.id).await.unwrap();
    let loose = s.add_entry(&admin(), pdq_entry(b.id, random_pdq())).await.unwrap();
    s.remove_entry(&admin(), loose.id).await.unwrap();
    let audit = db.raw_texts("SELECT details FROM audit_events").await.unwrap().join(" ");
    assert!(!audit.contains(&code.value.to_text()), "a removed code is still in the audit log");
    assert!(audit.contains(&loose.value.to_text()));
}

async fn case_events_are_written_with_the_change(db: TestDb) {
    let s = &db.store;
    let b = bank(s, "survivors", BankPurpose::SurvivorProtected).await;
    let outbox: CaseOutbox = std::sync::Arc::new(|e: &CaseEvent| {
        vec![NewWebhook {
            url: "http://helpline.test/events".into(),
            event_type: "case".into(),
            payload: json!({
                "action": e.kind.as_str(),
                "number": e.case.number,
                "status": e.case.status.as_str(),
                "bank": e.bank,
                "codes": e.codes,
            }),
        }]
    });
    s.set_case_outbox(Some(outbox));
    let events = || async {
        let rows = db.raw_texts("SELECT payload FROM webhook_outbox ORDER BY id").await.unwrap();
        rows.iter().map(|r| serde_json::from_str::<serde_json::Value>(r).unwrap()).collect::<Vec<_>>()
    };
    let staff = Actor::named("staff:amy");
    let someone = Actor::named("x");
    let open = |n: usize| {
        s.create_case(
            &someone,
            NewCase {
                bank_id: b.id,
                hashes: (0..n).map(|_| CaseHash::pdq(random_pdq(), None)).collect(),
                metadata: json!(null),
            },
        )
    };
    // Opened: the event is in the outbox when the call returns (no sender runs here).
    let c = open(2).await.unwrap();
    let n = c.case.number.clone();
    let want = |action: &str, status: &str| json!({"action": action, "number": n, "status": status, "bank": "survivors", "codes": 2});
    assert_eq!(events().await, [want("created", "received")]);
    // Reviewed twice: one event. Withdrawn by the survivor, then again by staff: one event.
    s.set_case_status(&staff, c.case.id, CaseStatus::Active).await.unwrap();
    s.set_case_status(&staff, c.case.id, CaseStatus::Active).await.unwrap();
    s.withdraw_case(&n, &c.pin).await.unwrap();
    s.withdraw_case(&n, &c.pin).await.unwrap();
    s.admin_withdraw_case(&staff, c.case.id).await.unwrap();
    // Refused (a withdrawn case is not reopened), and rejected before any write: no event.
    assert!(matches!(
        s.set_case_status(&staff, c.case.id, CaseStatus::Active).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(open(0).await.is_err());
    assert_eq!(
        events().await,
        [want("created", "received"), want("status", "active"), want("withdrawn", "withdrawn")]
    );
    // The hook removed: changes make no more events.
    s.set_case_outbox(None);
    open(1).await.unwrap();
    assert_eq!(events().await.len(), 3);
}
