//! What `GET /metrics` reports, in Prometheus' text format: requests by endpoint and status,
//! their latencies, queue depth, audio transcribed. Counts and times only, never patient text.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use super::admission::Admission;

/// Latency histogram bounds, seconds (a short dictation takes about one).
const BUCKETS_S: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0];

#[derive(Debug, Default)]
struct Latency {
    buckets: [u64; BUCKETS_S.len()],
    count: u64,
    sum_s: f64,
}

#[derive(Debug, Default)]
struct Counts {
    requests: BTreeMap<(&'static str, u16), u64>,
    latency: BTreeMap<&'static str, Latency>,
    audio_s: f64,
    rejected: u64,
}

/// The server's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    counts: Mutex<Counts>,
}

impl Metrics {
    /// One request to `endpoint` answered with `status` after `seconds`.
    pub fn request(&self, endpoint: &'static str, status: u16, seconds: f64) {
        let mut counts = self.lock();
        *counts.requests.entry((endpoint, status)).or_default() += 1;
        if status == 429 {
            counts.rejected += 1;
        }
        let latency = counts.latency.entry(endpoint).or_default();
        latency.count += 1;
        latency.sum_s += seconds;
        for (bucket, bound) in latency.buckets.iter_mut().zip(BUCKETS_S) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
    }

    /// Audio transcribed, seconds.
    pub fn audio(&self, seconds: f64) {
        self.lock().audio_s += seconds;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // Counters stay meaningful even if a holder panicked mid-update: take them as they are.
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The Prometheus text exposition.
    pub fn render(&self, admission: &Admission) -> String {
        let counts = self.lock();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP medscribe_requests_total Requests answered, by endpoint and HTTP status.\n# TYPE medscribe_requests_total counter"
        );
        for ((endpoint, status), n) in &counts.requests {
            let _ = writeln!(
                out,
                "medscribe_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP medscribe_request_duration_seconds Time to answer, by endpoint.\n# TYPE medscribe_request_duration_seconds histogram"
        );
        for (endpoint, latency) in &counts.latency {
            for (bound, n) in BUCKETS_S.iter().zip(latency.buckets) {
                let _ = writeln!(
                    out,
                    "medscribe_request_duration_seconds_bucket{{endpoint=\"{endpoint}\",le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "medscribe_request_duration_seconds_bucket{{endpoint=\"{endpoint}\",le=\"+Inf\"}} {}\nmedscribe_request_duration_seconds_sum{{endpoint=\"{endpoint}\"}} {}\nmedscribe_request_duration_seconds_count{{endpoint=\"{endpoint}\"}} {}",
                latency.count, latency.sum_s, latency.count
            );
        }
        let _ = writeln!(
            out,
            "# HELP medscribe_rejected_total Requests turned away because every slot and queue place was taken.\n# TYPE medscribe_rejected_total counter\nmedscribe_rejected_total {}",
            counts.rejected
        );
        let _ = writeln!(
            out,
            "# HELP medscribe_audio_seconds_total Audio transcribed, seconds.\n# TYPE medscribe_audio_seconds_total counter\nmedscribe_audio_seconds_total {}",
            counts.audio_s
        );
        let _ = writeln!(
            out,
            "# HELP medscribe_running Requests working now.\n# TYPE medscribe_running gauge\nmedscribe_running {}",
            admission.running()
        );
        let _ = writeln!(
            out,
            "# HELP medscribe_queue_depth Requests waiting for a work slot.\n# TYPE medscribe_queue_depth gauge\nmedscribe_queue_depth {}",
            admission.waiting()
        );
        out
    }
}
