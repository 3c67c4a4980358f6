//! Reading this container's own OCI spec from inside the container.
//!
//! `run_wasi` only sees args, env and the entrypoint, but sandbox policies come from the
//! spec's annotations. The shim daemon runs in the first container's bundle directory, whose
//! parent holds every bundle of the namespace; `main` opens that directory before any fork.
//! Inside the container the bundle is the one whose `rootfs` is our `/` (same device and
//! inode: the rootfs is bind-mounted onto itself before `pivot_root`).

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{bail, Context, Result};
use nix::dir::Dir;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, stat, Mode};

/// Opens the directory holding the bundles of this shim's namespace.
pub fn open_task_dir() -> Result<OwnedFd> {
    let cwd = std::env::current_dir()?;
    let parent = cwd.parent().context("shim runs in /")?;
    let fd = nix::fcntl::open(parent, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .with_context(|| format!("opening {}", parent.display()))?;
    // SAFETY: fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The annotations of the container whose rootfs is this process's `/`.
pub fn own_annotations(task_dir: &OwnedFd) -> Result<HashMap<String, String>> {
    let root = stat("/").context("stat /")?;
    let fd = task_dir.as_raw_fd();
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
