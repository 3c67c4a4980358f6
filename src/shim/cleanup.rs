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
            (fields.len() > 2 && (fields[2] == "cgroup" || fields[2] == "cgroup2"))
                .then(|| PathBuf::from(fields[1]))
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
    (path.starts_with('/') && !id.is_empty() && last == id && !path.contains("/../"))
        .then(|| path.to_string())
}

/// Kills what is left in the container's cgroups and removes them (deepest first).
pub fn remove_container_cgroups(bundle: &Path, id: &str) -> Result<()> {
    let dirs = container_cgroup_dirs(bundle, id)?;
    kill_processes_in(&dirs);
    // A killed process leaves its cgroup asynchronously, and on a busy node exiting can take
    // more than a second (seen on cgroup v2 with a churn running beside it): retry, killing
    // again, for up to 3 s, within containerd's 5 s for the whole `delete`.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    for d in &dirs {
        while std::fs::remove_dir(d).is_err() && d.exists() {
            if std::time::Instant::now() > deadline {
                break;
            }
            kill_processes_in(std::slice::from_ref(d));
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    Ok(())
}

/// Before the library deletes a container: youki kills what is left in its cgroups and gives
/// it about 100 ms to leave before removing them fails the whole delete ("could not delete");
/// on a busy node an exiting process can take longer. Kills and waits up to `limit` until the
/// cgroups are empty; returns whether they are.
pub fn drain_container_cgroups(
    bundle: &Path,
    id: &str,
    limit: std::time::Duration,
) -> Result<bool> {
    let dirs = container_cgroup_dirs(bundle, id)?;
    let deadline = std::time::Instant::now() + limit;
    while kill_processes_in(&dirs) > 0 {
        if std::time::Instant::now() > deadline {
            return Ok(false);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(true)
}

/// The container's cgroup directories in every hierarchy, children before their parents;
/// none unless the spec names the container's own cgroupfs path (see [`container_cgroup`]).
fn container_cgroup_dirs(bundle: &Path, id: &str) -> Result<Vec<PathBuf>> {
    let spec =
        std::fs::read(bundle.join("config.json")).context("reading the bundle's config.json")?;
    let Some(cgroup) = container_cgroup(&spec, id) else {
        return Ok(Vec::new());
    };
    let mut dirs = Vec::new();
    for root in cgroup_mount_points() {
        let dir = root.join(cgroup.trim_start_matches('/'));
        if dir.is_dir() {
            collect_dirs(&dir, &mut dirs);
            dirs.push(dir);
        }
    }
    Ok(dirs)
}

/// SIGKILLs every process in `dirs`; returns how many there were. On cgroup v2 (5.14+) through
/// `cgroup.kill`: the kernel kills the whole cgroup, also what forks meanwhile, and no pid read
/// from `cgroup.procs` can have been reused by another process by the time it is signalled.
fn kill_processes_in(dirs: &[PathBuf]) -> usize {
    let mut found = 0;
    for d in dirs {
        let pids: Vec<i32> = std::fs::read_to_string(d.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|pid| pid.trim().parse().ok())
            .collect();
        found += pids.len();
        if pids.is_empty() || std::fs::write(d.join("cgroup.kill"), "1").is_ok() {
            continue;
        }
        for pid in pids {
            // SAFETY: plain syscall; the process is in this container's own cgroup.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    found
}

/// Every directory below `dir`, children before their parents.
pub fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
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

    /// A process in a container cgroup (below this test's own memory cgroup, cgroup v1) is
    /// killed by the drain, which then reports the cgroup empty.
    #[test]
    fn drain_kills_what_is_left_and_waits_for_it() {
        let Some(own) = std::fs::read_to_string("/proc/self/cgroup")
            .unwrap()
            .lines()
            .find_map(|l| l.split_once(":memory:").map(|(_, path)| path.to_string()))
        else {
            eprintln!("skipped: no cgroup v1 memory hierarchy");
            return;
        };
        let Some(root) = std::fs::read_to_string("/proc/self/mounts")
            .unwrap()
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                (f.len() > 3 && f[2] == "cgroup" && f[3].split(',').any(|o| o == "memory"))
                    .then(|| PathBuf::from(f[1]))
            })
        else {
            eprintln!("skipped: memory hierarchy not mounted");
            return;
        };
        let id = format!("drain-{}", std::process::id());
        let cgroup = format!("{}/{id}", own.trim_end_matches('/'));
        let dir = root.join(cgroup.trim_start_matches('/'));
        std::fs::create_dir(&dir).unwrap();
        let bundle = tempfile::tempdir().unwrap();
        std::fs::write(bundle.path().join("config.json"), spec(&cgroup)).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("100")
            .spawn()
            .unwrap();
        std::fs::write(dir.join("cgroup.procs"), child.id().to_string()).unwrap();

        let drained =
            drain_container_cgroups(bundle.path(), &id, std::time::Duration::from_secs(10));
        let status = child.wait().unwrap();
        let removed = std::fs::remove_dir(&dir);
        assert!(drained.unwrap(), "cgroup not empty");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
        removed.unwrap();
    }

    #[test]
    fn only_the_containers_own_cgroupfs_path() {
        assert_eq!(
            container_cgroup(&spec("/kubepods/pod1/abc"), "abc").as_deref(),
            Some("/kubepods/pod1/abc")
        );
        assert_eq!(
            container_cgroup(&spec("/ns/abc/"), "abc").as_deref(),
            Some("/ns/abc")
        );
        assert_eq!(container_cgroup(&spec(""), "abc"), None);
        assert_eq!(container_cgroup(&spec("/"), "abc"), None);
        assert_eq!(container_cgroup(&spec("/kubepods/pod1"), "abc"), None);
        assert_eq!(
            container_cgroup(&spec("system.slice:cri-containerd:abc"), "abc"),
            None
        );
        assert_eq!(container_cgroup(&spec("/a/../abc"), "abc"), None);
        assert_eq!(container_cgroup(&spec("/a/abc"), ""), None);
        assert_eq!(container_cgroup(b"{}", "abc"), None);
    }
}
