//! `GET /metrics`: the server's counters, gauges and histograms in Prometheus' text
//! exposition format 0.0.4.
//!
//! Written by hand rather than with `prometheus-client`: that crate encodes OpenMetrics 1.0
//! only (not the 0.0.4 text format asked for) and brings parking_lot and a derive macro, for a
//! fixed set of nine metrics that are a few atomics each.
//!
//! One [`Metrics`] is shared (`Arc`) by the HTTP side (requests by route and status) and the
//! model worker, which records what only it sees: admitted prompts, generated tokens, the
//! time to the first token and between tokens ([`TokenClock`]), the queue and the active
//! sequences, and the prefix cache.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Upper bounds (seconds) of the time-to-first-token buckets: from a short prompt on an idle
/// server to a long one behind a full queue.
const TTFT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Upper bounds (seconds) of the per-token latency buckets: a small model decodes a token in
/// a millisecond or two, the ~360 MB one in tens of milliseconds, more under load.
const TOKEN_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A histogram with fixed buckets; observations in microseconds.
#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative), plus one for +Inf.
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        header(out, name, help, "histogram");
        let mut cumulative = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Ordering::Relaxed);
            match self.bounds.get(i) {
                Some(b) => writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}"),
                None => writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}"),
            }
            .ok();
        }
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        writeln!(out, "{name}_sum {sum}").ok();
        writeln!(out, "{name}_count {cumulative}").ok();
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}").ok();
}

fn scalar(out: &mut String, name: &str, help: &str, kind: &str, value: u64) {
    header(out, name, help, kind);
    writeln!(out, "{name} {value}").ok();
}

/// Everything `/metrics` reports.
#[derive(Debug)]
pub struct Metrics {
    /// `(route, status)` → responses. Routes are the fixed set of [`route_label`], so the
    /// label's values stay few whatever paths clients send.
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    prompt_tokens: AtomicU64,
    generated_tokens: AtomicU64,
    queue_depth: AtomicU64,
    active_sequences: AtomicU64,
    time_to_first_token: Histogram,
    token_latency: Histogram,
    prefix_cache_hits: AtomicU64,
    prefix_cache_bytes: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Mutex::new(BTreeMap::new()),
            prompt_tokens: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            queue_depth: AtomicU64::new(0),
            active_sequences: AtomicU64::new(0),
            time_to_first_token: Histogram::new(TTFT_BUCKETS),
            token_latency: Histogram::new(TOKEN_BUCKETS),
            prefix_cache_hits: AtomicU64::new(0),
            prefix_cache_bytes: AtomicU64::new(0),
        }
    }
}

/// The routes `qwen_requests_total` names; any other path counts as `other`.
const ROUTES: &[&str] = &[
    "/",
    "/chat.js",
    "/chat.css",
    "/health",
    "/metrics",
    "/v1/models",
    "/v1/completions",
    "/v1/chat/completions",
];

/// `path` as a `route` label value.
pub fn route_label(path: &str) -> &'static str {
    ROUTES
        .iter()
        .find(|&&r| r == path)
        .copied()
        .unwrap_or("other")
}

impl Metrics {
    /// One response sent on `route` (a [`route_label`]) with `status`.
    pub fn request(&self, route: &'static str, status: u16) {
        let mut map = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry((route, status)).or_insert(0) += 1;
    }

    /// A sequence with `tokens` prompt tokens was admitted to the model.
    pub fn prompt_admitted(&self, tokens: usize) {
        self.prompt_tokens
            .fetch_add(tokens as u64, Ordering::Relaxed);
    }

    /// The worker's load: sequences waiting for a slot, and sequences running.
    pub fn set_load(&self, waiting: usize, active: usize) {
        self.queue_depth.store(waiting as u64, Ordering::Relaxed);
        self.active_sequences
            .store(active as u64, Ordering::Relaxed);
    }

    /// Prompts whose prefix was found in the prefix cache (the cache calls this on a hit).
    pub fn add_prefix_cache_hits(&self, n: u64) {
        self.prefix_cache_hits.fetch_add(n, Ordering::Relaxed);
    }

