//! Node-level configuration written by the cluster admin (installed by `make install`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::engine::aot::CompileBudget;
use crate::http::settings::HttpCeiling;
use crate::policy::{CeilingSpec, PolicySettings, EDGE_STRICT};

/// Environment variable that points the shim at a config file (tests and unusual installs).
pub const CONFIG_ENV: &str = "CONTAINERD_SHIM_WASMEDGE_CONFIG";
/// Where `make install` puts the node config.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/containerd-shim-wasmedge/config.toml";

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Directory holding AOT-compiled modules, shared by all containers of the node.
    pub aot_cache_dir: PathBuf,
    /// Upper bound of the cache's size on disk; least recently used entries are evicted.
    pub aot_cache_max_bytes: u64,
    /// Extra or replacement policy presets (`<name>.yaml`), on top of the built-in ones.
    pub policy_dir: PathBuf,
    /// Preset of containers that name none (deny by default: edge-strict).
    pub default_policy: String,
    /// The most any container may get: a preset name or inline limits (default edge-moderate).
    pub ceiling: Option<CeilingSpec>,
    /// Largest module file (or wasm layer) the shim reads; a larger one is refused at start.
    pub max_module_bytes: u64,
    /// Wall-clock and CPU seconds one AOT compile may take. Compiling is the node's cost (once
    /// per module and node, outside the container's limits), so it has a budget of its own: a
    /// module that cannot be compiled within it fails with `AOT compile failed`.
    pub max_compile_seconds: u64,
    /// Memory (heap and other private data) one AOT compile may use.
    pub max_compile_memory_bytes: u64,
    /// DANGEROUS. Run machine code that images bring (ELF modules, WasmEdge AOT sections)
    /// instead of compiling their bytecode on this node: whoever builds an image then runs
    /// native code as root inside the container, outside every WASI policy.
    pub trust_image_native_code: bool,
    /// Maxima of the HTTP mode's annotations (`max-concurrency`, `warm-pool`, `max-body-bytes`,
    /// `drain-timeout-ms`, `shutdown-delay-ms`).
    pub http_ceiling: HttpCeiling,
    /// Run containers whose entrypoint is an ELF executable or a script natively (as runc
    /// would), besides the pod's sandbox (pause) container, which always runs natively.
    pub allow_native_containers: bool,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            aot_cache_dir: PathBuf::from("/var/lib/containerd-shim-wasmedge/aot-cache"),
            aot_cache_max_bytes: 1 << 30,
            policy_dir: PathBuf::from("/etc/containerd-shim-wasmedge/policies"),
            default_policy: EDGE_STRICT.to_string(),
            ceiling: None,
            max_module_bytes: 256 << 20,
            max_compile_seconds: 120,
            max_compile_memory_bytes: 1 << 30,
            trust_image_native_code: false,
            allow_native_containers: false,
            http_ceiling: HttpCeiling::default(),
        }
    }
}

impl NodeConfig {
    /// Loads the config named by `CONTAINERD_SHIM_WASMEDGE_CONFIG`, else the default path if it
    /// exists, else built-in defaults. A named file that is missing or malformed is an error:
    /// an admin's config is never silently ignored.
    pub fn load() -> Result<Self> {
        match std::env::var_os(CONFIG_ENV) {
            Some(path) => Self::from_file(Path::new(&path)),
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
                Self::from_file(Path::new(DEFAULT_CONFIG_PATH))
            }
            None => Ok(Self::default()),
        }
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading node config {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("parsing node config {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self> {
        let config: NodeConfig = toml::from_str(text)?;
        config.http_ceiling.check().map_err(anyhow::Error::msg)?;
        Ok(config)
    }

    /// The node's policy presets, default and ceiling, checked for consistency.
    pub fn compile_budget(&self) -> CompileBudget {
        CompileBudget {
            seconds: self.max_compile_seconds,
            memory_bytes: self.max_compile_memory_bytes,
        }
    }

    pub fn policy_settings(&self) -> Result<PolicySettings> {
        PolicySettings::load(
            &self.policy_dir,
            &self.default_policy,
            self.ceiling.as_ref(),
        )
        .with_context(|| format!("policy settings (policy_dir {})", self.policy_dir.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(NodeConfig::parse("").unwrap(), NodeConfig::default());
    }

    #[test]
    fn fields_are_read() {
        let c = NodeConfig::parse("aot_cache_dir = \"/x\"\naot_cache_max_bytes = 42\n").unwrap();
        assert_eq!(c.aot_cache_dir, PathBuf::from("/x"));
        assert_eq!(c.aot_cache_max_bytes, 42);
    }

    #[test]
    fn ceiling_as_preset_or_limits() {
        let c = NodeConfig::parse("ceiling = \"edge-strict\"\n").unwrap();
        assert_eq!(c.ceiling, Some(CeilingSpec::Preset("edge-strict".into())));
        let c = NodeConfig::parse(
            "[ceiling]\nmaxMemoryPages = 128\nexecutionTimeoutMs = 1000\nallowedHosts = []\nallowedEnvVars = [\"APP_MODE\"]\nallowedDirs = []\nmaxNetworkRequests = 0\n",
        )
        .unwrap();
        assert!(matches!(c.ceiling, Some(CeilingSpec::Limits(ref l)) if l.max_memory_pages == 128));
    }

    #[test]
    fn default_policy_must_fit_the_ceiling() {
        let c = NodeConfig::parse("default_policy = \"edge-moderate\"\nceiling = \"edge-strict\"\npolicy_dir = \"/nonexistent\"\n").unwrap();
        let err = c.policy_settings().unwrap_err();
        assert!(
            format!("{err:#}").contains("above the policy ceiling"),
            "{err:#}"
        );
    }

    #[test]
    fn the_shipped_config_keeps_native_code_off() {
        let shipped =
            NodeConfig::parse(include_str!("../runtime-config/node-config.toml")).unwrap();
        assert!(!shipped.trust_image_native_code && !shipped.allow_native_containers);
        assert_eq!(
            shipped.max_module_bytes,
            NodeConfig::default().max_module_bytes
        );
        assert_eq!(
            shipped.compile_budget(),
            NodeConfig::default().compile_budget()
        );
        assert_eq!(shipped.http_ceiling, HttpCeiling::default());
    }

    #[test]
    fn typo_is_rejected() {
        let err = NodeConfig::parse("aot_cache_dirr = \"/x\"").unwrap_err();
        assert!(format!("{err:#}").contains("aot_cache_dirr"), "{err:#}");
    }
}
