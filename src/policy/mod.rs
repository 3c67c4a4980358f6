//! WASI sandbox policy: container annotations → the limits and capabilities a module gets.
//!
//! Deny by default: a container without `wasmedge.io/*` annotations gets the node's default
//! preset (edge-strict unless the admin changes it), never "allow all". A pod may pick another
//! preset and replace single fields, but the result must stay within the node admin's ceiling;
//! anything above it is an error naming the annotation and how to fix it, never a silent clamp.
//!
//! Everything here is pure except [`PolicySettings::load`], which reads the admin's preset
//! directory once at startup.

mod annotations;
mod presets;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

use anyhow::{anyhow, bail};
use serde::{Deserialize, Serialize};

pub use annotations::{
    KEY_ALLOWED_DIRS, KEY_ALLOWED_ENV, KEY_ALLOWED_HOSTS, KEY_EXECUTION_TIMEOUT_MS,
    KEY_MAX_DISK_BYTES, KEY_MAX_MEMORY_PAGES, KEY_MAX_NETWORK_REQUESTS, KEY_POLICY,
    NON_POLICY_KEYS, POLICY_KEYS, PREFIX,
};
pub use presets::{Presets, EDGE_MODERATE, EDGE_MODERATE_YAML, EDGE_STRICT, EDGE_STRICT_YAML};

use annotations::{dir_text, normalize_host, shown, KeyKind, Violation};

/// Largest memory a wasm32 module can have: 65536 pages of 64 KiB = 4 GiB.
pub const MAX_WASM32_PAGES: u32 = 65536;

/// `maxDiskBytes` of a preset or ceiling that does not name it: small, since a read-write dir
/// is usually a node directory or the container's writable layer, shared with the node.
pub const DEFAULT_MAX_DISK_BYTES: u64 = 64 << 20;

fn default_max_disk_bytes() -> u64 {
    DEFAULT_MAX_DISK_BYTES
}

/// What a module may use. Field names (camelCase in YAML) are the product's preset format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WasiSandboxPolicy {
    /// Memory limit in 64 KiB wasm pages.
    pub max_memory_pages: u32,
    pub execution_timeout_ms: u64,
    pub allowed_hosts: Vec<String>,
    pub allowed_env_vars: Vec<String>,
    pub allowed_dirs: Vec<DirMapping>,
    pub max_network_requests: u32,
    /// Bytes the module may keep in its read-write dirs, all of them together (an addition to
    /// the product document's fields; preset files may leave it out).
    #[serde(default = "default_max_disk_bytes")]
    pub max_disk_bytes: u64,
}

/// A directory the module sees. `host_path` is inside the container's rootfs (the module runs
/// after pivot_root), `guest_path` is what the module sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DirMapping {
    pub host_path: String,
    pub guest_path: String,
    pub readonly: bool,
}

/// A rejected annotation: which one, its value, why, and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub key: String,
    pub value: String,
    pub reason: String,
    pub fix: String,
}

impl PolicyError {
    fn new(key: &str, value: &str, v: Violation) -> Self {
        Self {
            key: key.to_string(),
            value: value.to_string(),
            reason: v.reason,
            fix: v.fix,
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values come from pod specs: escape them so a message stays one safe log line.
        write!(
            f,
            "invalid annotation {}=\"{}\": {}; fix: {}",
            shown(&self.key),
            shown(&self.value),
            self.reason,
            self.fix
        )
    }
}

impl std::error::Error for PolicyError {}

/// The node ceiling as written in the node config: a preset name, or an inline table with the
/// fields of a preset file (camelCase).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum CeilingSpec {
    Preset(String),
    Limits(WasiSandboxPolicy),
}

/// Node-level policy settings, fixed by the admin.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySettings {
    pub presets: BTreeMap<String, WasiSandboxPolicy>,
    /// Used when a container names no preset.
    pub default_preset: String,
    /// The most any container may get, whatever its annotations say.
    pub ceiling: WasiSandboxPolicy,
}

impl PolicySettings {
    /// Built-in presets; default edge-strict; ceiling = edge-moderate.
    pub fn builtin() -> Self {
        let presets = Presets::builtin();
        let ceiling = presets[EDGE_MODERATE].clone();
        Self::new(presets, EDGE_STRICT, ceiling).expect("built-in policy settings are valid")
    }

