//! How a container serves: command mode or HTTP function mode, and the HTTP mode's knobs, read
//! from the container's `wasmedge.io/*` annotations. Pure: annotations in, settings or a
//! [`PolicyError`] (key, value, reason, fix) out.

use std::collections::HashMap;
use std::time::Duration;

use crate::policy::PolicyError;

pub const KEY_MODE: &str = "wasmedge.io/mode";
pub const KEY_HTTP_PORT: &str = "wasmedge.io/http-port";
pub const KEY_VERSION: &str = "wasmedge.io/version";
pub const KEY_WARM_POOL: &str = "wasmedge.io/warm-pool";
pub const KEY_MAX_CONCURRENCY: &str = "wasmedge.io/max-concurrency";
pub const KEY_MAX_BODY_BYTES: &str = "wasmedge.io/max-body-bytes";
pub const KEY_DRAIN_TIMEOUT_MS: &str = "wasmedge.io/drain-timeout-ms";
pub const KEY_SHUTDOWN_DELAY_MS: &str = "wasmedge.io/shutdown-delay-ms";

/// The image reference containerd's CRI plugin puts on every container it creates.
pub const CRI_IMAGE_NAME: &str = "io.kubernetes.cri.image-name";
/// ... and the pod sandbox it belongs to: present only on containers of Kubernetes pods.
pub const CRI_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

pub const DEFAULT_HTTP_PORT: u16 = 8080;
pub const DEFAULT_MAX_CONCURRENCY: usize = 4;
pub const MAX_CONCURRENCY_LIMIT: usize = 256;
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
pub const MAX_BODY_BYTES_LIMIT: usize = 64 << 20;
/// Below Kubernetes' default termination grace period (30 s), so a drain ends before SIGKILL.
pub const DEFAULT_DRAIN_TIMEOUT_MS: u64 = 20_000;
pub const DRAIN_TIMEOUT_MS_LIMIT: u64 = 600_000;
/// In a Kubernetes pod, SIGTERM arrives while kube-proxy (and other nodes' proxies, ingress
/// controllers) may still route new connections to the pod for a moment: the server keeps
/// accepting this long, with `/ready` false, before it closes its listener. With the default
/// drain timeout it stays below the default termination grace period (5 + 20 < 30 s).
pub const DEFAULT_SHUTDOWN_DELAY_MS_IN_POD: u64 = 5_000;
/// Outside Kubernetes (ctr, nerdctl) nothing routes by endpoint lists: close at once.
pub const DEFAULT_SHUTDOWN_DELAY_MS_OUTSIDE_POD: u64 = 0;
pub const SHUTDOWN_DELAY_MS_LIMIT: u64 = 300_000;

/// The node admin's maxima of the HTTP knobs (node config `[http_ceiling]`), held like the
/// policy's ceiling: an annotation above one is refused, naming the field and the ceiling.
/// They bound what one function may hold on the node: threads and instances, and memory for
/// request bodies (see `http::server`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpCeiling {
    pub max_concurrency: usize,
    pub warm_pool: usize,
    pub max_body_bytes: usize,
    pub drain_timeout_ms: u64,
    pub shutdown_delay_ms: u64,
}

impl Default for HttpCeiling {
    fn default() -> Self {
        HttpCeiling {
            max_concurrency: 32,
            warm_pool: 8,
            max_body_bytes: 8 << 20,
            drain_timeout_ms: 60_000,
            shutdown_delay_ms: 30_000,
        }
    }
}

