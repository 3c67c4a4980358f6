//! Changes the shim makes to a bundle's `config.json` before youki reads it.
//!
//! youki 0.6 (inside containerd-shim-wasm) sets up a cgroup v1 `/sys/fs/cgroup` mount by
//! reading `/proc/<pid>` of the container's init process (or its parent) in the shim's own
//! `/proc`, using the pid as the *container's* pid namespace numbers it. When the container
//! joins the pod's pid namespace (`shareProcessNamespace`, or a CRI client that leaves the
//! container's pid mode at its `POD` default), that number is small and unrelated to the
//! host's pids: if no host process has it, container creation fails with
//! `failed to prepare rootfs` (`Procfs(NotFound("/proc/10"))`); if one does, youki reads a
//! stranger's cgroups. Which of the two happens depends on how many processes the pod has
//! started before, so the failure comes and goes.
//!
//! A wasm module never sees `/sys/fs/cgroup` (it sees only its policy's preopens), so the
//! shim drops the cgroup mount from such specs. Specs that create their own pid namespace,
//! and hosts with the unified cgroup v2 hierarchy, are left unchanged.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

/// Applies [`adjust`] to `<bundle>/config.json`, rewriting it (atomically) only if something
/// changed. Returns what changed, for the log.
pub fn prepare(bundle: &Path) -> Result<Vec<String>> {
    let path = bundle.join("config.json");
    let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut spec: Value =
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))?;
    let changes = adjust(&mut spec, host_has_cgroup_v1_mounts());
    if changes.is_empty() {
        return Ok(changes);
    }
    let temp = bundle.join(".config.json.wasmedge-tmp");
    std::fs::write(&temp, serde_json::to_vec(&spec)?)
        .with_context(|| format!("writing {}", temp.display()))?;
    std::fs::rename(&temp, &path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(changes)
}

/// The pure part of [`prepare`]: edits `spec` in place and says what it changed.
pub fn adjust(spec: &mut Value, cgroup_v1: bool) -> Vec<String> {
    let mut changes = Vec::new();
    if cgroup_v1 && joins_existing_pid_namespace(spec) {
        if let Some(mounts) = spec.get_mut("mounts").and_then(Value::as_array_mut) {
            let before = mounts.len();
            mounts.retain(|m| m.get("type").and_then(Value::as_str) != Some("cgroup"));
            if mounts.len() != before {
                changes.push(
                    "dropped the cgroup v1 mount (the container joins an existing pid namespace)"
                        .to_string(),
                );
            }
        }
    }
    changes
}

fn joins_existing_pid_namespace(spec: &Value) -> bool {
    let Some(namespaces) = spec.pointer("/linux/namespaces").and_then(Value::as_array) else {
        return false;
    };
    namespaces.iter().any(|ns| {
        ns.get("type").and_then(Value::as_str) == Some("pid")
            && ns
                .get("path")
                .and_then(Value::as_str)
                .is_some_and(|p| !p.is_empty())
    })
}

/// youki takes its cgroup v1 path unless `/sys/fs/cgroup` itself is the unified hierarchy.
fn host_has_cgroup_v1_mounts() -> bool {
    match nix::sys::statfs::statfs("/sys/fs/cgroup") {
        Ok(fs) => fs.filesystem_type() != nix::sys::statfs::CGROUP2_SUPER_MAGIC,
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(pid_namespace: Value) -> Value {
        json!({
            "ociVersion": "1.1.0",
            "process": {"args": ["/app.wasm"]},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["ro"]},
                {"destination": "/etc/hosts", "type": "bind", "source": "/x/hosts"}
            ],
            "linux": {
                "cgroupsPath": "/k8s.io/abc",
                "namespaces": [{"type": "mount"}, {"type": "network", "path": "/proc/7/ns/net"}, pid_namespace],
                "somethingNew": {"kept": true}
            }
        })
    }

    fn mount_types(spec: &Value) -> Vec<&str> {
        spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["type"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn joined_pid_namespace_on_cgroup_v1_loses_only_the_cgroup_mount() {
        let mut s = spec(json!({"type": "pid", "path": "/proc/42/ns/pid"}));
        let original = s.clone();
        let changes = adjust(&mut s, true);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(mount_types(&s), ["proc", "bind"]);
        // Everything else, including fields this shim does not know, stays as it was.
        assert_eq!(s["linux"], original["linux"]);
        assert_eq!(s["process"], original["process"]);
    }

    #[test]
    fn own_pid_namespace_or_cgroup_v2_is_left_alone() {
        for (pid_ns, v1) in [
            (json!({"type": "pid"}), true),
            (json!({"type": "pid", "path": ""}), true),
            (json!({"type": "pid", "path": "/proc/42/ns/pid"}), false),
            (json!({"type": "uts"}), true),
        ] {
            let mut s = spec(pid_ns.clone());
            let original = s.clone();
            assert!(adjust(&mut s, v1).is_empty(), "{pid_ns} v1={v1}");
            assert_eq!(s, original);
        }
    }

    #[test]
    fn prepare_rewrites_the_file_only_when_needed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let untouched = serde_json::to_vec_pretty(&spec(json!({"type": "pid"}))).unwrap();
        std::fs::write(&path, &untouched).unwrap();
        assert!(prepare(dir.path()).unwrap().is_empty());
        assert_eq!(std::fs::read(&path).unwrap(), untouched);

        std::fs::write(
            &path,
            serde_json::to_vec(&spec(json!({"type": "pid", "path": "/proc/42/ns/pid"}))).unwrap(),
        )
        .unwrap();
        let changed = prepare(dir.path()).unwrap();
        let written: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        if host_has_cgroup_v1_mounts() {
            assert_eq!(changed.len(), 1);
            assert_eq!(mount_types(&written), ["proc", "bind"]);
        } else {
            assert!(changed.is_empty());
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );

        std::fs::write(&path, b"{ not json").unwrap();
        assert!(prepare(dir.path())
            .unwrap_err()
            .to_string()
            .contains("parsing"));
    }
}