    /// Checks the settings: every preset and the ceiling well-formed, the default preset known
    /// and within the ceiling (so a container without annotations always starts).
    pub fn new(
        presets: BTreeMap<String, WasiSandboxPolicy>,
        default_preset: &str,
        ceiling: WasiSandboxPolicy,
    ) -> anyhow::Result<Self> {
        let mut normalized = BTreeMap::new();
        for (name, p) in presets {
            let p = p
                .normalized()
                .map_err(|e| anyhow!("policy preset {name}: {e}"))?;
            normalized.insert(name, p);
        }
        let ceiling = ceiling
            .normalized()
            .map_err(|e| anyhow!("policy ceiling: {e}"))?;
        let Some(default) = normalized.get(default_preset) else {
            bail!(
                "default policy preset {default_preset} does not exist; known presets: {}",
                normalized.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        };
        if let Err(v) = check_ceiling(default, &ceiling) {
            bail!(
                "default policy preset {default_preset} is above the policy ceiling: {}: {}",
                v.field,
                v.violation.reason
            );
        }
        Ok(Self {
            presets: normalized,
            default_preset: default_preset.to_string(),
            ceiling,
        })
    }

    /// Loads every `*.yaml` in `dir` as a preset named by its file stem, on top of the
    /// built-ins (a file with a built-in's name replaces it; a missing `dir` adds nothing).
    /// `ceiling` is a preset name (looked up after loading, so an admin's file may be the
    /// ceiling), inline limits, or None for edge-moderate. Errors name the file and the
    /// problem. The only function doing I/O.
    pub fn load(
        dir: &Path,
        default_preset: &str,
        ceiling: Option<&CeilingSpec>,
    ) -> anyhow::Result<Self> {
        let presets = Presets::load_dir(dir)?;
        let ceiling = match ceiling {
            None => presets[EDGE_MODERATE].clone(),
            Some(CeilingSpec::Limits(limits)) => limits.clone(),
            Some(CeilingSpec::Preset(name)) => match presets.get(name) {
                Some(p) => p.clone(),
                None => bail!(
                    "policy ceiling preset {name} does not exist; known presets: {}",
                    presets.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            },
        };
        Self::new(presets, default_preset, ceiling)
    }

    /// Names of the presets a container may pick (those within the ceiling), sorted.
    pub fn usable_presets(&self) -> Vec<&str> {
        self.presets
            .iter()
            .filter(|(_, p)| p.within(&self.ceiling))
            .map(|(n, _)| n.as_str())
            .collect()
    }
}

/// Turns one container's merged annotations (container over pod, merged by the caller) into
/// its sandbox policy: the chosen preset, with each field annotation replacing that field, then
/// checked against the node ceiling. Keys outside `wasmedge.io/` are ignored; unknown keys
/// inside it, in any case, are errors (typo protection). Keys are checked in sorted order, so the same
/// annotations always give the same error.
pub fn resolve(
    settings: &PolicySettings,
    annotations: &HashMap<String, String>,
) -> Result<WasiSandboxPolicy, PolicyError> {
    let ours: BTreeMap<&str, &str> = annotations
        .iter()
        // Any case: `WasmEdge.io/policy` must be refused as a typo, not silently ignored.
        .filter(|(k, _)| {
            k.get(..PREFIX.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(PREFIX))
        })
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    for (key, value) in &ours {
        if annotations::classify(key) == KeyKind::Unknown {
            let v = Violation::new(
                "unknown wasmedge.io annotation",
                annotations::unknown_key_fix(key),
            );
            return Err(PolicyError::new(key, value, v));
        }
    }

    let preset_name = ours
        .get(KEY_POLICY)
        .map_or(settings.default_preset.as_str(), |v| v.trim());
    let Some(preset) = settings.presets.get(preset_name) else {
        let raw = ours.get(KEY_POLICY).copied().unwrap_or(preset_name);
        let v = if ours.contains_key(KEY_POLICY) {
            Violation::new(
                "unknown policy preset",
                format!("use one of {}", settings.usable_presets().join(", ")),
            )
        } else {
            Violation::new(
                "the node's default policy preset does not exist",
                "set wasmedge.io/policy to a known preset or ask the node admin to fix the default",
            )
        };
        return Err(PolicyError::new(KEY_POLICY, raw, v));
    };
    let ceiling = &settings.ceiling;
    let mut policy = preset.clone();

    // Each field annotation replaces the preset's value. Its syntax and its ceiling are checked
    // right away, so the error names the annotation that caused it.
    let at = |key: &'static str, value: &str| {
        let value = value.to_string();
        move |v: Violation| PolicyError::new(key, &value, v)
    };
    if let Some(&v) = ours.get(KEY_MAX_MEMORY_PAGES) {
        let n = PAGES
            .parse(v, ceiling.max_memory_pages.into())
            .map_err(at(KEY_MAX_MEMORY_PAGES, v))?;
        policy.max_memory_pages = u32::try_from(n).expect("at most the u32 ceiling");
    }
    if let Some(&v) = ours.get(KEY_EXECUTION_TIMEOUT_MS) {
        policy.execution_timeout_ms = TIMEOUT
            .parse(v, ceiling.execution_timeout_ms)
            .map_err(at(KEY_EXECUTION_TIMEOUT_MS, v))?;
    }
    if let Some(&v) = ours.get(KEY_ALLOWED_HOSTS) {
        let hosts = annotations::parse_hosts(v).map_err(at(KEY_ALLOWED_HOSTS, v))?;
        check_hosts(&hosts, ceiling).map_err(at(KEY_ALLOWED_HOSTS, v))?;
        policy.allowed_hosts = hosts;
    }
    if let Some(&v) = ours.get(KEY_ALLOWED_ENV) {
        let env = annotations::parse_env(v).map_err(at(KEY_ALLOWED_ENV, v))?;
        check_env(&env, ceiling).map_err(at(KEY_ALLOWED_ENV, v))?;
        policy.allowed_env_vars = env;
    }
    if let Some(&v) = ours.get(KEY_ALLOWED_DIRS) {
        let dirs = annotations::parse_dirs(v).map_err(at(KEY_ALLOWED_DIRS, v))?;
        check_dirs(&dirs, ceiling).map_err(at(KEY_ALLOWED_DIRS, v))?;
        policy.allowed_dirs = dirs;
    }
    if let Some(&v) = ours.get(KEY_MAX_NETWORK_REQUESTS) {
        let n = NETWORK
            .parse(v, ceiling.max_network_requests.into())
            .map_err(at(KEY_MAX_NETWORK_REQUESTS, v))?;
        policy.max_network_requests = u32::try_from(n).expect("at most the u32 ceiling");
    }
    if let Some(&v) = ours.get(KEY_MAX_DISK_BYTES) {
        policy.max_disk_bytes = DISK
            .parse(v, ceiling.max_disk_bytes)
            .map_err(at(KEY_MAX_DISK_BYTES, v))?;
    }

    // Fields left to the preset must be within the ceiling too: an admin may ship presets above
    // it (usable only with overrides). Overridden fields passed above, so the excess is the
    // preset's.
    if let Err(excess) = check_ceiling(&policy, ceiling) {
        let raw = ours.get(KEY_POLICY).copied().unwrap_or(preset_name);
        return Err(PolicyError::new(
            KEY_POLICY,
            raw,
            Violation::new(
                format!(
                    "preset {preset_name} is above the node ceiling: {} {}",
                    excess.field, excess.violation.reason
                ),
                format!(
                    "use one of {}, or override {} ({})",
                    settings.usable_presets().join(", "),
                    excess.key,
                    excess.violation.fix
                ),
            ),
        ));
    }
    Ok(policy)
}

impl WasiSandboxPolicy {
    /// True if every limit is at most the ceiling's and every capability is one the ceiling
    /// grants (a dir may be read-only where the ceiling allows read-write, not the reverse).
    pub fn within(&self, ceiling: &WasiSandboxPolicy) -> bool {
        check_ceiling(self, ceiling).is_ok()
    }

