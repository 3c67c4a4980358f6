//! `/metrics` of an HTTP-mode container, in the OpenMetrics text format. Every family carries
//! the `version` label (`wasmedge.io/version`), which is what canary analysis groups by.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Request duration buckets, seconds (the weight controller computes p99 from them).
const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Instance creation buckets, seconds: tens of microseconds is the expected range.
const INSTANCE_START_BUCKETS: [f64; 10] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00015, 0.00025, 0.0005, 0.001, 0.0025, 0.01,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    version: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DenialLabels {
    version: String,
    /// The policy field that denied (`allowed_dirs`, `allowed_hosts`, ...).
    field: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MemoryLabels {
    version: String,
    /// `pss` / `rss` of the serving process, `instance_peak` of the largest linear memory.
    kind: String,
}

type HistogramFamily = Family<VersionLabel, Histogram, fn() -> Histogram>;

pub struct Metrics {
    version: VersionLabel,
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily,
    instance_start: HistogramFamily,
    in_flight: Family<VersionLabel, Gauge>,
    denials: Family<DenialLabels, Counter>,
    memory: Family<MemoryLabels, Gauge>,
    instance_peak_bytes: AtomicU64,
}

impl Metrics {
    pub fn new(version: &str) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let duration: HistogramFamily =
            Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS));
        let instance_start: HistogramFamily =
            Family::new_with_constructor(|| Histogram::new(INSTANCE_START_BUCKETS));
        let in_flight = Family::<VersionLabel, Gauge>::default();
        let denials = Family::<DenialLabels, Counter>::default();
        let memory = Family::<MemoryLabels, Gauge>::default();
        registry.register(
            "wasmedge_http_requests",
            "HTTP requests answered, by status code",
            requests.clone(),
        );
        registry.register(
            "wasmedge_http_request_duration_seconds",
            "Time from request to response",
            duration.clone(),
        );
        registry.register(
            "wasmedge_instance_start_seconds",
            "Time to create a module instance",
            instance_start.clone(),
        );
        registry.register(
            "wasmedge_http_requests_in_flight",
            "Requests being handled",
            in_flight.clone(),
        );
        registry.register(
            "wasmedge_policy_denials",
            "Sandbox policy denials, by policy field",
            denials.clone(),
        );
        registry.register(
            "wasmedge_memory_bytes",
            "Memory of the serving process and of the largest instance",
            memory.clone(),
        );
        let metrics = Metrics {
            version: VersionLabel {
                version: version.to_string(),
            },
            registry,
            requests,
            duration,
            instance_start,
            in_flight,
            denials,
            memory,
            instance_peak_bytes: AtomicU64::new(0),
        };
        // Present from the start, so a scrape before the first request sees the series.
        metrics.in_flight.get_or_create(&metrics.version).set(0);
        metrics
    }

    /// Counts a request in flight until the returned guard is dropped: a request whose client
    /// went away before the response (the future is dropped) is counted with status 499.
    pub fn request_started(&self) -> InFlight<'_> {
        self.in_flight.get_or_create(&self.version).inc();
        InFlight {
            metrics: self,
            started: std::time::Instant::now(),
            status: None,
        }
    }

    fn request_finished(&self, status: u16, seconds: f64) {
        self.in_flight.get_or_create(&self.version).dec();
        let labels = RequestLabels {
            version: self.version.version.clone(),
            status: status.to_string(),
        };
        self.requests.get_or_create(&labels).inc();
        self.duration.get_or_create(&self.version).observe(seconds);
    }

    pub fn instance_started(&self, seconds: f64) {
        self.instance_start
            .get_or_create(&self.version)
            .observe(seconds);
    }

    pub fn instance_memory(&self, bytes: u64) {
        self.instance_peak_bytes.fetch_max(bytes, Ordering::Relaxed);
    }

    pub fn denied(&self, field: &str) {
        let labels = DenialLabels {
            version: self.version.version.clone(),
            field: field.to_string(),
        };
        self.denials.get_or_create(&labels).inc();
    }

    /// The text of `/metrics`; memory gauges are read now.
    pub fn render(&self) -> String {
        let (rss, pss) = process_memory();
        for (kind, value) in [
            ("rss", rss),
            ("pss", pss),
            (
                "instance_peak",
                self.instance_peak_bytes.load(Ordering::Relaxed),
            ),
        ] {
            let labels = MemoryLabels {
                version: self.version.version.clone(),
                kind: kind.to_string(),
            };
            self.memory.get_or_create(&labels).set(value as i64);
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

pub struct InFlight<'a> {
    metrics: &'a Metrics,
    started: std::time::Instant,
    status: Option<u16>,
}

impl InFlight<'_> {
    pub fn respond(mut self, status: u16) {
        self.status = Some(status);
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.metrics.request_finished(
            self.status.unwrap_or(499),
            self.started.elapsed().as_secs_f64(),
        );
    }
}

/// The policy field behind a violation message of the engine.
pub fn denial_field(violation: &str) -> &'static str {
    if violation.starts_with("host not allowed") {
        "allowed_hosts"
    } else if violation.starts_with("network request limit") {
        "max_network_requests"
    } else if violation.starts_with("disk quota exceeded") {
        "max_disk_bytes"
    } else {
        "allowed_dirs"
    }
}

/// (RSS, PSS) of this process in bytes, from smaps_rollup (0 when unavailable).
fn process_memory() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    };
    (field("Rss:"), field("Pss:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_carry_the_version_and_count_what_happened() {
        let m = Metrics::new("v2");
        m.request_started().respond(200);
        m.request_started().respond(500);
        drop(m.request_started());
        let _pending = m.request_started();
        m.instance_started(0.00004);
        m.denied(denial_field("host not allowed: evil.example"));
        m.denied(denial_field("permission denied: /etc/passwd"));
        m.denied(denial_field(
            "disk quota exceeded: /cache/f (max_disk_bytes 1024); ...",
        ));
        let text = m.render();
        for line in [
            r#"wasmedge_http_requests_total{version="v2",status="200"} 1"#,
            r#"wasmedge_http_requests_total{version="v2",status="500"} 1"#,
            r#"wasmedge_http_requests_total{version="v2",status="499"} 1"#,
            r#"wasmedge_http_request_duration_seconds_count{version="v2"} 3"#,
            r#"wasmedge_instance_start_seconds_bucket{le="0.00005",version="v2"} 1"#,
            r#"wasmedge_http_requests_in_flight{version="v2"} 1"#,
            r#"wasmedge_policy_denials_total{version="v2",field="allowed_hosts"} 1"#,
            r#"wasmedge_policy_denials_total{version="v2",field="allowed_dirs"} 1"#,
            r#"wasmedge_policy_denials_total{version="v2",field="max_disk_bytes"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(
            text.contains(r#"wasmedge_memory_bytes{version="v2",kind="pss"} "#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
