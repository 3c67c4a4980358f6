//! Our own implementation of the `wasi_snapshot_preview1` import module, as WasmEdge host functions.
//!
//! Compared to WasmEdge's built-in WASI it
//! - gives every instance its own stdio (inherit the process fds, discard, or in-memory buffers),
//! - confines every path operation beneath the preopened host directory (`openat2` with
//!   `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`), refuses device nodes and /proc, /sys and the like
//!   wherever they turn up, enforces read-only preopens, and reports every denied access as a
//!   violation string,
//! - is cheap to instantiate (no threads, no big allocations).
//!
//! Layout: `abi` (spec constants), `mem` (bounds-checked guest memory), `sys` (syscalls),
//! `funcs` (the 46 functions).
//!
//! Use: [`bind_preopen_dir`] on every preopen once when the container starts, then
//! `WasiCtx::new(config)` then `run(module, "_start", ctx, config)`, or register
//! `import_object(ctx)` in a Store yourself. Building the import object (46 host functions) costs
//! about as much as WasmEdge's own WASI module (~20 us); a worker that runs many instances should
//! build it once and use `run_reusing`, which only swaps the (cheap) `WasiCtx`.
//!
//! How a run ends: `run` returns `Ok(())` both when the entry function returns and when the module
//! calls `proc_exit`; [`WasiCtx::exit_code`] then tells which (`Some(code)` = `proc_exit(code)`,
//! `None` = returned normally). `Err` means the module did not finish: a trap (unreachable, out of
//! bounds, stack overflow ...), an instantiation error or an external termination.

mod abi;
mod funcs;
mod mem;
pub mod net;
mod quota;
mod sys;

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use wasmedge_sdk::error::WasmEdgeError;
use wasmedge_sdk::vm::SyncInst;
use wasmedge_sdk::{AsInstance, ImportObject, ImportObjectBuilder, Module, Store, WasmEdgeResult};
use wasmedge_types::error::{CoreCommonError, CoreError};

use abi::{errno, rights, Errno};
use sys::DirFd;

pub use quota::{DiskQuota, ENTRY_BYTES};

/// The import module name.
pub const MODULE_NAME: &str = "wasi_snapshot_preview1";

/// A host directory made visible to the guest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Preopen {
    /// Path the guest uses (e.g. `/config`).
    pub guest: String,
    /// Host directory.
    pub host: PathBuf,
    /// No write of any kind beneath it.
    pub readonly: bool,
    /// The directory as [`bind_preopen_dir`] opened it at start: instances then get a copy of
    /// this descriptor instead of resolving `host` again (which a module that can write the
    /// parent directory could have replaced with a symlink meanwhile).
    #[serde(skip)]
    pub bound: Option<BoundDir>,
}

/// A preopen's directory descriptor, shared by every instance's copy of it.
#[derive(Debug, Clone)]
pub struct BoundDir(std::sync::Arc<OwnedFd>);

impl BoundDir {
    pub fn new(fd: OwnedFd) -> Self {
        BoundDir(std::sync::Arc::new(fd))
    }
}

