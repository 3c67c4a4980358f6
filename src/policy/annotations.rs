//! The `wasmedge.io/*` annotation keys and the syntax of each value.
//!
//! Everything here is pure string handling: parsers return a [`Violation`] (reason + fix) and the
//! caller in `mod.rs` attaches the key and value to make a [`super::PolicyError`].

use std::net::{Ipv4Addr, Ipv6Addr};

use super::DirMapping;

/// Annotation namespace the shim owns; keys outside it are none of our business.
pub const PREFIX: &str = "wasmedge.io/";

pub const KEY_POLICY: &str = "wasmedge.io/policy";
pub const KEY_MAX_MEMORY_PAGES: &str = "wasmedge.io/max-memory-pages";
pub const KEY_EXECUTION_TIMEOUT_MS: &str = "wasmedge.io/execution-timeout-ms";
pub const KEY_ALLOWED_HOSTS: &str = "wasmedge.io/allowed-hosts";
pub const KEY_ALLOWED_ENV: &str = "wasmedge.io/allowed-env";
pub const KEY_ALLOWED_DIRS: &str = "wasmedge.io/allowed-dirs";
pub const KEY_MAX_NETWORK_REQUESTS: &str = "wasmedge.io/max-network-requests";
pub const KEY_MAX_DISK_BYTES: &str = "wasmedge.io/max-disk-bytes";

/// Keys that shape the sandbox policy, in the order they are checked.
pub const POLICY_KEYS: &[&str] = &[
    KEY_POLICY,
    KEY_MAX_MEMORY_PAGES,
    KEY_EXECUTION_TIMEOUT_MS,
    KEY_ALLOWED_HOSTS,
    KEY_ALLOWED_ENV,
    KEY_ALLOWED_DIRS,
    KEY_MAX_NETWORK_REQUESTS,
    KEY_MAX_DISK_BYTES,
];

/// Keys of the `wasmedge.io/` namespace used by other parts of the shim. The policy code
/// accepts and ignores them, so they are not reported as typos.
pub const NON_POLICY_KEYS: &[&str] = &[
    "wasmedge.io/mode",
    "wasmedge.io/http-port",
    "wasmedge.io/version",
    "wasmedge.io/warm-pool",
    "wasmedge.io/max-concurrency",
    "wasmedge.io/max-body-bytes",
    "wasmedge.io/drain-timeout-ms",
    "wasmedge.io/shutdown-delay-ms",
];

/// Why a value is rejected and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub reason: String,
    pub fix: String,
}

impl Violation {
    pub fn new(reason: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            fix: fix.into(),
        }
    }
}

/// What kind of `wasmedge.io/` key this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Policy,
    NonPolicy,
    Unknown,
}

pub fn classify(key: &str) -> KeyKind {
    if POLICY_KEYS.contains(&key) {
        KeyKind::Policy
    } else if NON_POLICY_KEYS.contains(&key) {
        KeyKind::NonPolicy
    } else {
        KeyKind::Unknown
    }
}

/// The fix for an unknown `wasmedge.io/` key: the closest known key (edit distance ≤ 3,
/// ignoring case), else the list of all known keys.
pub fn unknown_key_fix(key: &str) -> String {
    let lower = key.to_ascii_lowercase();
    let known = POLICY_KEYS.iter().chain(NON_POLICY_KEYS);
    let best = known
        .clone()
        .map(|k| (edit_distance(&lower, k), *k))
        .filter(|(d, _)| *d <= 3)
        .min_by_key(|(d, _)| *d);
    match best {
        Some((_, k)) => format!("did you mean {k}?"),
        None => format!(
            "remove it; known keys: {}",
            known.copied().collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Levenshtein distance over chars; keys are short, so the O(n·m) row version is plenty.
/// Stops early (returning a value > 3) for long inputs, which can never be a suggestion.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > 3 {
        return a.len().abs_diff(b.len());
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != cb);
            cur[j + 1] = subst.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Parses a whole number made of ASCII digits (surrounding whitespace allowed). Numbers too big
/// for u64 saturate: they are above any ceiling, and saying so is more useful than "not a number".
pub fn parse_whole(value: &str) -> Option<u64> {
    let v = value.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(v.parse::<u64>().unwrap_or(u64::MAX))
}

/// Splits a comma-separated list. Surrounding whitespace is trimmed; an empty (all-blank) value
/// is the empty list; an empty entry between commas is an error (likely a mistake).
pub fn split_list<'a>(value: &'a str, example: &str) -> Result<Vec<&'a str>, Violation> {
    if value.trim().is_empty() {
        return Ok(Vec::new());
    }
    value
        .split(',')
        .map(str::trim)
        .map(|item| {
            if item.is_empty() {
                Err(Violation::new(
                    "empty entry in the list",
                    format!("separate entries with single commas, e.g. {example}"),
                ))
            } else {
                Ok(item)
            }
        })
        .collect()
}

