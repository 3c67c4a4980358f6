//! Cleanup after a shim that died (containerd runs `<shim> … -id ID delete` in the bundle).
//!
//! The library's delete forgets the container but leaves its cgroup directories behind when
//! the shim was killed; a node would accumulate them. The spec names the container's cgroup;
//! every process still in it is killed and the directories are removed, in every hierarchy.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Mount points of the cgroup hierarchies (v1 controllers and the unified v2 tree).
pub fn cgroup_mount_points() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            (fields.len() > 2 && (fields[2] == "cgroup" || fields[2] == "cgroup2")).then(|| PathBuf::from(fields[1]))
        })
        .collect()
}

/// The container's cgroup path from its spec, only when it is an absolute cgroupfs path that
/// ends in the container's id: anything else (empty, systemd `slice:prefix:name`, a shared
/// parent) is never touched.
pub fn container_cgroup(spec_json: &[u8], id: &str) -> Option<String> {
    let spec: serde_json::Value = serde_json::from_slice(spec_json).ok()?;
    let path = spec.get("linux")?.get("cgroupsPath")?.as_str()?;
    let path = path.trim_end_matches('/');
    let last = path.rsplit('/').next()?;
    (path.starts_with('/') && !id.is_empty() && last == id && !path.contains("/../")).then(|| path.to_string())
}

/// Kills what is left in the container's cgroups and removes them (deepest first).
pub fn remove_container_cgroups(bundle: &Path, id: &str) -> Result<()> {
    let spec = std::fs::read(bundle.join("config.json")).context("reading the bundle's config.json")?;
    let Some(cgroup) = container_cgroup(&spec, id) else { return Ok(()) };
    for root in cgroup_mount_points() {
        let dir = root.join(cgroup.trim_start_matches('/'));
        if !dir.is_dir() {
            continue;
        }
        let mut dirs = vec![];
        collect_dirs(&dir, &mut dirs);
        dirs.push(dir);
        for d in &dirs {
            for pid in std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default().lines() {
                if let Ok(pid) = pid.trim().parse::<i32>() {
                    // SAFETY: plain syscall; the process is in this container's own cgroup.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        for d in &dirs {
            // A killed process leaves its cgroup asynchronously: retry briefly.
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
    Ok(())
}

/// Every directory below `dir`, children before their parents.
pub fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            collect_dirs(&e.path(), out);
            out.push(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(path: &str) -> Vec<u8> {
        format!(r#"{{"linux":{{"cgroupsPath":"{path}"}}}}"#).into_bytes()
    }

    #[test]
    fn only_the_containers_own_cgroupfs_path() {
        assert_eq!(container_cgroup(&spec("/kubepods/pod1/abc"), "abc").as_deref(), Some("/kubepods/pod1/abc"));
        assert_eq!(container_cgroup(&spec("/ns/abc/"), "abc").as_deref(), Some("/ns/abc"));
        assert_eq!(container_cgroup(&spec(""), "abc"), None);
        assert_eq!(container_cgroup(&spec("/"), "abc"), None);
        assert_eq!(container_cgroup(&spec("/kubepods/pod1"), "abc"), None);
        assert_eq!(container_cgroup(&spec("system.slice:cri-containerd:abc"), "abc"), None);
        assert_eq!(container_cgroup(&spec("/a/../abc"), "abc"), None);
        assert_eq!(container_cgroup(&spec("/a/abc"), ""), None);
        assert_eq!(container_cgroup(b"{}", "abc"), None);
    }
}