    /// Bytes the prefix cache holds now (the cache sets it whenever it grows or evicts).
    pub fn set_prefix_cache_bytes(&self, bytes: u64) {
        self.prefix_cache_bytes.store(bytes, Ordering::Relaxed);
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        header(
            &mut out,
            "qwen_requests_total",
            "HTTP responses sent, by route and status.",
            "counter",
        );
        let requests = self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for ((route, status), n) in requests {
            writeln!(
                out,
                "qwen_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            )
            .ok();
        }
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        scalar(
            &mut out,
            "qwen_prompt_tokens_total",
            "Prompt tokens of the sequences admitted to the model.",
            "counter",
            load(&self.prompt_tokens),
        );
        scalar(
            &mut out,
            "qwen_generated_tokens_total",
            "Tokens generated and sent.",
            "counter",
            load(&self.generated_tokens),
        );
        scalar(
            &mut out,
            "qwen_queue_depth",
            "Sequences waiting for a slot (beyond --parallel).",
            "gauge",
            load(&self.queue_depth),
        );
        scalar(
            &mut out,
            "qwen_active_sequences",
            "Sequences being prefilled or decoded.",
            "gauge",
            load(&self.active_sequences),
        );
        self.time_to_first_token.render(
            &mut out,
            "qwen_time_to_first_token_seconds",
            "From a request's submission (queueing included) to its first generated token.",
        );
        self.token_latency.render(
            &mut out,
            "qwen_token_latency_seconds",
            "Between consecutive generated tokens of one sequence.",
        );
        scalar(
            &mut out,
            "qwen_prefix_cache_hits_total",
            "Prompts that reused a cached prefix (fed by the prefix cache; 0 without one).",
            "counter",
            load(&self.prefix_cache_hits),
        );
        scalar(
            &mut out,
            "qwen_prefix_cache_bytes",
            "Bytes held by the prefix cache (fed by the prefix cache; 0 without one).",
            "gauge",
            load(&self.prefix_cache_bytes),
        );
        out
    }
}

/// The clock of one sequence's tokens, carried in its job: the worker calls
/// [`TokenClock::token_sent`] as it sends each token.
#[derive(Debug)]
pub struct TokenClock {
    metrics: Arc<Metrics>,
    submitted: Instant,
    last: Option<Instant>,
}

impl TokenClock {
    /// Starts at the request's submission, so the time to first token includes the queue.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        TokenClock {
            metrics,
            submitted: Instant::now(),
            last: None,
        }
    }

    /// A token was sent: the first one's delay from submission, or the gap since the last.
    pub fn token_sent(&mut self) {
        let now = Instant::now();
        match self.last {
            None => self
                .metrics
                .time_to_first_token
                .observe(now - self.submitted),
            Some(t) => self.metrics.token_latency.observe(now - t),
        }
        self.last = Some(now);
        self.metrics
            .generated_tokens
            .fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Arc::new(Metrics::default());
        m.time_to_first_token.observe(Duration::from_millis(3));
        m.time_to_first_token.observe(Duration::from_millis(70));
        m.time_to_first_token.observe(Duration::from_secs(100));
        let text = m.render();
        for line in [
            "qwen_time_to_first_token_seconds_bucket{le=\"0.005\"} 1",
            "qwen_time_to_first_token_seconds_bucket{le=\"0.05\"} 1",
            "qwen_time_to_first_token_seconds_bucket{le=\"0.1\"} 2",
            "qwen_time_to_first_token_seconds_bucket{le=\"60\"} 2",
            "qwen_time_to_first_token_seconds_bucket{le=\"+Inf\"} 3",
            "qwen_time_to_first_token_seconds_sum 100.073",
            "qwen_time_to_first_token_seconds_count 3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }

    #[test]
    fn unknown_paths_share_one_label() {
        assert_eq!(route_label("/v1/completions"), "/v1/completions");
        assert_eq!(route_label("/v1/completions/x"), "other");
        assert_eq!(route_label("/wp-admin"), "other");
    }
}