/// Normalises a host: lowercase DNS name, or the canonical text of an IP address.
/// Returns None if it is neither.
pub fn normalize_host(host: &str) -> Option<String> {
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Some(ip.to_string());
    }
    if let Ok(ip) = host.parse::<Ipv6Addr>() {
        return Some(ip.to_string());
    }
    let lower = host.to_ascii_lowercase();
    is_dns_name(&lower).then_some(lower)
}

/// RFC 1123 host name: labels of 1–63 letters, digits and '-' (not at either end), at most
/// 253 chars, and a last label that is not all digits (so "1.2.3.999" is not taken as a name).
fn is_dns_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let labels: Vec<&str> = name.split('.').collect();
    let labels_ok = labels.iter().all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    labels_ok
        && !labels
            .last()
            .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
}

const HOSTS_EXAMPLE: &str = "api.example.com,cdn.example.com";

/// `wasmedge.io/allowed-hosts`: normalised, duplicates dropped, order kept.
pub fn parse_hosts(value: &str) -> Result<Vec<String>, Violation> {
    let mut out: Vec<String> = Vec::new();
    for item in split_list(value, HOSTS_EXAMPLE)? {
        let host = normalize_host(item).ok_or_else(|| host_violation(item))?;
        if !out.contains(&host) {
            out.push(host);
        }
    }
    Ok(out)
}