    /// Checks that the values are well-formed (what a preset file must satisfy): 1..=65536
    /// pages, a timeout of at least 1 ms, valid host names or IPs, valid env var names,
    /// absolute dir paths without '..', each guest path once.
    pub fn validate(&self) -> Result<(), String> {
        self.clone().normalized().map(|_| ())
    }

    /// [`Self::validate`], returning the policy with hosts lowercased (IPs canonical) and paths
    /// normalised, the form `resolve` produces and compares.
    pub fn normalized(mut self) -> Result<Self, String> {
        if !(1..=MAX_WASM32_PAGES).contains(&self.max_memory_pages) {
            return Err(format!(
                "maxMemoryPages {} is not between 1 and {MAX_WASM32_PAGES}",
                self.max_memory_pages
            ));
        }
        if self.execution_timeout_ms == 0 {
            return Err("executionTimeoutMs must be at least 1".into());
        }
        for host in &mut self.allowed_hosts {
            *host = normalize_host(host).ok_or_else(|| {
                format!(
                    "allowedHosts: {} is not a valid host name or IP address",
                    shown(host)
                )
            })?;
        }
        if let Some(bad) = self
            .allowed_env_vars
            .iter()
            .find(|e| !annotations::is_env_name(e))
        {
            return Err(format!(
                "allowedEnvVars: {} is not a valid environment variable name",
                shown(bad)
            ));
        }
        let mut dirs: Vec<DirMapping> = Vec::new();
        for d in &self.allowed_dirs {
            let d =
                annotations::normalize_dir(d).map_err(|v| format!("allowedDirs: {}", v.reason))?;
            annotations::check_unique_guest(&dirs, &d)
                .map_err(|v| format!("allowedDirs: {}", v.reason))?;
            dirs.push(d);
        }
        self.allowed_dirs = dirs;
        Ok(self)
    }