impl std::os::fd::AsFd for BoundDir {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl PartialEq for BoundDir {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for BoundDir {}

/// Where a standard stream goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Stdio {
    /// The shim process's fd 0/1/2.
    Inherit,
    /// Reads see end-of-file, writes are discarded.
    #[default]
    Null,
    /// stdin: the bytes to read; stdout/stderr: output is appended to it (see `take_stdout`).
    Buffer(Vec<u8>),
}

#[derive(Debug, Clone, Default)]
pub struct WasiConfig {
    /// argv, including argv[0].
    pub args: Vec<String>,
    pub envs: Vec<(String, String)>,
    pub preopens: Vec<Preopen>,
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
    /// Most bytes kept of a `Stdio::Buffer` stdout and stderr (`None`: no bound); writes past
    /// it succeed for the guest and are counted as dropped (see [`WasiCtx::dropped_output`]).
    pub max_buffered: Option<OutputCaps>,
    /// Bytes the read-write preopens may hold (`None`: no bound); shared by the instances of a
    /// container, as their directories are.
    pub disk: Option<DiskQuota>,
}

/// Bounds of captured output, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputCaps {
    pub stdout: usize,
    pub stderr: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Mode {
    Inherit,
    #[default]
    Null,
    Buffer,
}

/// What a descriptor of the guest's fd table refers to.
#[derive(Debug)]
enum Kind {
    Stdin,
    Stdout,
    Stderr,
    File(OwnedFd),
    Dir(OwnedFd),
    /// The virtual "/" preopen: grants nothing.
    Root,
}

#[derive(Debug)]
struct Entry {
    kind: Kind,
    /// Guest path of the object (absolute for everything beneath "/"-style preopens), for reports.
    guest: String,
    /// Reported by fd_prestat_get (preopened directories only).
    preopen: bool,
    /// Beneath a read-only preopen.
    readonly: bool,
    base: u64,
    inheriting: u64,
    /// fdflags kept for descriptors whose flags are not the host's (stdio, directories).
    flags: u16,
    /// A regular file the disk quota knows is open (see `quota`).
    held: Option<(DiskQuota, quota::FileId)>,
}

impl Drop for Entry {
    /// Before the descriptor closes (fields drop after this), so an unlinked file's last size
    /// can still be read.
    fn drop(&mut self) {
        if let (Some((disk, id)), Kind::File(f)) = (self.held.take(), &self.kind) {
            let f = f.as_raw_fd();
            disk.lock().file_closing(id, || {
                sys::fstat(f)
                    .ok()
                    .filter(|st| st.st_nlink == 0)
                    .map(|st| st.st_size.max(0) as u64)
            });
        }
    }
}

/// Open descriptors one instance may hold, stdio and preopens included; `path_open` beyond it
/// fails with `EMFILE`. HTTP mode runs many instances in one process, whose own descriptor
/// limit they share.
pub const MAX_OPEN_FDS: usize = 256;

/// Most violations kept; later ones are counted only.
const MAX_VIOLATIONS: usize = 256;

/// The state of one WASI instance.
#[derive(Debug, Default)]
pub struct WasiCtx {
    args: Vec<String>,
    /// `NAME=value`.
    envs: Vec<String>,
    fds: Vec<Option<Entry>>,
    stdin_mode: Mode,
    stdout_mode: Mode,
    stderr_mode: Mode,
    stdin_buf: Vec<u8>,
    stdin_pos: usize,
    stdout_buf: Vec<u8>,
    stderr_buf: Vec<u8>,
    caps: Option<OutputCaps>,
    /// Bytes of captured (stdout, stderr) beyond `caps`, not kept.
    dropped: (u64, u64),
    exit_code: Option<u32>,
    violations: Vec<String>,
    violations_dropped: usize,
    /// Size of the module's linear memory (64 KiB pages) when the run ended.
    memory_pages: Option<u32>,
    disk: Option<DiskQuota>,
    /// End of the call's time limit (CLOCK_MONOTONIC ns): a host call waits at most until
    /// then, and returning from one after it ends the call (see [`WasiCtx::timed_out`]).
    deadline_ns: Option<u64>,
    timed_out: bool,
}

fn invalid(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, msg)
}

/// `/config/` -> `/config`; `/` stays.
fn normalize_guest(g: &str) -> String {
    let t = g.trim_end_matches('/');
    if t.is_empty() && g.starts_with('/') {
        "/".to_string()
    } else {
        t.to_string()
    }
}

/// Joins a directory's guest path and a path relative to it, for reports.
fn join_guest(dir: &str, rel: &str) -> String {
    if rel.is_empty() || rel == "." {
        return dir.to_string();
    }
    if rel.starts_with('/') {
        return rel.to_string();
    }
    if dir.ends_with('/') {
        format!("{dir}{rel}")
    } else {
        format!("{dir}/{rel}")
    }
}

