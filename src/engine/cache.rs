//! Node-wide cache of AOT-compiled modules.
//!
//! Only the shim daemon reads and writes it (through a directory descriptor it opens after
//! forking the zygote that containers come from, so no container inherits it): a container
//! gets its compiled code in memory, never a way to the cache.
//!
//! Entries are written to a temporary name and renamed into place, so a reader never sees a
//! half-written file; each entry also carries a SHA-256 of its payload, so a file damaged on
//! disk is detected, dropped and recompiled instead of being loaded.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use nix::dir::Dir;
use nix::fcntl::{openat, renameat, OFlag};
use nix::sys::stat::{fstatat, futimens, Mode};
use nix::sys::time::TimeSpec;
use nix::unistd::{unlinkat, UnlinkatFlags};
use sha2::{Digest, Sha256};

/// Version 02: entries written since containers lost access to the cache. Older ones (which a
/// container could have written) fail the header check and are recompiled.
const MAGIC: &[u8; 8] = b"WEAOT02\n";
const HEADER_LEN: usize = MAGIC.len() + 32;
const ENTRY_SUFFIX: &str = ".aot";
const TEMP_PREFIX: &str = ".tmp-";
/// Temporary files older than this belong to a writer that died; eviction removes them.
const STALE_TEMP_AGE: Duration = Duration::from_secs(600);

pub struct AotCache {
    dir: OwnedFd,
    max_bytes: u64,
}

/// Result of a lookup.
pub enum Lookup {
    Hit(Vec<u8>),
    Miss,
    /// The entry existed but failed its checksum; it has been removed.
    Corrupt(String),
}

impl AotCache {
    /// Opens (creating if needed) the cache directory.
    pub fn open(path: &Path, max_bytes: u64) -> Result<Self> {
        std::fs::create_dir_all(path)
            .with_context(|| format!("creating AOT cache dir {}", path.display()))?;
        let fd = nix::fcntl::open(
            path,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("opening AOT cache dir {}", path.display()))?;
        // SAFETY: `open` returned a fresh descriptor that nothing else owns.
        let dir = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { dir, max_bytes })
    }

    pub fn entry_name(key: &str) -> String {
        format!("{key}{ENTRY_SUFFIX}")
    }

    pub fn get(&self, key: &str) -> Lookup {
        let name = Self::entry_name(key);
        let fd = match openat(
            Some(self.dir.as_raw_fd()),
            name.as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(_) => return Lookup::Miss,
        };
        // SAFETY: fresh descriptor from openat.
        let mut file = unsafe { File::from_raw_fd(fd) };
        let mut data = Vec::new();
        if let Err(e) = file.read_to_end(&mut data) {
            return Lookup::Corrupt(format!("read failed: {e}"));
        }
        match decode_entry(&data) {
            Ok(()) => {
                // Recently used entries survive eviction longest.
                let now = TimeSpec::from(
                    SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap_or_default(),
                );
                let _ = futimens(file.as_fd().as_raw_fd(), &now, &now);
                data.drain(..HEADER_LEN);
                Lookup::Hit(data)
            }
            Err(reason) => {
                let _ = unlinkat(
                    Some(self.dir.as_raw_fd()),
                    name.as_str(),
                    UnlinkatFlags::NoRemoveDir,
                );
                Lookup::Corrupt(reason)
            }
        }
    }

    /// Stores `payload` under `key` atomically, then evicts down to the size bound.
    pub fn put(&self, key: &str, payload: &[u8]) -> Result<()> {
        let entry_len = (HEADER_LEN + payload.len()) as u64;
        if entry_len > self.max_bytes {
            bail!(
                "entry of {entry_len} bytes exceeds the cache bound of {} bytes",
                self.max_bytes
            );
        }
        let temp = format!(
            "{TEMP_PREFIX}{key}-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let written = self.write_new(&temp, payload).and_then(|()| {
            renameat(
                Some(self.dir.as_raw_fd()),
                temp.as_str(),
                Some(self.dir.as_raw_fd()),
                Self::entry_name(key).as_str(),
            )
            .context("renaming cache entry into place")
        });
        if written.is_err() {
            let _ = unlinkat(
                Some(self.dir.as_raw_fd()),
                temp.as_str(),
                UnlinkatFlags::NoRemoveDir,
            );
        }
        written?;
        self.evict(key);
        Ok(())
    }

    fn write_new(&self, name: &str, payload: &[u8]) -> Result<()> {
        let fd = openat(
            Some(self.dir.as_raw_fd()),
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .context("creating cache temp file")?;
        // SAFETY: fresh descriptor from openat.
        let mut file = unsafe { File::from_raw_fd(fd) };
        file.write_all(MAGIC)?;
        file.write_all(&Sha256::digest(payload))?;
        file.write_all(payload)?;
        file.sync_all()?;
        Ok(())
    }

    /// Removes least recently used entries until the cache fits its bound, and temp files left
    /// by writers that died. `keep` (the entry just written) goes last.
    fn evict(&self, keep: &str) {
        let keep = Self::entry_name(keep);
        let mut entries = self.entries();
        let now = SystemTime::now();
        entries.retain(|e| {
            if e.name.starts_with(TEMP_PREFIX) {
                if now.duration_since(e.mtime).unwrap_or_default() > STALE_TEMP_AGE {
                    self.remove(&e.name);
                }
                return false;
            }
            e.name.ends_with(ENTRY_SUFFIX)
        });
        let mut total: u64 = entries.iter().map(|e| e.size).sum();
        entries.sort_by_key(|e| (e.name == keep, e.mtime));
        for e in entries {
            if total <= self.max_bytes {
                break;
            }
            log::info!("aot cache: evicting {} ({} bytes)", e.name, e.size);
            self.remove(&e.name);
            total -= e.size;
        }
    }

    /// Drops the entry of `key` (one that does not belong to its key).
    pub fn remove_entry(&self, key: &str) {
        self.remove(&Self::entry_name(key));
    }

    fn remove(&self, name: &str) {
        let _ = unlinkat(Some(self.dir.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir);
    }

    /// Total bytes of complete entries.
    pub fn size(&self) -> u64 {
        self.entries()
            .iter()
            .filter(|e| e.name.ends_with(ENTRY_SUFFIX))
            .map(|e| e.size)
            .sum()
    }

    fn entries(&self) -> Vec<DirEntry> {
        let Ok(mut dir) = Dir::openat(
            Some(self.dir.as_raw_fd()),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) else {
            return vec![];
        };
        let mut out = vec![];
        for entry in dir.iter().flatten() {
            let name = OsStr::from_bytes(entry.file_name().to_bytes())
                .to_string_lossy()
                .into_owned();
            if name == "." || name == ".." {
                continue;
            }
            let Ok(st) = fstatat(
                Some(self.dir.as_raw_fd()),
                name.as_str(),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            ) else {
                continue;
            };
            if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                continue;
            }
            let mtime = SystemTime::UNIX_EPOCH
                + Duration::new(
                    st.st_mtime.max(0) as u64,
                    st.st_mtime_nsec.clamp(0, 999_999_999) as u32,
                );
            out.push(DirEntry {
                name,
                size: st.st_size as u64,
                mtime,
            });
        }
        out
    }
}