    /// One line for logs, e.g. `256 pages (16 MiB), timeout 5000 ms, hosts [api.example.com], ...`.
    pub fn summary(&self) -> String {
        let kib = u64::from(self.max_memory_pages) * 64;
        let size = if kib % 1024 == 0 {
            format!("{} MiB", kib / 1024)
        } else {
            format!("{kib} KiB")
        };
        let dirs: Vec<String> = self.allowed_dirs.iter().map(dir_text).collect();
        format!(
            "{} pages ({size}), timeout {} ms, hosts [{}], env [{}], dirs [{}], max {} network requests, disk quota {}",
            self.max_memory_pages,
            self.execution_timeout_ms,
            self.allowed_hosts.join(", "),
            self.allowed_env_vars.join(", "),
            dirs.join(", "),
            self.max_network_requests,
            bytes_text(self.max_disk_bytes)
        )
    }

    /// The `wasmedge` CLI flags of the product document, one argv element per flag and per
    /// value, for docs and debugging. The shim applies the policy through the SDK, not these.
    /// `--dir` is `guest:host:readonly`, or plain `guest:host` for read-write: WasmEdge's
    /// `--dir` help documents only the `:readonly` suffix (read-write is the default), so the
    /// document's `:readwrite` suffix is not emitted. `--allow-host`/`--allow-env` are the
    /// document's notation; the `wasmedge` CLI has no such flags.
    pub fn to_wasmedge_args(&self) -> Vec<String> {
        let mut args = vec![
            "--memory-page-limit".to_string(),
            self.max_memory_pages.to_string(),
            "--time-limit".to_string(),
            self.execution_timeout_ms.to_string(),
        ];
        for host in &self.allowed_hosts {
            args.extend(["--allow-host".to_string(), host.clone()]);
        }
        for env in &self.allowed_env_vars {
            args.extend(["--allow-env".to_string(), env.clone()]);
        }
        for d in &self.allowed_dirs {
            let suffix = if d.readonly { ":readonly" } else { "" };
            args.extend([
                "--dir".to_string(),
                format!("{}:{}{suffix}", d.guest_path, d.host_path),
            ]);
        }
        args
    }
}

/// `64 MiB`, `4 KiB`, `1000 bytes`: exact, in the largest unit that divides.
fn bytes_text(n: u64) -> String {
    match n {
        0 => "0 bytes".to_string(),
        n if n % (1 << 30) == 0 => format!("{} GiB", n >> 30),
        n if n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

/// A numeric field's limits and how to talk about them.
struct NumField {
    /// Unit in the "set a number of ..." fix.
    what: &'static str,
    /// Unit in the "above the node ceiling of N ..." reason.
    unit: &'static str,
    min: u64,
}

const PAGES: NumField = NumField {
    what: "64 KiB pages",
    unit: "pages",
    min: 1,
};
const TIMEOUT: NumField = NumField {
    what: "milliseconds",
    unit: "ms",
    min: 1,
};
const NETWORK: NumField = NumField {
    what: "requests",
    unit: "requests",
    min: 0,
};
const DISK: NumField = NumField {
    what: "bytes",
    unit: "bytes",
    min: 0,
};

impl NumField {
    fn parse(&self, value: &str, ceiling: u64) -> Result<u64, Violation> {
        let range_fix = || {
            format!(
                "set a number of {} between {} and {ceiling} (the node ceiling)",
                self.what, self.min
            )
        };
        let n = annotations::parse_whole(value)
            .ok_or_else(|| Violation::new("not a whole number", range_fix()))?;
        if n < self.min {
            return Err(Violation::new(
                format!("must be at least {}", self.min),
                range_fix(),
            ));
        }
        self.check(n, ceiling)?;
        Ok(n)
    }

    fn check(&self, n: u64, ceiling: u64) -> Result<(), Violation> {
        if n > ceiling {
            return Err(Violation::new(
                format!("above the node ceiling of {ceiling} {}", self.unit),
                format!("set at most {ceiling} or ask the node admin to raise the ceiling"),
            ));
        }
        Ok(())
    }
}

/// Which field of a policy exceeds the ceiling.
struct Excess {
    /// Field name as in preset files.
    field: &'static str,
    /// Annotation that overrides it.
    key: &'static str,
    violation: Violation,
}

/// The first field of `p` above `ceiling`, in annotation order.
fn check_ceiling(p: &WasiSandboxPolicy, ceiling: &WasiSandboxPolicy) -> Result<(), Excess> {
    let excess = |field, key| {
        move |violation| Excess {
            field,
            key,
            violation,
        }
    };
    PAGES
        .check(p.max_memory_pages.into(), ceiling.max_memory_pages.into())
        .map_err(excess("maxMemoryPages", KEY_MAX_MEMORY_PAGES))?;
    TIMEOUT
        .check(p.execution_timeout_ms, ceiling.execution_timeout_ms)
        .map_err(excess("executionTimeoutMs", KEY_EXECUTION_TIMEOUT_MS))?;
    check_hosts(&p.allowed_hosts, ceiling).map_err(excess("allowedHosts", KEY_ALLOWED_HOSTS))?;
    check_env(&p.allowed_env_vars, ceiling).map_err(excess("allowedEnvVars", KEY_ALLOWED_ENV))?;
    check_dirs(&p.allowed_dirs, ceiling).map_err(excess("allowedDirs", KEY_ALLOWED_DIRS))?;
    NETWORK
        .check(
            p.max_network_requests.into(),
            ceiling.max_network_requests.into(),
        )
        .map_err(excess("maxNetworkRequests", KEY_MAX_NETWORK_REQUESTS))?;
    DISK.check(p.max_disk_bytes, ceiling.max_disk_bytes)
        .map_err(excess("maxDiskBytes", KEY_MAX_DISK_BYTES))?;
    Ok(())
}

fn allowed_list(what: &str, items: &[String]) -> String {
    if items.is_empty() {
        format!("the node ceiling allows no {what}; remove them or ask the node admin")
    } else {
        format!("use {what} from: {}", items.join(", "))
    }
}

fn check_hosts(hosts: &[String], ceiling: &WasiSandboxPolicy) -> Result<(), Violation> {
    let allowed: Vec<String> = ceiling
        .allowed_hosts
        .iter()
        .map(|h| normalize_host(h).unwrap_or_else(|| h.clone()))
        .collect();
    for host in hosts {
        let host = normalize_host(host).unwrap_or_else(|| host.clone());
        if !allowed.contains(&host) {
            return Err(Violation::new(
                format!("host {} is not allowed by the node ceiling", shown(&host)),
                allowed_list("hosts", &allowed),
            ));
        }
    }
    Ok(())
}

fn check_env(env: &[String], ceiling: &WasiSandboxPolicy) -> Result<(), Violation> {
    for name in env {
        if !ceiling.allowed_env_vars.contains(name) {
            return Err(Violation::new(
                format!("env var {} is not allowed by the node ceiling", shown(name)),
                allowed_list("env vars", &ceiling.allowed_env_vars),
            ));
        }
    }
    Ok(())
}

fn check_dirs(dirs: &[DirMapping], ceiling: &WasiSandboxPolicy) -> Result<(), Violation> {
    let norm = |d: &DirMapping| annotations::normalize_dir(d).unwrap_or_else(|_| d.clone());
    let allowed: Vec<DirMapping> = ceiling.allowed_dirs.iter().map(norm).collect();
    for d in dirs {
        let d = norm(d);
        let same = allowed
            .iter()
            .find(|c| c.host_path == d.host_path && c.guest_path == d.guest_path);
        match same {
            None => {
                let texts: Vec<String> = allowed.iter().map(dir_text).collect();
                return Err(Violation::new(
                    format!(
                        "directory {}:{} is not allowed by the node ceiling",
                        shown(&d.host_path),
                        shown(&d.guest_path)
                    ),
                    allowed_list("mappings", &texts),
                ));
            }
            Some(c) if c.readonly && !d.readonly => {
                return Err(Violation::new(
                    format!(
                        "directory {}:{} must be read-only under the node ceiling",
                        d.host_path, d.guest_path
                    ),
                    format!("use {}:{}:ro", d.host_path, d.guest_path),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}
