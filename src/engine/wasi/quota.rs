//! A byte quota for a container's read-write directories, shared by all its instances.
//!
//! What counts: the apparent size of every regular file beneath the directories (a sparse file
//! counts its whole length, so a write far past the end is no way around the quota) and
//! [`ENTRY_BYTES`] for every name in them (file, directory, symlink, hard link), so that
//! millions of empty files are not free either. The count starts from a walk of the
//! directories when the container starts ([`DiskQuota::measure`]) and then follows every change
//! the module makes through WASI. A change is made with the ledger locked and measured (the
//! file's size before and after), not predicted, so the count stays right when a call fails
//! halfway or two instances write the same file.
//!
//! An unlinked file that is still open keeps its bytes charged until its last descriptor is
//! closed; otherwise write, keep open, unlink, repeat would fill the disk.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::dir::Dir;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstatat, Mode, SFlag};

/// What a name costs: about one block of directory and inode space.
pub const ENTRY_BYTES: u64 = 4096;

/// Names the start-up walk looks at before it stops counting (and says so).
const MAX_WALKED_ENTRIES: u64 = 1_000_000;
/// Directory depth the walk descends to (each level holds one descriptor).
const MAX_WALK_DEPTH: usize = 128;

/// The quota of one container; clones share it.
#[derive(Clone)]
pub struct DiskQuota(Arc<Shared>);

struct Shared {
    limit: u64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    used: u64,
    /// Regular files some instance holds open, by identity.
    open: HashMap<FileId, OpenFile>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    pub(super) fn of(st: &libc::stat) -> Self {
        FileId {
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }
}

struct OpenFile {
    count: u32,
    /// Its last name is gone: its bytes are released when the last descriptor closes.
    unlinked: bool,
}

impl std::fmt::Debug for DiskQuota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DiskQuota({} of {} bytes)", self.used(), self.limit())
    }
}

/// What the start-up walk found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub entries: u64,
    /// False when the walk stopped early (too many names, too deep, unreadable directories):
    /// `bytes` is then less than what the directories hold.
    pub complete: bool,
}

impl DiskQuota {
    pub fn new(limit: u64, used: u64) -> Self {
        DiskQuota(Arc::new(Shared {
            limit,
            state: Mutex::new(State {
                used,
                open: HashMap::new(),
            }),
        }))
    }

    /// A quota of `limit` bytes, starting from what `dirs` hold now. A directory reached twice
    /// (nested or repeated preopens, hard links) is counted once.
    pub fn measure(limit: u64, dirs: &[BorrowedFd<'_>]) -> (Self, Usage) {
        let mut usage = Usage {
            bytes: 0,
            entries: 0,
            complete: true,
        };
        let mut seen = HashSet::new();
        for dir in dirs {
            let Ok(st) = nix::sys::stat::fstat(dir.as_raw_fd()) else {
                usage.complete = false;
                continue;
            };
            if seen.insert(FileId::of(&st)) {
                walk(*dir, 0, &mut seen, &mut usage);
            }
        }
        (DiskQuota::new(limit, usage.bytes), usage)
    }

    pub fn limit(&self) -> u64 {
        self.0.limit
    }

    pub fn used(&self) -> u64 {
        self.lock().state.used
    }

    /// The ledger, locked: hold it across the call that changes what the directories hold.
    pub(super) fn lock(&self) -> Ledger<'_> {
        Ledger {
            limit: self.0.limit,
            // A panic elsewhere leaves plain numbers behind; they are still the best count.
            state: self.0.state.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }
}

fn walk(dir: BorrowedFd<'_>, depth: usize, seen: &mut HashSet<FileId>, usage: &mut Usage) {
    // A descriptor of its own: iterating moves the offset of the one it reads.
    let Ok(mut entries) = Dir::openat(
        Some(dir.as_raw_fd()),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) else {
        usage.complete = false;
        return;
    };
    let mut subdirs = Vec::new();
    for entry in entries.iter() {
        let Ok(entry) = entry else {
            usage.complete = false;
            break;
        };
        let name = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        if usage.entries >= MAX_WALKED_ENTRIES {
            usage.complete = false;
            return;
        }
        usage.entries += 1;
        usage.bytes = usage.bytes.saturating_add(ENTRY_BYTES);
        let Ok(st) = fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) else {
            continue;
        };
        let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
        let first = seen.insert(FileId::of(&st));
        if kind == SFlag::S_IFREG && first {
            usage.bytes = usage.bytes.saturating_add(st.st_size.max(0) as u64);
        } else if kind == SFlag::S_IFDIR && first {
            subdirs.push(name.to_owned());
        }
    }
    drop(entries);
    for name in subdirs {
        if depth + 1 >= MAX_WALK_DEPTH {
            usage.complete = false;
            return;
        }
        let opened = nix::fcntl::openat(
            Some(dir.as_raw_fd()),
            name.as_c_str(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        );
        match opened {
            Ok(raw) => {
                // SAFETY: openat just returned this descriptor; nothing else owns it.
                let sub: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(raw) };
                use std::os::fd::AsFd;
                walk(sub.as_fd(), depth + 1, seen, usage);
            }
            Err(_) => usage.complete = false,
        }
    }
}