impl HttpCeiling {
    /// The ceiling must admit the defaults (a container without annotations always starts)
    /// and stay within what the server supports.
    pub fn check(&self) -> Result<(), String> {
        let fields = [
            (
                "max_concurrency",
                self.max_concurrency as u64,
                DEFAULT_MAX_CONCURRENCY as u64,
                MAX_CONCURRENCY_LIMIT as u64,
            ),
            (
                "warm_pool",
                self.warm_pool as u64,
                0,
                MAX_CONCURRENCY_LIMIT as u64,
            ),
            (
                "max_body_bytes",
                self.max_body_bytes as u64,
                DEFAULT_MAX_BODY_BYTES as u64,
                MAX_BODY_BYTES_LIMIT as u64,
            ),
            (
                "drain_timeout_ms",
                self.drain_timeout_ms,
                DEFAULT_DRAIN_TIMEOUT_MS,
                DRAIN_TIMEOUT_MS_LIMIT,
            ),
            (
                "shutdown_delay_ms",
                self.shutdown_delay_ms,
                DEFAULT_SHUTDOWN_DELAY_MS_IN_POD,
                SHUTDOWN_DELAY_MS_LIMIT,
            ),
        ];
        for (field, value, least, most) in fields {
            if !(least..=most).contains(&value) {
                return Err(format!("http_ceiling.{field} = {value} is out of range {least}-{most} (at least the default, at most what the server supports)"));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Mode {
    /// Run the module's `_start` once; its exit code is the container's.
    Command,
    /// Serve HTTP; every request runs `_start` in a fresh instance.
    Http(HttpSettings),
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HttpSettings {
    pub port: u16,
    /// The `version` label of every metric (canary analysis groups by it).
    pub version: String,
    /// Instances kept created ahead of requests (at most one per concurrent slot).
    pub warm_pool: usize,
    /// Requests executing at once; more wait in a short queue, beyond it they get 503.
    pub max_concurrency: usize,
    pub max_body_bytes: usize,
    /// How long SIGTERM waits for in-flight requests before the process exits.
    pub drain_timeout: Duration,
    /// After SIGTERM, how long the server still accepts new connections (with `/ready` false)
    /// before the drain begins; a second SIGTERM ends it early.
    pub shutdown_delay: Duration,
}

/// Reads the mode and, for HTTP mode, its settings. The keys only matter in HTTP mode, but a
/// malformed one is an error in either mode (it shows a mistake in the pod spec).
/// `ceiling` is the node admin's [`HttpCeiling`].
pub fn from_annotations(
    annotations: &HashMap<String, String>,
    ceiling: &HttpCeiling,
) -> Result<Mode, PolicyError> {
    let get = |key: &str| annotations.get(key).map(|v| v.trim());
    let port = parse_number(
        get(KEY_HTTP_PORT),
        KEY_HTTP_PORT,
        1,
        u16::MAX as u64,
        DEFAULT_HTTP_PORT as u64,
        "a TCP port, 1-65535 (default 8080)",
    )? as u16;
    let max_concurrency = parse_number(
        get(KEY_MAX_CONCURRENCY),
        KEY_MAX_CONCURRENCY,
        1,
        MAX_CONCURRENCY_LIMIT as u64,
        DEFAULT_MAX_CONCURRENCY as u64,
        "a number of concurrent requests, 1-256 (default 4)",
    )? as usize;
    within_ceiling(
        KEY_MAX_CONCURRENCY,
        max_concurrency as u64,
        ceiling.max_concurrency as u64,
        "concurrent requests",
    )?;
    let warm_pool = parse_number(
        get(KEY_WARM_POOL),
        KEY_WARM_POOL,
        0,
        max_concurrency as u64,
        0,
        &format!(
            "a number of pre-created instances, 0 to {KEY_MAX_CONCURRENCY} ({max_concurrency})"
        ),
    )? as usize;
    within_ceiling(
        KEY_WARM_POOL,
        warm_pool as u64,
        ceiling.warm_pool as u64,
        "instances",
    )?;
    let max_body_bytes = parse_number(
        get(KEY_MAX_BODY_BYTES),
        KEY_MAX_BODY_BYTES,
        0,
        MAX_BODY_BYTES_LIMIT as u64,
        DEFAULT_MAX_BODY_BYTES as u64,
        "a size in bytes, at most 67108864 (default 1048576)",
    )? as usize;
    within_ceiling(
        KEY_MAX_BODY_BYTES,
        max_body_bytes as u64,
        ceiling.max_body_bytes as u64,
        "bytes",
    )?;
    let drain_ms = parse_number(
        get(KEY_DRAIN_TIMEOUT_MS),
        KEY_DRAIN_TIMEOUT_MS,
        0,
        DRAIN_TIMEOUT_MS_LIMIT,
        DEFAULT_DRAIN_TIMEOUT_MS,
        "milliseconds, at most 600000; keep it below the pod's terminationGracePeriodSeconds",
    )?;
    within_ceiling(
        KEY_DRAIN_TIMEOUT_MS,
        drain_ms,
        ceiling.drain_timeout_ms,
        "ms",
    )?;
    let in_pod = annotations.contains_key(CRI_SANDBOX_ID);
    let delay_ms = parse_number(
        get(KEY_SHUTDOWN_DELAY_MS),
        KEY_SHUTDOWN_DELAY_MS,
        0,
        SHUTDOWN_DELAY_MS_LIMIT,
        if in_pod {
            DEFAULT_SHUTDOWN_DELAY_MS_IN_POD
        } else {
            DEFAULT_SHUTDOWN_DELAY_MS_OUTSIDE_POD
        },
        "milliseconds, at most 300000 (default 5000 in a Kubernetes pod, else 0); keep it plus drain-timeout-ms below the pod's terminationGracePeriodSeconds",
    )?;
    within_ceiling(
        KEY_SHUTDOWN_DELAY_MS,
        delay_ms,
        ceiling.shutdown_delay_ms,
        "ms",
    )?;
    let version = match get(KEY_VERSION) {
        Some(v) if !v.is_empty() => {
            if v.len() > 128 || v.chars().any(|c| c.is_control()) {
                return Err(error(
                    KEY_VERSION,
                    v,
                    "not a usable metric label",
                    "use a short printable version string such as v2 or 1.4.0",
                ));
            }
            v.to_string()
        }
        Some(v) => {
            return Err(error(
                KEY_VERSION,
                v,
                "empty",
                "remove it (the image reference is used) or write a version such as v2",
            ))
        }
        None => annotations
            .get(CRI_IMAGE_NAME)
            .cloned()
            .unwrap_or_else(|| "unknown".to_string()),
    };
    match get(KEY_MODE) {
        None => Ok(Mode::Command),
        Some(m) if m.eq_ignore_ascii_case("command") => Ok(Mode::Command),
        Some(m) if m.eq_ignore_ascii_case("http") => Ok(Mode::Http(HttpSettings {
            port,
            version,
            warm_pool,
            max_concurrency,
            max_body_bytes,
            drain_timeout: Duration::from_millis(drain_ms),
            shutdown_delay: Duration::from_millis(delay_ms),
        })),
        Some(m) => Err(error(
            KEY_MODE,
            m,
            "unknown mode",
            "write http (serve requests) or command (run once; the default)",
        )),
    }
}

fn parse_number(
    value: Option<&str>,
    key: &str,
    min: u64,
    max: u64,
    default: u64,
    expected: &str,
) -> Result<u64, PolicyError> {
    let Some(v) = value else { return Ok(default) };
    match v.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        Ok(_) => Err(error(
            key,
            v,
            &format!("out of range {min}-{max}"),
            &format!("write {expected}"),
        )),
        Err(_) => Err(error(
            key,
            v,
            "not a whole number",
            &format!("write {expected}"),
        )),
    }
}

/// The policy fields' wording for a value above the node ceiling.
fn within_ceiling(key: &str, value: u64, ceiling: u64, unit: &str) -> Result<(), PolicyError> {
    if value <= ceiling {
        return Ok(());
    }
    Err(error(
        key,
        &value.to_string(),
        &format!("above the node ceiling of {ceiling} {unit}"),
        &format!("set at most {ceiling} or ask the node admin to raise the ceiling"),
    ))
}

fn error(key: &str, value: &str, reason: &str, fix: &str) -> PolicyError {
    PolicyError {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
        fix: fix.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn http(pairs: &[(&str, &str)]) -> HttpSettings {
        match from_annotations(&annotations(pairs), &HttpCeiling::default()).unwrap() {
            Mode::Http(s) => s,
            Mode::Command => panic!("expected HTTP mode"),
        }
    }

    #[test]
    fn the_policy_code_knows_every_key() {
        for key in [
            KEY_MODE,
            KEY_HTTP_PORT,
            KEY_VERSION,
            KEY_WARM_POOL,
            KEY_MAX_CONCURRENCY,
            KEY_MAX_BODY_BYTES,
            KEY_DRAIN_TIMEOUT_MS,
            KEY_SHUTDOWN_DELAY_MS,
        ] {
            assert!(
                crate::policy::NON_POLICY_KEYS.contains(&key),
                "{key} would be reported as a typo"
            );
        }
    }

    #[test]
    fn command_mode_is_the_default() {
        assert_eq!(
            from_annotations(&annotations(&[]), &HttpCeiling::default()).unwrap(),
            Mode::Command
        );
        assert_eq!(
            from_annotations(
                &annotations(&[(KEY_MODE, "command")]),
                &HttpCeiling::default()
            )
            .unwrap(),
            Mode::Command
        );
    }

    #[test]
    fn http_defaults() {
        let s = http(&[(KEY_MODE, "http")]);
        assert_eq!(
            s,
            HttpSettings {
                port: 8080,
                version: "unknown".into(),
                warm_pool: 0,
                max_concurrency: 4,
                max_body_bytes: 1 << 20,
                drain_timeout: Duration::from_secs(20),
                shutdown_delay: Duration::ZERO,
            }
        );
    }

    #[test]
    fn pods_keep_accepting_for_a_while_after_sigterm() {
        let in_pod = http(&[(KEY_MODE, "http"), (CRI_SANDBOX_ID, "0123abcd")]);
        assert_eq!(in_pod.shutdown_delay, Duration::from_secs(5));
        let set = http(&[
            (KEY_MODE, "http"),
            (CRI_SANDBOX_ID, "0123abcd"),
            (KEY_SHUTDOWN_DELAY_MS, "0"),
        ]);
        assert_eq!(set.shutdown_delay, Duration::ZERO);
        let outside = http(&[(KEY_MODE, "http"), (KEY_SHUTDOWN_DELAY_MS, "1500")]);
        assert_eq!(outside.shutdown_delay, Duration::from_millis(1500));
    }

    #[test]
    fn version_falls_back_to_the_image_reference() {
        assert_eq!(
            http(&[(KEY_MODE, "http"), (CRI_IMAGE_NAME, "docker.io/x/f:2")]).version,
            "docker.io/x/f:2"
        );
        assert_eq!(
            http(&[
                (KEY_MODE, "http"),
                (CRI_IMAGE_NAME, "x:2"),
                (KEY_VERSION, "v2")
            ])
            .version,
            "v2"
        );
    }

    #[test]
    fn overrides_are_read() {
        let s = http(&[
            (KEY_MODE, "HTTP"),
            (KEY_HTTP_PORT, "9000"),
            (KEY_MAX_CONCURRENCY, "8"),
            (KEY_WARM_POOL, "8"),
            (KEY_MAX_BODY_BYTES, "0"),
            (KEY_DRAIN_TIMEOUT_MS, "500"),
        ]);
        assert_eq!(
            (s.port, s.max_concurrency, s.warm_pool, s.max_body_bytes),
            (9000, 8, 8, 0)
        );
        assert_eq!(s.drain_timeout, Duration::from_millis(500));
    }

    #[test]
    fn the_node_ceiling_bounds_every_knob() {
        let ceiling = HttpCeiling {
            max_concurrency: 8,
            warm_pool: 2,
            max_body_bytes: 2 << 20,
            drain_timeout_ms: 30_000,
            shutdown_delay_ms: 10_000,
        };
        assert!(ceiling.check().is_ok());
        let get = |pairs: &[(&str, &str)]| from_annotations(&annotations(pairs), &ceiling);
        assert!(get(&[
            (KEY_MODE, "http"),
            (KEY_MAX_CONCURRENCY, "8"),
            (KEY_WARM_POOL, "2")
        ])
        .is_ok());
        let e = get(&[
            (KEY_MODE, "http"),
            (KEY_MAX_CONCURRENCY, "8"),
            (KEY_WARM_POOL, "3"),
        ])
        .unwrap_err();
        assert_eq!(
            (e.key.as_str(), e.reason.as_str()),
            (KEY_WARM_POOL, "above the node ceiling of 2 instances")
        );
        assert!(
            e.to_string()
                .contains("set at most 2 or ask the node admin to raise the ceiling"),
            "{e}"
        );
        // A ceiling below the defaults would refuse containers without annotations.
        assert!(HttpCeiling {
            max_concurrency: 2,
            ..ceiling.clone()
        }
        .check()
        .unwrap_err()
        .contains("http_ceiling.max_concurrency"));
        assert!(HttpCeiling::default().check().is_ok());
    }

    #[test]
    fn errors_name_the_key_the_value_and_the_fix() {
        let cases = [
            (KEY_MODE, "serve", "unknown mode"),
            (KEY_HTTP_PORT, "0", "out of range 1-65535"),
            (KEY_HTTP_PORT, "http", "not a whole number"),
            (KEY_WARM_POOL, "5", "out of range 0-4"),
            (KEY_MAX_CONCURRENCY, "0", "out of range 1-256"),
            (
                KEY_MAX_CONCURRENCY,
                "256",
                "above the node ceiling of 32 concurrent requests",
            ),
            (
                KEY_MAX_BODY_BYTES,
                "67108864",
                "above the node ceiling of 8388608 bytes",
            ),
            (
                KEY_DRAIN_TIMEOUT_MS,
                "600000",
                "above the node ceiling of 60000 ms",
            ),
            (
                KEY_SHUTDOWN_DELAY_MS,
                "60000",
                "above the node ceiling of 30000 ms",
            ),
            (KEY_SHUTDOWN_DELAY_MS, "300001", "out of range 0-300000"),
            (KEY_VERSION, "", "empty"),
        ];
        for (key, value, reason) in cases {
            let e = from_annotations(
                &annotations(&[(KEY_MODE, "http"), (key, value)]),
                &HttpCeiling::default(),
            )
            .unwrap_err();
            assert_eq!(
                (e.key.as_str(), e.value.as_str(), e.reason.as_str()),
                (key, value, reason)
            );
            assert!(e.to_string().contains("fix: "), "{e}");
        }
    }
}
