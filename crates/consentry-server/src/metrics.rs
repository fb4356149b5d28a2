//! Prometheus metrics, kept in memory and rendered as text at `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the lookup latency histogram buckets.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// Counters and histograms of one server process.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    lookup_buckets: [AtomicU64; 12],
    lookup_count: AtomicU64,
    lookup_sum_micros: AtomicU64,
    lookup_matches: AtomicU64,
}

impl Metrics {
    /// Counts one request by matched route, method and status.
    pub fn count_request(&self, route: &str, method: &str, status: u16) {
        let mut m = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((route.to_owned(), method.to_owned(), status)).or_insert(0) += 1;
    }

    /// Records the latency of one lookup (index search plus match details) and its match count.
    pub fn observe_lookup(&self, d: Duration, matches: usize) {
        let secs = d.as_secs_f64();
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.lookup_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.lookup_count.fetch_add(1, Ordering::Relaxed);
        self.lookup_sum_micros.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.lookup_matches.fetch_add(matches as u64, Ordering::Relaxed);
    }

    /// Requests counted so far for (route, method, status).
    pub fn requests(&self, route: &str, method: &str, status: u16) -> u64 {
        let m = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        m.get(&(route.to_owned(), method.to_owned(), status)).copied().unwrap_or(0)
    }

    /// Prometheus text exposition, with the gauges passed in.
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        out.push_str("# HELP consentry_http_requests_total HTTP requests by route, method and status.\n");
        out.push_str("# TYPE consentry_http_requests_total counter\n");
        {
            let m = self.requests.lock().unwrap_or_else(|e| e.into_inner());
            for ((route, method, status), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "consentry_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{}\"}} {}",
                    escape(route),
                    escape(method),
                    status,
                    n
                );
            }
        }
        out.push_str("# HELP consentry_lookup_duration_seconds Time to answer one lookup request (search and match details).\n");
        out.push_str("# TYPE consentry_lookup_duration_seconds histogram\n");
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "consentry_lookup_duration_seconds_bucket{{le=\"{}\"}} {}",
                le,
                self.lookup_buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.lookup_count.load(Ordering::Relaxed);
        let _ = writeln!(out, "consentry_lookup_duration_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "consentry_lookup_duration_seconds_sum {}",
            self.lookup_sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "consentry_lookup_duration_seconds_count {count}");
        out.push_str("# HELP consentry_lookup_matches_total Matches returned by lookups.\n");
        out.push_str("# TYPE consentry_lookup_matches_total counter\n");
        let _ =
            writeln!(out, "consentry_lookup_matches_total {}", self.lookup_matches.load(Ordering::Relaxed));
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {v}");
        }
        out
    }
}

pub(crate) fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