/// The locked count. Sizes are `st_size` values; every method keeps `used` within `0..=u64::MAX`.
pub(super) struct Ledger<'a> {
    limit: u64,
    state: MutexGuard<'a, State>,
}

impl Ledger<'_> {
    pub(super) fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes that may still be added.
    pub(super) fn room(&self) -> u64 {
        self.limit.saturating_sub(self.state.used)
    }

    /// A file went from `before` to `after` bytes.
    pub(super) fn resized(&mut self, before: u64, after: u64) {
        let used = &mut self.state.used;
        *used = if after >= before {
            used.saturating_add(after - before)
        } else {
            used.saturating_sub(before - after)
        };
    }

    /// Room for one more name, or `false`.
    pub(super) fn has_room_for_entry(&self) -> bool {
        self.room() >= ENTRY_BYTES
    }

    pub(super) fn entry_added(&mut self) {
        self.resized(0, ENTRY_BYTES);
    }

    pub(super) fn entry_removed(&mut self) {
        self.resized(ENTRY_BYTES, 0);
    }

    /// A name of a regular file was removed; `st` is the file as it was just before, `nlink`
    /// included. Its bytes go with its last name, unless it is still open somewhere.
    pub(super) fn file_unlinked(&mut self, st: &libc::stat) {
        self.entry_removed();
        if st.st_nlink > 1 {
            return;
        }
        match self.state.open.get_mut(&FileId::of(st)) {
            Some(open) => open.unlinked = true,
            None => self.resized(st.st_size.max(0) as u64, 0),
        }
    }

    pub(super) fn file_opened(&mut self, id: FileId) {
        self.state
            .open
            .entry(id)
            .or_insert(OpenFile {
                count: 0,
                unlinked: false,
            })
            .count += 1;
    }

    /// A descriptor of the file is about to be closed; `size` tells its size now (called only
    /// when it was the last descriptor of an unlinked file).
    pub(super) fn file_closing(&mut self, id: FileId, size: impl FnOnce() -> Option<u64>) {
        let Some(open) = self.state.open.get_mut(&id) else {
            return;
        };
        open.count -= 1;
        if open.count > 0 {
            return;
        }
        let unlinked = open.unlinked;
        self.state.open.remove(&id);
        if unlinked {
            if let Some(size) = size() {
                self.resized(size, 0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn stat(path: &std::path::Path) -> libc::stat {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: zeroed stat is valid; lstat fills it.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::lstat(c.as_ptr(), &mut st) }, 0);
        st
    }

    #[test]
    fn the_walk_counts_sizes_once_and_every_name() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::write(root.join("a"), vec![0u8; 1000]).unwrap();
        std::fs::create_dir_all(root.join("d/e")).unwrap();
        std::fs::write(root.join("d/e/b"), vec![0u8; 3000]).unwrap();
        std::fs::hard_link(root.join("a"), root.join("d/a-again")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("d/to-etc")).unwrap();
        let top = std::fs::File::open(root).unwrap();
        let nested = std::fs::File::open(root.join("d")).unwrap();
        let (quota, usage) = DiskQuota::measure(1 << 20, &[top.as_fd(), nested.as_fd()]);
        // Names: a, d, d/e, d/e/b, d/a-again, d/to-etc; bytes: 1000 + 3000 (the link once).
        assert_eq!(usage.entries, 6);
        assert!(usage.complete);
        assert_eq!(usage.bytes, 6 * ENTRY_BYTES + 4000);
        assert_eq!(quota.used(), usage.bytes);
    }

    #[test]
    fn an_open_unlinked_file_stays_charged_until_its_last_close() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        std::fs::write(&path, vec![0u8; 5000]).unwrap();
        let st = stat(&path);
        let quota = DiskQuota::new(1 << 20, ENTRY_BYTES + 5000);
        let id = FileId::of(&st);
        let mut ledger = quota.lock();
        ledger.file_opened(id);
        ledger.file_opened(id);
        ledger.file_unlinked(&st);
        assert_eq!(
            ledger.state.used, 5000,
            "the name is gone, the bytes not yet"
        );
        ledger.file_closing(id, || Some(5000));
        assert_eq!(ledger.state.used, 5000);
        ledger.file_closing(id, || Some(7000));
        assert_eq!(
            ledger.state.used, 0,
            "released at the last close, saturating"
        );
        assert!(ledger.state.open.is_empty());
    }

    #[test]
    fn a_name_of_a_linked_file_releases_only_the_name() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        std::fs::write(&path, vec![0u8; 5000]).unwrap();
        std::fs::hard_link(&path, tmp.path().join("g")).unwrap();
        let quota = DiskQuota::new(1 << 20, 2 * ENTRY_BYTES + 5000);
        let mut ledger = quota.lock();
        ledger.file_unlinked(&stat(&path));
        assert_eq!(ledger.state.used, ENTRY_BYTES + 5000);
    }

    #[test]
    fn room_never_underflows() {
        let quota = DiskQuota::new(100, 500);
        let mut ledger = quota.lock();
        assert_eq!(ledger.room(), 0);
        assert!(!ledger.has_room_for_entry());
        ledger.resized(10_000, 0);
        assert_eq!(ledger.room(), 100);
        ledger.resized(0, u64::MAX);
        assert_eq!(ledger.room(), 0);
    }
}