struct DirEntry {
    name: String,
    size: u64,
    mtime: SystemTime,
}

fn decode_entry(data: &[u8]) -> std::result::Result<(), String> {
    if data.len() < HEADER_LEN || &data[..MAGIC.len()] != MAGIC {
        return Err("bad header".into());
    }
    let (sum, payload) = data[MAGIC.len()..].split_at(32);
    if Sha256::digest(payload).as_slice() != sum {
        return Err("checksum mismatch".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(max: u64) -> (tempfile::TempDir, AotCache) {
        let dir = tempfile::tempdir().unwrap();
        let c = AotCache::open(dir.path(), max).unwrap();
        (dir, c)
    }

    #[test]
    fn put_then_get() {
        let (_d, c) = cache(1 << 20);
        assert!(matches!(c.get("k"), Lookup::Miss));
        c.put("k", b"native code").unwrap();
        match c.get("k") {
            Lookup::Hit(b) => assert_eq!(b, b"native code"),
            _ => panic!("expected hit"),
        }
    }

    #[test]
    fn corrupt_entry_is_detected_and_removed() {
        let (d, c) = cache(1 << 20);
        c.put("k", b"native code").unwrap();
        let path = d.path().join(AotCache::entry_name("k"));
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        assert!(matches!(c.get("k"), Lookup::Corrupt(_)));
        assert!(!path.exists());
        assert!(matches!(c.get("k"), Lookup::Miss));
    }

    #[test]
    fn truncated_entry_is_corrupt() {
        let (d, c) = cache(1 << 20);
        c.put("k", &[7u8; 1000]).unwrap();
        let path = d.path().join(AotCache::entry_name("k"));
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..500]).unwrap();
        assert!(matches!(c.get("k"), Lookup::Corrupt(_)));
    }

    #[test]
    fn evicts_least_recently_used_to_stay_in_bound() {
        let (_d, c) = cache(3 * (HEADER_LEN as u64 + 100));
        for k in ["a", "b", "c"] {
            c.put(k, &[0u8; 100]).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        // Touch "a" so that "b" is the oldest.
        assert!(matches!(c.get("a"), Lookup::Hit(_)));
        std::thread::sleep(Duration::from_millis(20));
        c.put("d", &[0u8; 100]).unwrap();
        assert!(c.size() <= 3 * (HEADER_LEN as u64 + 100));
        assert!(matches!(c.get("b"), Lookup::Miss));
        for k in ["a", "c", "d"] {
            assert!(matches!(c.get(k), Lookup::Hit(_)), "{k} should survive");
        }
    }

    #[test]
    fn oversized_entry_is_refused() {
        let (_d, c) = cache(100);
        assert!(c.put("big", &[0u8; 200]).is_err());
        assert_eq!(c.size(), 0);
    }

    #[test]
    fn no_temp_files_left_after_put() {
        let (d, c) = cache(1 << 20);
        c.put("k", b"x").unwrap();
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("k.aot")]);
    }
}