impl WasiCtx {
    /// Builds the fd table: 0/1/2 per the config, the preopens from fd 3 in order, then the
    /// virtual root "/" (unless a preopen already is "/"). Host directories are opened as by
    /// [`bind_preopen_dir`] without its look at the mounts beneath them.
    pub fn new(config: WasiConfig) -> std::io::Result<Self> {
        for a in &config.args {
            if a.contains('\0') {
                return Err(invalid(format!("argument {a:?} contains NUL")));
            }
        }
        let mut envs = Vec::with_capacity(config.envs.len());
        for (k, v) in &config.envs {
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                return Err(invalid(format!("invalid environment variable {k:?}")));
            }
            envs.push(format!("{k}={v}"));
        }
        let mut ctx = WasiCtx {
            args: config.args,
            envs,
            caps: config.max_buffered,
            disk: config.disk,
            ..Default::default()
        };
        ctx.fds.reserve(config.preopens.len() + 4);
        let (mode, buf) = split_stdio(config.stdin);
        ctx.stdin_mode = mode;
        ctx.stdin_buf = buf;
        let (mode, buf) = split_stdio(config.stdout);
        ctx.stdout_mode = mode;
        ctx.stdout_buf = buf;
        let (mode, buf) = split_stdio(config.stderr);
        ctx.stderr_mode = mode;
        ctx.stderr_buf = buf;
        let stream = |kind, base| Entry {
            kind,
            guest: String::new(),
            preopen: false,
            readonly: false,
            base,
            inheriting: 0,
            flags: 0,
            held: None,
        };
        let common =
            rights::FD_FDSTAT_SET_FLAGS | rights::FD_FILESTAT_GET | rights::POLL_FD_READWRITE;
        ctx.fds
            .push(Some(stream(Kind::Stdin, rights::FD_READ | common)));
        ctx.fds
            .push(Some(stream(Kind::Stdout, rights::FD_WRITE | common)));
        ctx.fds
            .push(Some(stream(Kind::Stderr, rights::FD_WRITE | common)));
        let mut has_root = false;
        for p in &config.preopens {
            let guest = normalize_guest(&p.guest);
            if guest.is_empty() || guest.contains('\0') {
                return Err(invalid(format!("invalid preopen guest path {:?}", p.guest)));
            }
            // wasi-libc resolves absolute paths against "." as against "/" (both match every
            // path), and a tie goes to the later preopen: no virtual root beside either.
            has_root |= guest == "/" || guest == ".";
            let fd = match &p.bound {
                Some(BoundDir(fd)) => fd.try_clone(),
                None => sys::open_dir(&p.host),
            }
            .map_err(|e| std::io::Error::new(e.kind(), format!("preopen {}: {e}", p.guest)))?;
            ctx.fds.push(Some(Entry {
                kind: Kind::Dir(fd),
                guest,
                preopen: true,
                readonly: p.readonly,
                base: rights::DIR_BASE,
                inheriting: rights::DIR_INHERITING,
                flags: 0,
                held: None,
            }));
        }
        if !has_root {
            ctx.fds.push(Some(Entry {
                kind: Kind::Root,
                guest: "/".to_string(),
                preopen: true,
                readonly: true,
                base: rights::DIR_BASE,
                inheriting: rights::DIR_INHERITING,
                flags: 0,
                held: None,
            }));
        }
        Ok(ctx)
    }

    /// Starts the call's time limit now (`None`: no limit). The guest's own code is stopped by
    /// WasmEdge's timer at the same moment; this bounds the time spent in host calls.
    pub fn set_time_limit(&mut self, limit: Option<std::time::Duration>) {
        self.deadline_ns = limit.map(|l| {
            sys::monotonic_now().saturating_add(l.as_nanos().min(u64::MAX as u128) as u64)
        });
        self.timed_out = false;
    }

    /// The call was ended by its time limit while in (or on return from) a host call.
    pub fn timed_out(&self) -> bool {
        self.timed_out
    }

    /// True once the time limit has passed; the call is then marked timed out.
    fn deadline_passed(&mut self) -> bool {
        if self.deadline_ns.is_some_and(|d| sys::monotonic_now() >= d) {
            self.timed_out = true;
        }
        self.timed_out
    }

    /// Linear memory size in 64 KiB pages at the end of the last run (None: no memory).
    pub fn memory_pages(&self) -> Option<u32> {
        self.memory_pages
    }

    /// `Some(code)` once the module called `proc_exit(code)`.
    pub fn exit_code(&self) -> Option<u32> {
        self.exit_code
    }

    /// Denied accesses, in order, without duplicates (`permission denied: <path>`,
    /// `sandbox violation: fs write <path>`).
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    /// Bytes of captured (stdout, stderr) that were over the configured bound and not kept.
    pub fn dropped_output(&self) -> (u64, u64) {
        self.dropped
    }

    /// Keeps `bytes` of the guest's stdout (`stdout`) or stderr in their buffer, up to the bound.
    fn capture(&mut self, stdout: bool, bytes: &[u8]) {
        let (buf, cap, dropped) = if stdout {
            (
                &mut self.stdout_buf,
                self.caps.map(|c| c.stdout),
                &mut self.dropped.0,
            )
        } else {
            (
                &mut self.stderr_buf,
                self.caps.map(|c| c.stderr),
                &mut self.dropped.1,
            )
        };
        let room = cap.map_or(usize::MAX, |cap| cap.saturating_sub(buf.len()));
        let keep = bytes.len().min(room);
        buf.extend_from_slice(&bytes[..keep]);
        *dropped += (bytes.len() - keep) as u64;
    }

    /// Captured stdout (when configured as `Stdio::Buffer`), leaving it empty.
    pub fn take_stdout(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.stdout_buf)
    }

    /// Captured stderr (when configured as `Stdio::Buffer`), leaving it empty.
    pub fn take_stderr(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.stderr_buf)
    }

    fn record(&mut self, v: String) {
        if self.violations.contains(&v) {
            return;
        }
        if self.violations.len() >= MAX_VIOLATIONS {
            self.violations_dropped += 1;
            if self.violations_dropped == 1 {
                log::warn!("wasi: more than {MAX_VIOLATIONS} sandbox violations; not recording further ones");
            }
            return;
        }
        log::info!("wasi: {v}");
        self.violations.push(v);
    }

    /// Access outside the allowed directories: ENOTCAPABLE, as WASI runtimes answer a path that
    /// leaves its directory (the host may have the file; this instance has no capability for it).
    fn deny(&mut self, guest_path: String) -> Errno {
        self.record(format!("permission denied: {guest_path}"));
        errno::NOTCAPABLE
    }

    /// Guest path of `rel` beneath the directory `fd`, for reports.
    fn guest_of(&self, fd: u32, rel: &str) -> Result<String, Errno> {
        Ok(join_guest(&self.entry(fd)?.guest, rel))
    }

    /// A write that would take the read-write dirs past their quota: EDQUOT.
    fn over_quota(&mut self, guest_path: String, limit: u64) -> Errno {
        self.record(format!(
            "disk quota exceeded: {guest_path} (max_disk_bytes {limit}); raise wasmedge.io/max-disk-bytes or keep less in the read-write dirs"
        ));
        errno::DQUOT
    }

    /// Runs `op` on the regular file `fd`, which may change its size, under the disk quota.
    /// `op` gets the host descriptor and, with a quota, the file's size now and the bytes that
    /// may be added to the directories; whatever size change it makes is then charged. An
    /// `EDQUOT` from `op` is reported as a violation.
    fn resize_file<T>(
        &mut self,
        fd: u32,
        op: impl FnOnce(RawFd, Option<Room>) -> Result<T, Errno>,
    ) -> Result<T, Errno> {
        let f = funcs::file_fd(self.entry(fd)?)?;
        let Some(disk) = self.disk.clone() else {
            return op(f, None);
        };
        let mut ledger = disk.lock();
        let before = sys::fstat(f)?.st_size.max(0) as u64;
        let result = op(
            f,
            Some(Room {
                size: before,
                room: ledger.room(),
            }),
        );
        if let Ok(st) = sys::fstat(f) {
            ledger.resized(before, st.st_size.max(0) as u64);
        }
        let limit = ledger.limit();
        drop(ledger);
        if result.as_ref().err() == Some(&errno::DQUOT) {
            let guest = self.entry(fd)?.guest.clone();
            return Err(self.over_quota(guest, limit));
        }
        result
    }

    /// Runs `op`, which adds a name beneath the directory (`guest`) when it succeeds, under the
    /// disk quota: EDQUOT without calling it when there is no room for a name.
    fn add_name(
        &mut self,
        guest: &str,
        op: impl FnOnce() -> Result<(), Errno>,
    ) -> Result<(), Errno> {
        let Some(disk) = self.disk.clone() else {
            return op();
        };
        let mut ledger = disk.lock();
        if !ledger.has_room_for_entry() {
            let limit = ledger.limit();
            drop(ledger);
            return Err(self.over_quota(guest.to_string(), limit));
        }
        op()?;
        ledger.entry_added();
        Ok(())
    }

    /// Runs `op`, which removes the name `name` in `dir` when it succeeds, under the disk
    /// quota: the name is released, and with a regular file's last name its bytes.
    fn remove_name(
        &mut self,
        dir: RawFd,
        name: &str,
        op: impl FnOnce() -> Result<(), Errno>,
    ) -> Result<(), Errno> {
        let Some(disk) = self.disk.clone() else {
            return op();
        };
        let mut ledger = disk.lock();
        let before = sys::fstatat(dir, name, libc::AT_SYMLINK_NOFOLLOW).ok();
        op()?;
        match before {
            Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFREG => ledger.file_unlinked(&st),
            _ => ledger.entry_removed(),
        }
        Ok(())
    }

    /// Write beneath a read-only preopen: ENOTCAPABLE.
    fn deny_write(&mut self, guest_path: String) -> Errno {
        self.record(format!("sandbox violation: fs write {guest_path}"));
        errno::NOTCAPABLE
    }

    fn entry(&self, fd: u32) -> Result<&Entry, Errno> {
        self.fds
            .get(fd as usize)
            .and_then(Option::as_ref)
            .ok_or(errno::BADF)
    }

    /// The entry of `fd` if it holds every right of `needed` (NOTCAPABLE otherwise). Standard
    /// streams are checked by their calls (their direction is what matters).
    fn require(&self, fd: u32, needed: u64) -> Result<&Entry, Errno> {
        let e = self.entry(fd)?;
        match e.kind {
            Kind::File(_) | Kind::Dir(_) | Kind::Root if e.base & needed != needed => {
                Err(errno::NOTCAPABLE)
            }
            _ => Ok(e),
        }
    }

    fn entry_mut(&mut self, fd: u32) -> Result<&mut Entry, Errno> {
        self.fds
            .get_mut(fd as usize)
            .and_then(Option::as_mut)
            .ok_or(errno::BADF)
    }

    /// `EMFILE` when the instance holds [`MAX_OPEN_FDS`] descriptors already.
    fn check_fd_quota(&self) -> Result<(), Errno> {
        if self.fds.iter().flatten().count() >= MAX_OPEN_FDS {
            return Err(errno::MFILE);
        }
        Ok(())
    }

    /// Puts an entry in the lowest free slot.
    fn insert(&mut self, e: Entry) -> Result<u32, Errno> {
        self.check_fd_quota()?;
        let slot = match self.fds.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.fds.push(None);
                self.fds.len() - 1
            }
        };
        let fd = u32::try_from(slot).map_err(|_| errno::MFILE)?;
        self.fds[slot] = Some(e);
        Ok(fd)
    }

    /// The host descriptor of a directory entry, for a path operation on `rel` beneath it.
    /// Denies (EACCES + violation) beneath the virtual root, and (ENOTCAPABLE + violation) writes
    /// beneath read-only preopens. Returns (host dirfd, guest path of `rel`, readonly).
    fn dir_for(&mut self, fd: u32, rel: &str, write: bool) -> Result<(RawFd, String, bool), Errno> {
        let e = self.entry(fd)?;
        let guest = join_guest(&e.guest, rel);
        let readonly = e.readonly;
        let raw = match &e.kind {
            Kind::Dir(d) => d.as_raw_fd(),
            Kind::Root => return Err(self.deny(guest)),
            _ => return Err(errno::NOTDIR),
        };
        if write && readonly {
            return Err(self.deny_write(guest));
        }
        Ok((raw, guest, readonly))
    }

    /// Maps the failure of a confined lookup: an escape attempt becomes EACCES + violation.
    fn lookup_err(&mut self, e: sys::HostErr, guest: &str) -> Errno {
        if e == libc::EXDEV {
            self.deny(guest.to_string())
        } else {
            abi::from_host(e)
        }
    }

    /// Opens `rel` beneath `dirfd` (confined), with the escape check; reaching a device node or
    /// /proc, /sys and the like is denied the same way.
    fn open_beneath(
        &mut self,
        dirfd: RawFd,
        rel: &str,
        flags: i32,
        mode: u32,
        guest: &str,
    ) -> Result<OwnedFd, Errno> {
        if rel.is_empty() {
            return Err(errno::NOENT);
        }
        sys::open_confined(dirfd, rel, flags, mode).map_err(|e| match e {
            sys::OpenError::Host(e) => self.lookup_err(e, guest),
            sys::OpenError::Refused => self.deny(guest.to_string()),
        })
    }

    /// Resolves everything but the last component of `rel` beneath the directory `fd`.
    /// Returns the parent directory, the last component (never containing `/`; `.` when the path
    /// ends in `.` or `..`, which are resolved as part of the parent) and whether `rel` had a
    /// trailing slash.
    fn parent_of(&mut self, fd: u32, rel: &str, write: bool) -> Result<Resolved, Errno> {
        let (dirfd, guest, _) = self.dir_for(fd, rel, write)?;
        if rel.is_empty() {
            return Err(errno::NOENT);
        }
        let trimmed = rel.trim_end_matches('/');
        let trailing_slash = trimmed.len() != rel.len();
        if trimmed.is_empty() {
            // "/" (absolute): escapes the directory.
            return Err(self.deny(guest));
        }
        let (parent, last) = match trimmed.rfind('/') {
            Some(i) => (if i == 0 { "/" } else { &trimmed[..i] }, &trimmed[i + 1..]),
            None => (".", trimmed),
        };
        let flags = libc::O_PATH | libc::O_DIRECTORY;
        if last == "." || last == ".." {
            let d = self.open_beneath(dirfd, trimmed, flags, 0, &guest)?;
            return Ok(Resolved {
                dir: DirFd::Owned(d),
                last: ".".to_string(),
                trailing_slash,
            });
        }
        let dir = if parent == "." {
            DirFd::Borrowed(dirfd)
        } else {
            DirFd::Owned(self.open_beneath(dirfd, parent, flags, 0, &guest)?)
        };
        Ok(Resolved {
            dir,
            last: last.to_string(),
            trailing_slash,
        })
    }
}

