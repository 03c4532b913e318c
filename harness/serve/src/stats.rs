//! Server-side counters and their Prometheus text, under vLLM's metric names
//! so that clients that scrape vLLM (AIPerf, fuselab's own client) read them.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use fuselab_core::StepRecord;

const TTFT_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const STEP_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0,
];

/// A cumulative histogram with fixed bucket bounds.
#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        for (b, c) in self.bounds.iter().zip(&mut self.counts) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn write(&self, out: &mut String, name: &str, help: &str, labels: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// What `/metrics` reports.
#[derive(Debug)]
pub(crate) struct Stats {
    pub in_flight: AtomicU64,
    pub connections: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub generation_tokens: AtomicU64,
    pub success: AtomicU64,
    pub failed: AtomicU64,
    engine: Mutex<EngineGauges>,
    ttft: Mutex<Histogram>,
    e2e: Mutex<Histogram>,
}

#[derive(Debug)]
struct EngineGauges {
    last_step: Option<StepRecord>,
    steps: u64,
    prefix_queries: u64,
    prefix_hits: u64,
    step_time: Histogram,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            in_flight: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            generation_tokens: AtomicU64::new(0),
            success: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            engine: Mutex::new(EngineGauges {
                last_step: None,
                steps: 0,
                prefix_queries: 0,
                prefix_hits: 0,
                step_time: Histogram::new(&STEP_BUCKETS),
            }),
            ttft: Mutex::new(Histogram::new(&TTFT_BUCKETS)),
            e2e: Mutex::new(Histogram::new(&TTFT_BUCKETS)),
        }
    }
}

impl Stats {
    pub fn step(&self, s: StepRecord) {
        let mut g = self.engine.lock().unwrap_or_else(|e| e.into_inner());
        g.steps += 1;
        g.prefix_queries += u64::from(s.prefix_query_tokens);
        g.prefix_hits += u64::from(s.prefix_hit_tokens);
        g.step_time.observe(s.duration_s);
        g.last_step = Some(s);
    }

    pub fn first_token(&self, ttft_s: f64) {
        self.ttft
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(ttft_s);
    }

    pub fn finished(&self, ok: bool, e2e_s: f64) {
        if ok {
            self.success.fetch_add(1, Ordering::Relaxed);
            self.e2e
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .observe(e2e_s);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self, model: &str) -> String {
        let labels = format!("model_name=\"{}\"", model.replace('"', "\\\""));
        let mut out = String::with_capacity(4096);
        let g = self.engine.lock().unwrap_or_else(|e| e.into_inner());
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        let (running, waiting, kv) = match &g.last_step {
            // The engine's own view at its last step; in flight is the truth between steps.
            Some(s) => (
                u64::from(s.running).min(in_flight),
                u64::from(s.waiting).min(in_flight),
                if s.kv_blocks_total == 0 {
                    0.0
                } else {
                    f64::from(s.kv_blocks_used) / f64::from(s.kv_blocks_total)
                },
            ),
            None => (in_flight, 0, 0.0),
        };
        let mut gauge = |name: &str, help: &str, kind: &str, v: f64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{{labels}}} {v}"
            );
        };
        gauge(
            "vllm:num_requests_running",
            "Requests in the engine's running batch.",
            "gauge",
            running as f64,
        );
        gauge(
            "vllm:num_requests_waiting",
            "Requests waiting to be scheduled.",
            "gauge",
            waiting as f64,
        );
        gauge(
            "vllm:kv_cache_usage_perc",
            "KV-cache usage, 1 = full.",
            "gauge",
            kv,
        );
        gauge(
            "fuselab:requests_in_flight",
            "Requests accepted and not yet finished.",
            "gauge",
            in_flight as f64,
        );
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        gauge(
            "vllm:prompt_tokens_total",
            "Prompt tokens of accepted requests.",
            "counter",
            c(&self.prompt_tokens),
        );
        gauge(
            "vllm:generation_tokens_total",
            "Tokens generated.",
            "counter",
            c(&self.generation_tokens),
        );
        gauge(
            "vllm:request_success_total",
            "Requests finished with all their tokens.",
            "counter",
            c(&self.success),
        );
        gauge(
            "fuselab:request_failure_total",
            "Requests that failed, were cancelled or rejected.",
            "counter",
            c(&self.failed),
        );
        gauge(
            "vllm:prefix_cache_queries_total",
            "Prompt tokens looked up in the prefix cache.",
            "counter",
            g.prefix_queries as f64,
        );
        gauge(
            "vllm:prefix_cache_hits_total",
            "Prompt tokens served from the prefix cache.",
            "counter",
            g.prefix_hits as f64,
        );
        gauge(
            "fuselab:http_connections_total",
            "TCP connections accepted.",
            "counter",
            c(&self.connections),
        );
        gauge(
            "fuselab:engine_steps_total",
            "Forward steps the engine ran.",
            "counter",
            g.steps as f64,
        );
        g.step_time.write(
            &mut out,
            "fuselab:step_duration_seconds",
            "Duration of the engine's forward steps.",
            &labels,
        );
        drop(g);
        self.ttft.lock().unwrap_or_else(|e| e.into_inner()).write(
            &mut out,
            "vllm:time_to_first_token_seconds",
            "Time to first token, from acceptance.",
            &labels,
        );
        self.e2e.lock().unwrap_or_else(|e| e.into_inner()).write(
            &mut out,
            "vllm:e2e_request_latency_seconds",
            "Request latency, from acceptance to the last token.",
            &labels,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_rendered_with_inf() {
        let s = Stats::default();
        s.first_token(0.003);
        s.first_token(0.5);
        s.step(StepRecord {
            duration_s: 0.004,
            running: 3,
            waiting: 1,
            kv_blocks_used: 5,
            kv_blocks_total: 20,
            ..StepRecord::default()
        });
        s.in_flight.store(4, Ordering::Relaxed);
        let text = s.render("m");
        let samples = fuselab_http::prometheus::parse(&text);
        let get = |name: &str, labels: &str| {
            samples
                .iter()
                .find(|x| x.name == name && x.labels == labels)
                .map(|x| x.value)
        };
        let l = "model_name=\"m\"";
        assert_eq!(get("vllm:num_requests_running", l), Some(3.0));
        assert_eq!(get("vllm:kv_cache_usage_perc", l), Some(0.25));
        assert_eq!(
            get(
                "vllm:time_to_first_token_seconds_bucket",
                "model_name=\"m\",le=\"0.005\""
            ),
            Some(1.0)
        );
        assert_eq!(
            get(
                "vllm:time_to_first_token_seconds_bucket",
                "model_name=\"m\",le=\"+Inf\""
            ),
            Some(2.0)
        );
        assert_eq!(get("vllm:time_to_first_token_seconds_count", l), Some(2.0));
    }
}
