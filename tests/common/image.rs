//! Hostile OCI images for the escape tests: what `wasm-oci` refuses to build on purpose
//! (symlinks to anywhere, device nodes, ELF files as modules), written as an OCI layout
//! archive that `ctr image import` takes.

use std::path::{Path, PathBuf};

use serde_json::json;
use sha2::{Digest, Sha256};

pub enum Entry<'a> {
    Dir(&'a str),
    File {
        path: &'a str,
        bytes: Vec<u8>,
        mode: u32,
    },
    Symlink {
        path: &'a str,
        target: &'a str,
    },
}

/// Writes `<dir>/<sanitized reference>.tar`: one layer with `entries` (parents are created
/// as needed), an amd64/linux config with `entrypoint`.
pub fn build(dir: &Path, reference: &str, entries: &[Entry], entrypoint: &[&str]) -> PathBuf {
    let layer = layer_tar(entries);
    let layer_digest = digest(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Entrypoint": entrypoint, "WorkingDir": "/" },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len() }],
    }))
    .unwrap();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest(&manifest),
            "size": manifest.len(),
            "platform": { "architecture": "amd64", "os": "linux" },
            "annotations": { "io.containerd.image.name": reference, "org.opencontainers.image.ref.name": reference },
        }],
    }))
    .unwrap();
    let out = dir.join(format!(
        "{}.tar",
        reference.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    ));
    let mut archive = tar::Builder::new(std::fs::File::create(&out).unwrap());
    append(
        &mut archive,
        "oci-layout",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
        0o644,
    );
    append(&mut archive, "index.json", &index, 0o644);
    for blob in [&layer, &config, &manifest] {
        let name = format!(
            "blobs/sha256/{}",
            digest(blob).trim_start_matches("sha256:")
        );
        append(&mut archive, &name, blob, 0o644);
    }
    archive.finish().unwrap();
    out
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn append(archive: &mut tar::Builder<impl std::io::Write>, path: &str, bytes: &[u8], mode: u32) {
    let mut header = tar::Header::new_ustar();
    header.set_size(bytes.len() as u64);
    header.set_mode(mode);
    header.set_entry_type(tar::EntryType::Regular);
    archive.append_data(&mut header, path, bytes).unwrap();
}

fn layer_tar(entries: &[Entry]) -> Vec<u8> {
    let mut archive = tar::Builder::new(Vec::new());
    let mut dirs: Vec<String> = vec![];
    let mut dir = |archive: &mut tar::Builder<Vec<u8>>, path: &str| {
        let mut prefix = String::new();
        for part in path.trim_matches('/').split('/').filter(|p| !p.is_empty()) {
            prefix = format!("{prefix}{part}/");
            if !dirs.contains(&prefix) {
                let mut header = tar::Header::new_ustar();
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                archive
                    .append_data(&mut header, &prefix, std::io::empty())
                    .unwrap();
                dirs.push(prefix.clone());
            }
        }
    };
    for entry in entries {
        match entry {
            Entry::Dir(path) => dir(&mut archive, path),
            Entry::File { path, bytes, mode } => {
                dir(&mut archive, parent(path));
                append(&mut archive, path.trim_start_matches('/'), bytes, *mode);
            }
            Entry::Symlink { path, target } => {
                dir(&mut archive, parent(path));
                let mut header = tar::Header::new_ustar();
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                archive
                    .append_link(&mut header, path.trim_start_matches('/'), target)
                    .unwrap();
            }
        }
    }
    archive.into_inner().unwrap()
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map(|(p, _)| p).unwrap_or("")
}
