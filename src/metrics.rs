//! Counters and gauges for `/metrics`, in Prometheus's text format.
//!
//! `rollcall serve` and `rollcall worker` each keep one registry and serve it; a handful of
//! series (webhooks, jobs by outcome, sync time, API calls and throttles, seats by client) do
//! not need a metrics framework, and keeping them here lets tests read them directly.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

/// The process's series, by metric name and rendered label set.
#[derive(Debug, Default)]
pub struct Metrics {
    series: Mutex<Series>,
}

#[derive(Debug, Default)]
struct Series {
    counters: BTreeMap<(String, String), f64>,
    gauges: BTreeMap<(String, String), f64>,
}

impl Metrics {
    /// Adds `by` to a counter.
    pub fn add(&self, name: &str, pairs: &[(&str, &str)], by: f64) {
        *self
            .lock()
            .counters
            .entry((name.to_owned(), labels(pairs)))
            .or_default() += by;
    }

    /// Counts one.
    pub fn count(&self, name: &str, pairs: &[(&str, &str)]) {
        self.add(name, pairs, 1.0);
    }

    /// Sets a gauge.
    pub fn set(&self, name: &str, pairs: &[(&str, &str)], value: f64) {
        self.lock()
            .gauges
            .insert((name.to_owned(), labels(pairs)), value);
    }

    /// The sum of a counter over all its label sets.
    pub fn total(&self, name: &str) -> f64 {
        self.lock()
            .counters
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|(_, v)| v)
            .sum()
    }

    /// One counter's value for exactly these labels.
    pub fn value(&self, name: &str, pairs: &[(&str, &str)]) -> f64 {
        self.lock()
            .counters
            .get(&(name.to_owned(), labels(pairs)))
            .copied()
            .unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Series> {
        self.series.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The Prometheus text exposition of every series, and of the vendor API calls this
    /// process made.
    pub fn render(&self) -> String {
        for (vendor, calls, throttled) in rollcall_core::http::api_counts() {
            let mut series = self.lock();
            let target = labels(&[("target", vendor)]);
            // Process totals, kept by the HTTP clients: monotonic, so counters.
            series.counters.insert(
                ("rollcall_api_requests_total".into(), target.clone()),
                calls as f64,
            );
            series.counters.insert(
                ("rollcall_api_throttled_total".into(), target),
                throttled as f64,
            );
        }
        let series = self.lock();
        // Every family is described from the start, so a scrape before the first event
        // already shows what will be counted (and dashboards and alerts can be checked).
        let mut out = format!(
            "# HELP rollcall_build_info The running rollcall's version.\n# TYPE rollcall_build_info gauge\nrollcall_build_info{} 1\n",
            labels(&[("version", env!("CARGO_PKG_VERSION"))])
        );
        for (name, kind, help) in FAMILIES {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            let map = if *kind == "counter" {
                &series.counters
            } else {
                &series.gauges
            };
            for ((_, labels), value) in map.iter().filter(|((n, _), _)| n == name) {
                out.push_str(&format!("{name}{labels} {value}\n"));
            }
        }
        for (map, kind) in [(&series.counters, "counter"), (&series.gauges, "gauge")] {
            let mut last = "";
            for ((name, labels), value) in map {
                if FAMILIES.iter().any(|(n, _, _)| n == name) {
                    continue;
                }
                if name != last {
                    out.push_str(&format!("# TYPE {name} {kind}\n"));
                    last = name;
                }
                out.push_str(&format!("{name}{labels} {value}\n"));
            }
        }
        out
    }
}

/// The series every `/metrics` describes, with or without samples yet.
const FAMILIES: &[(&str, &str, &str)] = &[
    (
        "rollcall_webhooks_total",
        "counter",
        "Notifications received, by source and outcome.",
    ),
    (
        "rollcall_jobs_queued_total",
        "counter",
        "Sync jobs queued, by client.",
    ),
    (
        "rollcall_jobs_total",
        "counter",
        "Sync jobs run, by outcome.",
    ),
    (
        "rollcall_sync_seconds_sum",
        "counter",
        "Seconds spent in syncs.",
    ),
    ("rollcall_sync_seconds_count", "counter", "Syncs timed."),
    (
        "rollcall_api_requests_total",
        "counter",
        "Requests made to billing and directory APIs, by target.",
    ),
    (
        "rollcall_api_throttled_total",
        "counter",
        "Requests a vendor throttled (429), by target.",
    ),
    ("rollcall_seats", "gauge", "Seats billed, by client."),
];

fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}=\"{}\"",
                v.replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n")
            )
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_types_once_and_escapes_labels() {
        let m = Metrics::default();
        m.count("rollcall_jobs_total", &[("outcome", "done")]);
        m.count("rollcall_jobs_total", &[("outcome", "done")]);
        m.count("rollcall_jobs_total", &[("outcome", "failed")]);
        m.set("rollcall_seats", &[("client", "O\"Brien")], 3.0);
        let text = m.render();
        assert_eq!(
            text.matches("# TYPE rollcall_jobs_total counter").count(),
            1
        );
        assert!(text.contains("rollcall_jobs_total{outcome=\"done\"} 2\n"));
        assert!(text.contains("rollcall_seats{client=\"O\\\"Brien\"} 3\n"));
        assert_eq!(m.total("rollcall_jobs_total"), 3.0);
    }

    #[test]
    fn a_scrape_before_any_event_describes_every_family() {
        let text = Metrics::default().render();
        for (name, kind, _) in FAMILIES {
            assert!(
                text.contains(&format!("# TYPE {name} {kind}\n")),
                "{name}: {text}"
            );
            assert_eq!(
                text.matches(&format!("# TYPE {name} ")).count(),
                1,
                "{name}"
            );
        }
        assert!(text.contains("rollcall_build_info{version=\""), "{text}");
    }
}
