//! Reading this container's own OCI spec from inside the container.
//!
//! `run_wasi` only sees args, env and the entrypoint, but sandbox policies come from the
//! spec's annotations. The shim daemon runs in the first container's bundle directory, whose
//! parent holds every bundle of the namespace (see [`TaskDir`] for how the container gets
//! there). Inside the container the bundle is the one whose `rootfs` is our `/` (same device
//! and inode: the rootfs is bind-mounted onto itself before `pivot_root`).

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use anyhow::{bail, Context, Result};
use nix::dir::Dir;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, stat, Mode};

/// How a container process finds its namespace's bundle directory after `pivot_root`.
///
/// Host paths are out of sight inside the container, but a directory descriptor opened before
/// the fork still names its host directory, and `..` from it walks the host tree. `main` keeps
/// only the AOT cache's descriptor (or, without a cache, one on the nearest existing directory
/// above it that is not above the bundles), so nothing of ours holds the bundle tree open while
/// containers are being set up; the container walks to the bundles when it needs its spec.
pub struct TaskDir {
    /// None: walk from the AOT cache directory's descriptor (passed to `own_annotations`).
    anchor: Option<OwnedFd>,
    /// From the anchor to `<task root>/<namespace>`, e.g. `../../../run/containerd/io.containerd.runtime.v2.task/k8s.io`.
    relative: String,
}

/// Prepares the way to the bundles of the shim's namespace (the parent of its working dir),
/// from `anchor_hint` (the AOT cache directory). `hint_is_open` says the caller already holds a
/// descriptor on it, which will be passed to [`own_annotations`].
pub fn open_task_dir(anchor_hint: &Path, hint_is_open: bool) -> Result<TaskDir> {
    let ns_dir = std::env::current_dir()?.parent().context("shim runs in /")?.canonicalize()?;
    let mut anchor = anchor_hint.to_path_buf();
    loop {
        let usable = anchor.is_dir() && !ns_dir.starts_with(anchor.canonicalize().unwrap_or_default());
        if usable {
            break;
        }
        anchor = match anchor.parent() {
            Some(p) if p != anchor => p.to_path_buf(),
            _ => bail!("no directory usable as an anchor near {}", anchor_hint.display()),
        };
    }
    let canonical = anchor.canonicalize()?;
    let depth = canonical.components().count() - 1;
    let relative = format!("{}{}", "../".repeat(depth), ns_dir.to_string_lossy().trim_start_matches('/'));
    if hint_is_open && anchor == anchor_hint {
        return Ok(TaskDir { anchor: None, relative });
    }
    let fd = nix::fcntl::open(&canonical, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .with_context(|| format!("opening {}", canonical.display()))?;
    // SAFETY: fresh descriptor that nothing else owns.
    Ok(TaskDir { anchor: Some(unsafe { OwnedFd::from_raw_fd(fd) }), relative })
}

/// The annotations of the container whose rootfs is this process's `/`. `hint_fd` is the
/// descriptor of the anchor hint when [`open_task_dir`] was told it is open.
pub fn own_annotations(task_dir: &TaskDir, hint_fd: Option<RawFd>) -> Result<HashMap<String, String>> {
    let root = stat("/").context("stat /")?;
    let anchor = match &task_dir.anchor {
        Some(fd) => fd.as_raw_fd(),
        None => hint_fd.context("the AOT cache directory is not open")?,
    };
    let ns_fd = openat(
        Some(anchor),
        task_dir.relative.as_str(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .context("opening the namespace's task directory")?;
    // SAFETY: fresh descriptor from openat.
    let ns_dir = unsafe { OwnedFd::from_raw_fd(ns_fd) };
    let fd = ns_dir.as_raw_fd();
    let mut dir = Dir::openat(Some(fd), ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?;
    for entry in dir.iter().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let Ok(st) = fstatat(Some(fd), format!("{name}/rootfs").as_str(), AtFlags::empty()) else { continue };
        if st.st_dev != root.st_dev || st.st_ino != root.st_ino {
            continue;
        }
        let config = openat(Some(fd), format!("{name}/config.json").as_str(), OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
            .with_context(|| format!("opening the spec of {name}"))?;
        // SAFETY: fresh descriptor from openat.
        let mut file = unsafe { File::from_raw_fd(config) };
        let mut text = Vec::new();
        file.read_to_end(&mut text)?;
        return annotations_of(&text).with_context(|| format!("reading the spec of {name}"));
    }
    bail!("no bundle in the task directory has this container's rootfs")
}

fn annotations_of(spec_json: &[u8]) -> Result<HashMap<String, String>> {
    let spec: serde_json::Value = serde_json::from_slice(spec_json)?;
    let mut out = HashMap::new();
    if let Some(map) = spec.get("annotations").and_then(|a| a.as_object()) {
        for (k, v) in map {
            if let Some(v) = v.as_str() {
                out.insert(k.clone(), v.to_string());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_string_annotations() {
        let a = annotations_of(br#"{"ociVersion":"1.0.2","annotations":{"wasmedge.io/policy":"edge-strict","n":1}}"#).unwrap();
        assert_eq!(a.get("wasmedge.io/policy").map(String::as_str), Some("edge-strict"));
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn spec_without_annotations_is_empty() {
        assert!(annotations_of(br#"{"ociVersion":"1.0.2"}"#).unwrap().is_empty());
    }
}