/// What a write may do to a file under the disk quota.
#[derive(Debug, Clone, Copy)]
struct Room {
    /// The file's size before the call.
    size: u64,
    /// Bytes that may still be added to the read-write dirs.
    room: u64,
}

impl Room {
    /// The size the file may grow to.
    fn max_size(self) -> u64 {
        self.size.saturating_add(self.room)
    }
}

struct Resolved {
    dir: DirFd,
    last: String,
    trailing_slash: bool,
}

impl Resolved {
    /// The last component as the guest wrote it (with its trailing slash).
    fn as_given(&self) -> String {
        if self.trailing_slash {
            format!("{}/", self.last)
        } else {
            self.last.clone()
        }
    }
}

/// Checks and opens the host directory of a preopen; meant for once per container start, before
/// any `WasiCtx::new` (which redoes only the cheap part of it for every instance).
/// `host` resolves inside the process root (after pivot_root, the container's rootfs), so
/// symlinks in the image cannot point out of it; links through /proc (`/proc/self/fd/N`,
/// `/proc/self/root` ...) are refused, and so is a directory that is on, is or contains a mount of
/// /proc, /sys, /dev and the like (a preopen of "/" included). The error names `host` and why.
pub fn bind_preopen_dir(host: &Path) -> std::io::Result<OwnedFd> {
    let fd = sys::open_dir(host)?;
    sys::refuse_special_mounts(&fd, host)?;
    Ok(fd)
}

