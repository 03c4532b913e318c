//! A server's Prometheus `/metrics`: parsing the text exposition format and
//! scraping it at an interval during a run.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fuselab_core::ServerMetricSample;
use fuselab_harness::RunClock;

/// One sample of the text format: `name{labels} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Metric name.
    pub name: String,
    /// Labels without braces, as written.
    pub labels: String,
    /// Value (`NaN`, `+Inf` and `-Inf` included).
    pub value: f64,
}

/// Parses Prometheus text exposition, skipping comments and malformed lines.
///
/// ```
/// let s = fuselab_http::prometheus::parse("# HELP x y\nvllm:num_requests_running{model_name=\"m\"} 3\nup 1 1700000000\n");
/// assert_eq!(s.len(), 2);
/// assert_eq!((s[0].name.as_str(), s[0].labels.as_str(), s[0].value), ("vllm:num_requests_running", "model_name=\"m\"", 3.0));
/// ```
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = line[open..].rfind('}')? + open;
            (&line[..open], &line[open + 1..close], &line[close + 1..])
        }
        None => {
            let sp = line.find(char::is_whitespace)?;
            (&line[..sp], "", &line[sp..])
        }
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.trim().to_owned(),
        labels: labels.to_owned(),
        value,
    })
}

/// Whether a series is worth keeping in `server_metrics.parquet`: histogram
/// buckets and `_created` timestamps are dropped (sums and counts stay).
pub fn keep(name: &str) -> bool {
    !(name.ends_with("_bucket") || name.ends_with("_created"))
}

/// Samples scraped so far, shared between the scraper and whoever reads them
/// after the run.
#[derive(Clone, Debug, Default)]
pub struct Scraped {
    samples: Arc<Mutex<Vec<ServerMetricSample>>>,
    errors: Arc<Mutex<Option<String>>>,
}

impl Scraped {
    /// Everything scraped, in scrape order.
    pub fn take(&self) -> Vec<ServerMetricSample> {
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The first scrape error, if any (the scraper keeps going).
    pub fn first_error(&self) -> Option<String> {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Scrapes `url` every `interval` on the run's clock until `stop` is
/// dropped or fires.
pub(crate) async fn scrape(
    client: reqwest::Client,
    url: String,
    interval: Duration,
    clock: RunClock,
    out: Scraped,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {}
        }
        let t = clock.now_s();
        let result = async {
            let resp = client.get(&url).send().await?.error_for_status()?;
            resp.text().await
        }
        .await;
        match result {
            Ok(text) => {
                let mut samples = out.samples.lock().unwrap_or_else(|e| e.into_inner());
                samples.extend(parse(&text).into_iter().filter(|s| keep(&s.name)).map(|s| {
                    ServerMetricSample {
                        t,
                        name: s.name,
                        labels: s.labels,
                        value: s.value,
                    }
                }));
            }
            Err(e) => {
                let mut first = out.errors.lock().unwrap_or_else(|e| e.into_inner());
                if first.is_none() {
                    *first = Some(format!("scraping {url}: {e}"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_with_spaces_braces_and_special_values() {
        let s = parse(
            "a{x=\"1 2\",y=\"}\"} +Inf\nb NaN\nc_bucket{le=\"0.1\"} 4\nbroken\n  \n# TYPE c histogram\n",
        );
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].labels, "x=\"1 2\",y=\"}\"");
        assert!(s[0].value.is_infinite());
        assert!(s[1].value.is_nan());
        assert!(!keep(&s[2].name));
    }
}
