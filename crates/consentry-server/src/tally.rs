//! Match counts: what was caught, by whom, when. Every lookup that matches adds, in memory, one
//! to each matched entry's count for the day and the source (the API key's name, or the chat a
//! bot saw it in); a background task adds these to the store's `match_counts` once a second
//! (`Store::record_matches`), and `GET /v1/stats/matches` sums them. Counting never delays a
//! lookup: the store is written off the request path, and a failed write keeps the counts for
//! the next attempt. Only ids, names and numbers are kept — never a hash, an image or a query.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, Weak};
use std::time::Duration;

use consentry_store::{day_of, MatchTally, Store, StoreError, Timestamp};
use serde_json::Value;

/// One source's counts waiting to be written, by (entry, day): (matches, first, last).
type Counts = HashMap<(i64, i64), (i64, Timestamp, Timestamp)>;

/// Counts waiting to be written, by (entry, day, source).
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// By source, then (entry, day): (matches, first, last). Keyed by source first so that a
    /// count is added without allocating once the source has been seen.
    pending: Mutex<HashMap<String, Counts>>,
    /// Matches since the process started, by bank name, then signal: the `/metrics` counter.
    totals: Mutex<HashMap<String, HashMap<String, u64>>>,
}

/// Adds `matches` between `first` and `last` to the count of `key`.
fn merge(counts: &mut Counts, key: (i64, i64), matches: i64, first: Timestamp, last: Timestamp) {
    let e = counts.entry(key).or_insert((0, first, last));
    e.0 += matches;
    e.1 = e.1.min(first);
    e.2 = e.2.max(last);
}

/// The map under `key`, inserted if missing (allocating the key only then).
fn slot<'a, V: Default>(m: &'a mut HashMap<String, V>, key: &str) -> &'a mut V {
    if !m.contains_key(key) {
        m.insert(key.to_owned(), V::default());
    }
    m.get_mut(key).expect("just inserted")
}

impl Tally {
    /// Counts the matches of one lookup reply (`bank`, `entry_id` and `signal` of each) for
    /// `source`.
    pub(crate) fn add_reply(&self, source: &str, matches: &[Value]) {
        let ids: Vec<(i64, &str, &str)> = matches
            .iter()
            .filter_map(|m| {
                Some((
                    m["entry_id"].as_i64()?,
                    m["bank"].as_str().unwrap_or(""),
                    m["signal"].as_str().unwrap_or("pdq"),
                ))
            })
            .collect();
        if ids.is_empty() {
            return;
        }
        let now = Timestamp::now();
        {
            let mut totals = self.totals.lock().unwrap_or_else(|e| e.into_inner());
            for &(_, bank, signal) in &ids {
                *slot(slot(&mut totals, bank), signal) += 1;
            }
        }
        self.add(source, ids.into_iter().map(|(id, _, _)| id), now);
    }

    /// Counts one match of each of `entry_ids` for `source` at `at`.
    pub(crate) fn add(&self, source: &str, entry_ids: impl IntoIterator<Item = i64>, at: Timestamp) {
        let day = day_of(at);
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let by_entry = slot(&mut p, source);
        for id in entry_ids {
            merge(by_entry, (id, day), 1, at, at);
        }
    }

    /// The matches counted since start, by (bank, signal).
    pub(crate) fn totals(&self) -> BTreeMap<(String, String), u64> {
        let t = self.totals.lock().unwrap_or_else(|e| e.into_inner());
        t.iter()
            .flat_map(|(bank, m)| m.iter().map(|(signal, n)| ((bank.clone(), signal.clone()), *n)))
            .collect()
    }

    fn take(&self) -> Vec<MatchTally> {
        let taken = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        taken
            .into_iter()
            .flat_map(|(source, by_entry)| {
                by_entry.into_iter().map(move |((entry_id, day), (matches, first_at, last_at))| MatchTally {
                    entry_id,
                    source: source.clone(),
                    day,
                    matches,
                    first_at,
                    last_at,
                })
            })
            .collect()
    }

    fn put_back(&self, tallies: Vec<MatchTally>) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for t in tallies {
            merge(slot(&mut p, &t.source), (t.entry_id, t.day), t.matches, t.first_at, t.last_at);
        }
    }

    /// Writes the pending counts to the store; on failure they stay pending.
    pub(crate) async fn flush(&self, store: &Store) -> Result<usize, StoreError> {
        let batch = self.take();
        if batch.is_empty() {
            return Ok(0);
        }
        match store.record_matches(&batch).await {
            Ok(n) => Ok(n),
            Err(e) => {
                self.put_back(batch);
                Err(e)
            }
        }
    }
}

/// Flushes the counts every `every` until the state is dropped.
pub(crate) async fn run(inner: Weak<crate::Inner>, store: Store, every: Duration) {
    let mut failing = false;
    loop {
        tokio::time::sleep(every).await;
        let Some(inner) = inner.upgrade() else { return };
        match inner.tally.flush(&store).await {
            Ok(_) if failing => {
                failing = false;
                tracing::info!("match counts written again");
            }
            Ok(_) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "match counts not written; kept for the next attempt");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_add_up_per_entry_day_and_source_and_survive_a_failed_write() {
        let t = Tally::default();
        let reply = [
            json!({"signal": "pdq", "bank": "known", "entry_id": 7, "distance": 3}),
            json!({"signal": "derive", "bank": "cases", "entry_id": 9, "score": 50}),
        ];
        t.add_reply("platform-x", &reply);
        t.add_reply("platform-x", &reply[..1]);
        t.add_reply("telegram:-100", &reply[..1]);
        t.add_reply("platform-x", &[json!({"no": "id"})]);
        assert_eq!(
            t.totals(),
            BTreeMap::from([(("cases".into(), "derive".into()), 1), (("known".into(), "pdq".into()), 3)])
        );
        let mut taken = t.take();
        taken.sort_by(|a, b| (a.entry_id, &a.source).cmp(&(b.entry_id, &b.source)));
        let summary: Vec<(i64, &str, i64)> =
            taken.iter().map(|x| (x.entry_id, x.source.as_str(), x.matches)).collect();
        assert_eq!(summary, vec![(7, "platform-x", 2), (7, "telegram:-100", 1), (9, "platform-x", 1)]);
        assert!(taken.iter().all(|x| x.first_at <= x.last_at && x.day == day_of(x.last_at)));
        assert!(t.take().is_empty(), "taken once");
        // A write that failed puts them back, merged with what came meanwhile.
        t.add_reply("platform-x", &reply[..1]);
        t.put_back(taken);
        let again: i64 =
            t.take().iter().filter(|x| x.entry_id == 7 && x.source == "platform-x").map(|x| x.matches).sum();
        assert_eq!(again, 3);
    }
}