fn split_stdio(s: Stdio) -> (Mode, Vec<u8>) {
    match s {
        Stdio::Inherit => (Mode::Inherit, Vec::new()),
        Stdio::Null => (Mode::Null, Vec::new()),
        Stdio::Buffer(b) => (Mode::Buffer, b),
    }
}

/// The import object to register in a Store under "wasi_snapshot_preview1".
pub fn import_object(ctx: WasiCtx) -> WasmEdgeResult<ImportObject<WasiCtx>> {
    build(ctx).map_err(|(e, _)| e)
}

#[allow(clippy::result_large_err)]
fn build(ctx: WasiCtx) -> Result<ImportObject<WasiCtx>, (Box<WasmEdgeError>, WasiCtx)> {
    let mut builder = match ImportObjectBuilder::new(MODULE_NAME, ctx) {
        Ok(b) => b,
        Err(e) => return Err((e, WasiCtx::default())),
    };
    if let Err(e) = funcs::register(&mut builder) {
        let mut object = builder.build();
        let ctx = std::mem::take(object.get_host_data_mut());
        return Err((e, ctx));
    }
    Ok(builder.build())
}

/// True for the error WasmEdge reports when execution was stopped (by `proc_exit` or externally).
pub fn is_terminated(e: &WasmEdgeError) -> bool {
    matches!(
        e,
        WasmEdgeError::Core(CoreError::Common(CoreCommonError::Terminated))
    )
}