fn host_violation(item: &str) -> Violation {
    let fix = format!(
        "list host names or IP addresses separated by commas, without scheme, port or wildcard, e.g. {HOSTS_EXAMPLE}"
    );
    let has_port = item.rsplit_once(':').is_some_and(|(h, p)| {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && normalize_host(h).is_some()
    });
    if has_port {
        Violation::new(
            format!("host {} has a port; ports are not allowed", shown(item)),
            fix,
        )
    } else {
        Violation::new(
            format!("{} is not a valid host name or IP address", shown(item)),
            fix,
        )
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`
pub fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `wasmedge.io/allowed-env`: duplicates dropped, order kept.
pub fn parse_env(value: &str) -> Result<Vec<String>, Violation> {
    let mut out: Vec<String> = Vec::new();
    for item in split_list(value, "APP_MODE,REGION")? {
        if !is_env_name(item) {
            return Err(Violation::new(
                format!("{} is not a valid environment variable name", shown(item)),
                "use names of letters, digits and '_' that do not start with a digit, separated by commas, e.g. APP_MODE,REGION",
            ));
        }
        if !out.iter().any(|e| e == item) {
            out.push(item.to_string());
        }
    }
    Ok(out)
}

const DIRS_FIX: &str =
    "write each mapping as host:guest:ro or host:guest:rw with absolute paths, separated by commas, e.g. /app/config:/config:ro";

/// Checks an absolute path and returns it normalised (no empty or "." components, no trailing
/// '/'), so `/app//config/` and `/app/config` compare equal against the ceiling.
pub fn normalize_path(path: &str) -> Result<String, Violation> {
    if !path.starts_with('/') {
        return Err(path_violation(path, "is not absolute"));
    }
    Ok(format!("/{}", path_components(path)?.join("/")))
}

/// A preopen's name as the module sees it. WASI names are any string: absolute ones are
/// normalised as host paths are, relative ones (`.`, `data`, `fs-tests.dir`, as `wasmedge
/// --dir` takes them) lose empty and `.` components (`./data/` → `data`, `./` → `.`).
pub fn normalize_guest_path(path: &str) -> Result<String, Violation> {
    if path.starts_with('/') {
        return normalize_path(path);
    }
    if path.is_empty() {
        return Err(path_violation(path, "is empty"));
    }
    let parts = path_components(path)?;
    Ok(if parts.is_empty() {
        ".".to_string()
    } else {
        parts.join("/")
    })
}

fn path_violation(path: &str, what: &str) -> Violation {
    Violation::new(format!("path {} {what}", shown(path)), DIRS_FIX)
}

/// The components of `path` but empty and "." ones; no ':' or ',' (the annotation's
/// separators), control characters or "..".
fn path_components(path: &str) -> Result<Vec<&str>, Violation> {
    if path.contains([':', ',']) {
        return Err(path_violation(path, "contains ':' or ','"));
    }
    if path.chars().any(char::is_control) {
        return Err(path_violation(path, "contains a control character"));
    }
    let mut parts = Vec::new();
    for comp in path.split('/') {
        match comp {
            "" | "." => {}
            ".." => return Err(path_violation(path, "contains a '..' component")),
            c => parts.push(c),
        }
    }
    Ok(parts)
}

/// Checks a mapping from a preset file or an annotation and normalises both paths (the host
/// path is a path in the image, always absolute).
pub fn normalize_dir(d: &DirMapping) -> Result<DirMapping, Violation> {
    Ok(DirMapping {
        host_path: normalize_path(&d.host_path)?,
        guest_path: normalize_guest_path(&d.guest_path)?,
        readonly: d.readonly,
    })
}

/// `wasmedge.io/allowed-dirs`: `host:guest:ro|rw`, each guest path at most once.
pub fn parse_dirs(value: &str) -> Result<Vec<DirMapping>, Violation> {
    let mut out: Vec<DirMapping> = Vec::new();
    for item in split_list(value, "/app/config:/config:ro,/app/cache:/cache:rw")? {
        let parts: Vec<&str> = item.split(':').map(str::trim).collect();
        let [host, guest, mode] = parts[..] else {
            return Err(Violation::new(
                format!("{} is not host:guest:ro|rw", shown(item)),
                DIRS_FIX,
            ));
        };
        let readonly = match mode.to_ascii_lowercase().as_str() {
            "ro" => true,
            "rw" => false,
            _ => {
                return Err(Violation::new(
                    format!(
                        "mode {} of {} is neither ro nor rw",
                        shown(mode),
                        shown(item)
                    ),
                    DIRS_FIX,
                ))
            }
        };
        let dir = DirMapping {
            host_path: normalize_path(host)?,
            guest_path: normalize_guest_path(guest)?,
            readonly,
        };
        check_unique_guest(&out, &dir)?;
        out.push(dir);
    }
    Ok(out)
}

pub fn check_unique_guest(seen: &[DirMapping], dir: &DirMapping) -> Result<(), Violation> {
    if seen.iter().any(|d| d.guest_path == dir.guest_path) {
        return Err(Violation::new(
            format!("guest path {} is mapped more than once", dir.guest_path),
            "map each guest path once",
        ));
    }
    Ok(())
}

/// `host:guest:ro|rw`, the annotation syntax, also used in messages and summaries.
pub fn dir_text(d: &DirMapping) -> String {
    format!(
        "{}:{}:{}",
        d.host_path,
        d.guest_path,
        if d.readonly { "ro" } else { "rw" }
    )
}

/// Makes user text safe and short for a one-line log message: control characters and quotes
/// escaped, long text cut.
pub fn shown(text: &str) -> String {
    const MAX: usize = 200;
    let escaped: String = text.escape_debug().collect();
    if escaped.chars().count() <= MAX {
        escaped
    } else {
        let cut: String = escaped.chars().take(MAX).collect();
        format!("{cut}...({} bytes)", text.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(
            edit_distance("wasmedge.io/max-memory-page", KEY_MAX_MEMORY_PAGES),
            1
        );
    }

    #[test]
    fn hosts_are_validated_and_normalised() {
        assert_eq!(
            parse_hosts(" API.Example.com , 10.0.0.1,api.example.com").unwrap(),
            ["api.example.com", "10.0.0.1"]
        );
        assert_eq!(parse_hosts("::1").unwrap(), ["::1"]);
        for bad in [
            "*.example.com",
            "http://a.com",
            "a_b.com",
            "-a.com",
            "a..com",
            "1.2.3.999",
            "a.com.",
        ] {
            assert!(parse_hosts(bad).is_err(), "{bad}");
        }
        let port = parse_hosts("api.example.com:443").unwrap_err();
        assert_eq!(
            port.reason,
            "host api.example.com:443 has a port; ports are not allowed"
        );
    }

    #[test]
    fn env_names() {
        assert!(is_env_name("_A1"));
        assert!(is_env_name("app_mode"));
        assert!(!is_env_name("1A"));
        assert!(!is_env_name("A-B"));
        assert!(!is_env_name(""));
        assert!(!is_env_name("A=B"));
    }

    #[test]
    fn paths() {
        assert_eq!(normalize_path("/app//config/./").unwrap(), "/app/config");
        assert_eq!(normalize_path("/").unwrap(), "/");
        assert!(normalize_path("app").is_err());
        assert!(normalize_path("/app/../etc").is_err());
        assert!(normalize_path("/a\nb").is_err());
        assert_eq!(
            normalize_guest_path("fs-tests.dir").unwrap(),
            "fs-tests.dir"
        );
        assert_eq!(normalize_guest_path("./data/").unwrap(), "data");
        assert_eq!(normalize_guest_path(".").unwrap(), ".");
        assert_eq!(normalize_guest_path("./").unwrap(), ".");
        assert_eq!(normalize_guest_path("/config/").unwrap(), "/config");
        assert!(normalize_guest_path("../up").is_err());
        assert!(normalize_guest_path("").is_err());
    }

    #[test]
    fn dirs() {
        let d = parse_dirs(" /app/config : /config : RO ,/app/cache:/cache:rw").unwrap();
        assert_eq!(d.len(), 2);
        assert!(d[0].readonly && !d[1].readonly);
        assert!(parse_dirs("/a:/b").is_err());
        assert!(parse_dirs("/a:/b:rx").is_err());
        assert!(parse_dirs("/a:/b:ro:x").is_err());
        assert!(parse_dirs("/a:/b:ro,/c:/b:ro").is_err());
    }

    #[test]
    fn shown_escapes_and_cuts() {
        assert_eq!(shown("a\"b\n"), "a\\\"b\\n");
        assert!(shown(&"x".repeat(1000)).ends_with("...(1000 bytes)"));
    }
}
