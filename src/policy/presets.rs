//! Built-in presets (the YAML files of `runtime-config/policies/`, compiled in) and the one
//! loader that reads an admin's preset directory.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};

use super::WasiSandboxPolicy;

pub const EDGE_STRICT: &str = "edge-strict";
pub const EDGE_MODERATE: &str = "edge-moderate";

/// Same bytes as the ConfigMap entries in `k8s/policy-configmap.yaml` (checked by a test).
pub const EDGE_STRICT_YAML: &str = include_str!("../../runtime-config/policies/edge-strict.yaml");
pub const EDGE_MODERATE_YAML: &str =
    include_str!("../../runtime-config/policies/edge-moderate.yaml");

/// Namespace for preset helpers; presets themselves are plain `BTreeMap`s by name.
pub struct Presets;

impl Presets {
    /// `edge-strict` and `edge-moderate`, parsed from the embedded YAML.
    pub fn builtin() -> BTreeMap<String, WasiSandboxPolicy> {
        [
            (EDGE_STRICT, EDGE_STRICT_YAML),
            (EDGE_MODERATE, EDGE_MODERATE_YAML),
        ]
        .into_iter()
        .map(|(name, yaml)| {
            let policy = Self::parse(yaml)
                .unwrap_or_else(|e| panic!("built-in preset {name} is invalid: {e}"));
            (name.to_string(), policy)
        })
        .collect()
    }

    /// Parses one preset document (the ConfigMap format), checks its values and normalises them
    /// (see [`WasiSandboxPolicy::normalized`]).
    pub fn parse(yaml: &str) -> Result<WasiSandboxPolicy, String> {
        let policy: WasiSandboxPolicy = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        policy.normalized()
    }

    /// Every `*.yaml` of `dir`, named by file stem, on top of the built-ins; a missing `dir` means
    /// built-ins only (any other read error is an error). Hidden entries are
    /// skipped: a mounted ConfigMap directory also holds `..data` and timestamped `..2024_*`
    /// entries next to the symlinked `*.yaml` files.
    pub fn load_dir(dir: &Path) -> anyhow::Result<BTreeMap<String, WasiSandboxPolicy>> {
        let mut presets = Self::builtin();
        let entries = match std::fs::read_dir(dir) {
            // The default directory need not exist on a node that only uses the built-ins.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(presets),
            r => r.with_context(|| format!("reading policy preset directory {}", dir.display()))?,
        };
        let mut paths = Vec::new();
        for entry in entries {
            let entry = entry
                .with_context(|| format!("reading policy preset directory {}", dir.display()))?;
            let path = entry.path();
            let name = entry.file_name();
            let hidden = name.to_str().is_some_and(|n| n.starts_with('.'));
            if !hidden && path.extension().is_some_and(|e| e == "yaml") {
                paths.push(path);
            }
        }
        paths.sort();
        for path in paths {
            let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
                bail!(
                    "policy preset file {}: file name is not UTF-8",
                    path.display()
                );
            };
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading policy preset file {}", path.display()))?;
            let policy = Self::parse(&text)
                .map_err(|e| anyhow::anyhow!("policy preset file {}: {e}", path.display()))?;
            presets.insert(stem.to_string(), policy);
        }
        Ok(presets)
    }
}