/// Instantiate `module` with our WASI and call `func` (usually "_start"); returns the call result
/// and the ctx afterwards. `Ok(())` = returned or called `proc_exit` (see `ctx.exit_code()`);
/// `Err` = trapped or failed to instantiate.
pub fn run(
    module: &Module,
    func: &str,
    ctx: WasiCtx,
    config: Option<&wasmedge_sdk::config::Config>,
) -> (Result<(), Box<WasmEdgeError>>, WasiCtx) {
    let mut object = match build(ctx) {
        Ok(o) => o,
        Err((e, ctx)) => return (Err(e), ctx),
    };
    let result = run_in(&mut object, None, module, func, config, None);
    let ctx = std::mem::take(object.get_host_data_mut());
    drop(object);
    (settle(result, &ctx), ctx)
}

/// Like [`run`], with outbound HTTP (`edge_http`) governed by `net`, and the guest's code
/// stopped after `timeout` (host calls honour the time limits set in `ctx` and `net`); hands
/// both back.
pub fn run_with_network(
    module: &Module,
    func: &str,
    ctx: WasiCtx,
    net: net::NetCtx,
    config: Option<&wasmedge_sdk::config::Config>,
    timeout: Option<std::time::Duration>,
) -> (Result<(), Box<WasmEdgeError>>, WasiCtx, net::NetCtx) {
    let mut object = match build(ctx) {
        Ok(o) => o,
        Err((e, ctx)) => return (Err(e), ctx, net),
    };
    let mut net_object = match net::import_object(net) {
        Ok(o) => o,
        Err(e) => {
            let ctx = std::mem::take(object.get_host_data_mut());
            return (Err(e), ctx, net::NetCtx::default());
        }
    };
    let result = run_in(
        &mut object,
        Some(&mut net_object),
        module,
        func,
        config,
        timeout,
    );
    let ctx = std::mem::take(object.get_host_data_mut());
    let net = std::mem::take(net_object.get_host_data_mut());
    (settle(result, &ctx), ctx, net)
}

/// Like [`run`], but with an import object made earlier by [`import_object`] and kept for reuse:
/// `ctx` replaces the object's ctx for this run and is handed back afterwards, so a worker can
/// build the import object once and pay only `WasiCtx::new` per request. One import object must
/// not be used by two runs at the same time (it is `!Sync`; keep one per thread).
pub fn run_reusing(
    object: &mut ImportObject<WasiCtx>,
    module: &Module,
    func: &str,
    ctx: WasiCtx,
    config: Option<&wasmedge_sdk::config::Config>,
) -> (Result<(), Box<WasmEdgeError>>, WasiCtx) {
    *object.get_host_data_mut() = ctx;
    let result = run_in(object, None, module, func, config, None);
    let ctx = std::mem::take(object.get_host_data_mut());
    (settle(result, &ctx), ctx)
}

/// `proc_exit` stops execution with "terminated": that is a normal end when an exit code was set.
fn settle(result: Result<(), Box<WasmEdgeError>>, ctx: &WasiCtx) -> Result<(), Box<WasmEdgeError>> {
    match result {
        Err(e) if is_terminated(&e) && ctx.exit_code.is_some() => Ok(()),
        other => other,
    }
}

fn run_in(
    object: &mut ImportObject<WasiCtx>,
    net: Option<&mut ImportObject<net::NetCtx>>,
    module: &Module,
    func: &str,
    config: Option<&wasmedge_sdk::config::Config>,
    timeout: Option<std::time::Duration>,
) -> Result<(), Box<WasmEdgeError>> {
    let mut instances: HashMap<String, &mut dyn SyncInst> = HashMap::with_capacity(2);
    instances.insert(MODULE_NAME.to_string(), &mut *object);
    if let Some(net) = net {
        instances.insert(net::MODULE_NAME.to_string(), net);
    }
    let mut store = Store::new(config, instances)?;
    let mut instance = store.register_active_module(module)?;
    let result = match instance.get_func_mut(func) {
        Ok(mut f) => match timeout {
            Some(timeout) => store
                .executor()
                .call_func_with_timeout(&mut f, [], timeout)
                .map(|_| ()),
            None => store.executor().call_func(&mut f, []).map(|_| ()),
        },
        Err(e) => Err(e),
    };
    // Why a run failed (a trap after a refused memory.grow, say) depends on the memory size.
    let pages = instance.get_memory_ref("memory").ok().map(|m| m.size());
    drop(instance);
    drop(store);
    object.get_host_data_mut().memory_pages = pages;
    result
}
