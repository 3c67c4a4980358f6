//! Thin wrappers over the Linux syscalls the WASI functions use.

use std::ffi::{CStr, CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use super::abi::{self, errno, filetype, fstflags, Errno};

/// `struct open_how` of openat2(2) (the libc one is `#[non_exhaustive]`).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Host errno of a failed call (not yet mapped to WASI).
pub type HostErr = i32;

/// File systems of kernel, process and device state rather than data, which a module never
/// reaches: statfs magic and type name as in /proc/self/mountinfo.
const SPECIAL_FS: [(u32, &str); 19] = [
    (0x9fa0, "proc"),
    (0x6265_6572, "sysfs"),
    (0x1cd1, "devpts"),
    (0x0027_e0eb, "cgroup"),
    (0x6367_7270, "cgroup2"),
    (0x6462_6720, "debugfs"),
    (0x7363_6673, "securityfs"),
    (0x7472_6163, "tracefs"),
    (0xcafe_4a11, "bpf"),
    (0x6265_6570, "configfs"),
    (0x6165_676c, "pstore"),
    (0xde5e_81e4, "efivarfs"),
    (0x9584_58f6, "hugetlbfs"),
    (0x1980_0202, "mqueue"),
    (0x6573_5543, "fusectl"),
    (0x4249_4e4d, "binfmt_misc"),
    (0xf97c_ff8c, "selinuxfs"),
    (0x6e73_6673, "nsfs"),
    (0x0187, "autofs"),
];

/// What a refused preopen is told.
const NEVER_SEEN: &str = "sandboxed modules never see /proc, /sys or /dev";

/// The `SPECIAL_FS` type of the file system `fd` is on, if any.
fn special_fs(fd: RawFd) -> Result<Option<&'static str>, HostErr> {
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: st is a valid out pointer.
    if unsafe { libc::fstatfs(fd, st.as_mut_ptr()) } < 0 {
        return Err(abi::last_host_errno());
    }
    // SAFETY: initialized by fstatfs (and zeroed before). The magics are 32-bit while the width
    // (and signedness) of f_type depends on the architecture.
    let magic = unsafe { st.assume_init() }.f_type as u32;
    Ok(SPECIAL_FS
        .iter()
        .find(|(m, _)| *m == magic)
        .map(|(_, name)| *name))
}

/// A device node, a FIFO or socket (a module gets no channel to other processes, and opening
/// or reading a FIFO could wait past any deadline), or anything on a `SPECIAL_FS` file system.
fn is_special(fd: RawFd) -> Result<bool, HostErr> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: st is a valid out pointer.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } < 0 {
        return Err(abi::last_host_errno());
    }
    // SAFETY: initialized by fstat (and zeroed before).
    let kind = unsafe { st.assume_init() }.st_mode & libc::S_IFMT;
    Ok(matches!(
        kind,
        libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO | libc::S_IFSOCK
    ) || special_fs(fd)?.is_some())
}

/// openat2(2), retried on EINTR and EAGAIN.
fn openat2(dirfd: RawFd, path: &CStr, how: &OpenHow) -> Result<OwnedFd, HostErr> {
    loop {
        // SAFETY: valid C string and open_how of the size passed.
        let r = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dirfd,
                path.as_ptr(),
                how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if r >= 0 {
            // SAFETY: a fresh descriptor owned by nobody else.
            return Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) });
        }
        let e = abi::last_host_errno();
        if e != libc::EINTR && e != libc::EAGAIN {
            return Err(e);
        }
    }
}

/// Why a confined open failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// The call failed with this host errno (`EXDEV`: the path tried to leave the directory).
    Host(HostErr),
    /// It reached a device node or something on /proc, /sys and the like (`SPECIAL_FS`).
    Refused,
}

/// openat2(dirfd, path, flags, mode) confined beneath `dirfd`, never through /proc magic links.
/// An attempt to leave `dirfd` (`..`, absolute path or symlink) fails with host `EXDEV`. What it
/// reaches is checked too, as a mount inside the directory or a device node shipped in the image
/// is no escape to openat2.
pub fn open_confined(
    dirfd: RawFd,
    path: &str,
    flags: i32,
    mode: u32,
) -> Result<OwnedFd, OpenError> {
    let c = CString::new(path).map_err(|_| OpenError::Host(libc::EINVAL))?;
    let creating = flags & libc::O_CREAT != 0 || flags & libc::O_TMPFILE == libc::O_TMPFILE;
    // openat2 refuses O_PATH with other flags (an O_PATH descriptor never becomes a terminal).
    // O_NONBLOCK: opening a FIFO must not wait for a peer (it is refused right after).
    let extra = if flags & libc::O_PATH == 0 {
        libc::O_NOCTTY | libc::O_NONBLOCK
    } else {
        0
    };
    let how = OpenHow {
        flags: (flags | extra | libc::O_CLOEXEC) as u32 as u64,
        mode: if creating { mode as u64 } else { 0 },
        resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS,
    };
    let fd = openat2(dirfd, &c, &how).map_err(OpenError::Host)?;
    if is_special(fd.as_raw_fd()).map_err(OpenError::Host)? {
        return Err(OpenError::Refused);
    }
    if extra & libc::O_NONBLOCK != 0 && flags & libc::O_NONBLOCK == 0 {
        // SAFETY: plain fcntl on a descriptor we own.
        let fl = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
        if fl < 0
            || unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK) } < 0
        {
            return Err(OpenError::Host(abi::last_host_errno()));
        }
    }
    Ok(fd)
}

/// [`open_confined`] with a refusal as host `EACCES`.
pub fn open_beneath(dirfd: RawFd, path: &str, flags: i32, mode: u32) -> Result<OwnedFd, HostErr> {
    open_confined(dirfd, path, flags, mode).map_err(|e| match e {
        OpenError::Host(e) => e,
        OpenError::Refused => libc::EACCES,
    })
}

/// Opens the host directory of a preopen (`O_PATH`), cheaply enough for every instance.
/// `path` resolves inside the process root (the container's rootfs): symlinks in the image cannot
/// leave it, /proc magic links (`/proc/self/fd/N`, `/proc/self/root` ...) are refused, and so is a
/// directory on a `SPECIAL_FS` file system. Mounts beneath the directory are not looked at (see
/// [`refuse_special_mounts`]).
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let shown = path.display();
    let invalid = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("allowed dir {shown} {why}"),
        )
    };
    let rel = match path.as_os_str().as_bytes().strip_prefix(b"/") {
        Some(b"") => &b"."[..],
        Some(rel) => rel,
        None => return Err(invalid("is not an absolute path")),
    };
    let rel = CString::new(rel).map_err(|_| invalid("contains NUL"))?;
    let os_err = |e: HostErr| {
        let os = io::Error::from_raw_os_error(e);
        let hint = if e == libc::ELOOP {
            "; links through /proc such as /proc/self/fd/N are refused"
        } else {
            ""
        };
        io::Error::new(os.kind(), format!("allowed dir {shown}: {os}{hint}"))
    };
    let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
    // SAFETY: valid C string.
    let root = unsafe { libc::open(c"/".as_ptr(), flags) };
    if root < 0 {
        return Err(os_err(abi::last_host_errno()));
    }
    // SAFETY: fresh descriptor.
    let root = unsafe { OwnedFd::from_raw_fd(root) };
    let how = OpenHow {
        flags: flags as u32 as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    let fd = openat2(root.as_raw_fd(), &rel, &how).map_err(os_err)?;
    if let Some(fs) = special_fs(fd.as_raw_fd()).map_err(os_err)? {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("allowed dir {shown} resolves into a file system of type {fs}; {NEVER_SEEN}"),
        ));
    }
    Ok(fd)
}

/// Refuses the preopen directory `dir` (opened from `path` by [`open_dir`]) when it is, or
/// contains, a mount point of a `SPECIAL_FS` file system or of /dev: a preopen of "/" would
/// reach /proc beneath it. Reads /proc/self/mountinfo, so it is meant for once per container
/// start; without a readable mountinfo it checks nothing.
pub fn refuse_special_mounts(dir: &OwnedFd, path: &Path) -> io::Result<()> {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Ok(());
    };
    let shown = path.display();
    let resolved =
        std::fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd())).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("allowed dir {shown}: cannot tell where it resolves: {e}"),
            )
        })?;
    for line in mountinfo.lines() {
        // "36 35 98:0 /root /mount/point rw,noatime [optional fields] - fstype source options"
        let mut fields = line.split(' ');
        let (Some(point), Some(fs)) = (fields.nth(4), fields.skip_while(|f| *f != "-").nth(1))
        else {
            continue;
        };
        let point = unescape_mount_point(point);
        let special = point == Path::new("/dev") || SPECIAL_FS.iter().any(|(_, name)| *name == fs);
        if !special || !point.starts_with(&resolved) {
            continue;
        }
        let what = if point == resolved {
            format!("resolves to {}, a {fs} mount", point.display())
        } else {
            format!(
                "resolves to {}, which contains the {fs} mount {}",
                resolved.display(),
                point.display()
            )
        };
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("allowed dir {shown} {what}; {NEVER_SEEN}"),
        ));
    }
    Ok(())
}

/// A mount point as written in /proc/self/mountinfo, where space, tab, newline and backslash are
/// octal escapes (`\040`).
fn unescape_mount_point(field: &str) -> PathBuf {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0')) as u8);
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

pub fn cstr(s: &str) -> Result<CString, Errno> {
    CString::new(s).map_err(|_| errno::INVAL)
}

/// Turns a `-1`-style return into the WASI errno of the current errno.
pub fn cvt(r: libc::c_int) -> Result<libc::c_int, Errno> {
    if r < 0 {
        Err(abi::last_errno())
    } else {
        Ok(r)
    }
}

pub fn cvt_size(r: isize) -> Result<usize, Errno> {
    if r < 0 {
        Err(abi::last_errno())
    } else {
        Ok(r as usize)
    }
}

pub fn fstat(fd: RawFd) -> Result<libc::stat, Errno> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: st is a valid out pointer.
    cvt(unsafe { libc::fstat(fd, st.as_mut_ptr()) })?;
    // SAFETY: initialized by fstat (and zeroed before).
    Ok(unsafe { st.assume_init() })
}

pub fn fstatat(dirfd: RawFd, name: &str, flags: i32) -> Result<libc::stat, Errno> {
    let c = cstr(name)?;
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: valid pointers.
    cvt(unsafe { libc::fstatat(dirfd, c.as_ptr(), st.as_mut_ptr(), flags) })?;
    // SAFETY: initialized.
    Ok(unsafe { st.assume_init() })
}

pub fn filetype_of_mode(mode: libc::mode_t) -> u8 {
    match mode & libc::S_IFMT {
        libc::S_IFREG => filetype::REGULAR_FILE,
        libc::S_IFDIR => filetype::DIRECTORY,
        libc::S_IFLNK => filetype::SYMBOLIC_LINK,
        libc::S_IFCHR => filetype::CHARACTER_DEVICE,
        libc::S_IFBLK => filetype::BLOCK_DEVICE,
        libc::S_IFSOCK => filetype::SOCKET_STREAM,
        _ => filetype::UNKNOWN,
    }
}

pub fn filetype_of_dtype(d: u8) -> Option<u8> {
    Some(match d {
        libc::DT_REG => filetype::REGULAR_FILE,
        libc::DT_DIR => filetype::DIRECTORY,
        libc::DT_LNK => filetype::SYMBOLIC_LINK,
        libc::DT_CHR => filetype::CHARACTER_DEVICE,
        libc::DT_BLK => filetype::BLOCK_DEVICE,
        libc::DT_SOCK => filetype::SOCKET_STREAM,
        libc::DT_FIFO => filetype::UNKNOWN,
        _ => return None,
    })
}

fn ts_ns(sec: i64, nsec: i64) -> u64 {
    (sec as i128 * 1_000_000_000 + nsec as i128).clamp(0, u64::MAX as i128) as u64
}

/// A preview1 `filestat` (64 bytes).
pub fn filestat_bytes(st: &libc::stat) -> [u8; 64] {
    filestat_raw(
        st.st_dev,
        st.st_ino,
        filetype_of_mode(st.st_mode),
        st.st_nlink,
        st.st_size.max(0) as u64,
        ts_ns(st.st_atime, st.st_atime_nsec),
        ts_ns(st.st_mtime, st.st_mtime_nsec),
        ts_ns(st.st_ctime, st.st_ctime_nsec),
    )
}

#[allow(clippy::too_many_arguments)]
pub fn filestat_raw(
    dev: u64,
    ino: u64,
    ft: u8,
    nlink: u64,
    size: u64,
    atim: u64,
    mtim: u64,
    ctim: u64,
) -> [u8; 64] {
    let mut b = [0u8; 64];
    b[0..8].copy_from_slice(&dev.to_le_bytes());
    b[8..16].copy_from_slice(&ino.to_le_bytes());
    b[16] = ft;
    b[24..32].copy_from_slice(&nlink.to_le_bytes());
    b[32..40].copy_from_slice(&size.to_le_bytes());
    b[40..48].copy_from_slice(&atim.to_le_bytes());
    b[48..56].copy_from_slice(&mtim.to_le_bytes());
    b[56..64].copy_from_slice(&ctim.to_le_bytes());
    b
}

/// The two timespecs of utimensat(2) for preview1 `fstflags`.
pub fn utime_specs(atim: u64, mtim: u64, fst: u16) -> Result<[libc::timespec; 2], Errno> {
    fn one(ns: u64, set: bool, now: bool) -> Result<libc::timespec, Errno> {
        match (set, now) {
            (true, true) => Err(errno::INVAL),
            (true, false) => Ok(libc::timespec {
                tv_sec: (ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (ns % 1_000_000_000) as libc::c_long,
            }),
            (false, true) => Ok(libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_NOW,
            }),
            (false, false) => Ok(libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_OMIT,
            }),
        }
    }
    if fst & !(fstflags::ATIM | fstflags::ATIM_NOW | fstflags::MTIM | fstflags::MTIM_NOW) != 0 {
        return Err(errno::INVAL);
    }
    Ok([
        one(
            atim,
            fst & fstflags::ATIM != 0,
            fst & fstflags::ATIM_NOW != 0,
        )?,
        one(
            mtim,
            fst & fstflags::MTIM != 0,
            fst & fstflags::MTIM_NOW != 0,
        )?,
    ])
}

/// `/proc/self/fd/N`, to reach the object of an `O_PATH` descriptor with path-based calls.
pub fn proc_fd_path(fd: RawFd) -> CString {
    CString::new(format!("/proc/self/fd/{fd}")).expect("no NUL")
}

/// Sets the timestamps of the object `fd` refers to (works for O_PATH descriptors too).
pub fn set_times_fd(fd: RawFd, ts: &[libc::timespec; 2]) -> Result<(), Errno> {
    // SAFETY: valid timespec array.
    if unsafe { libc::futimens(fd, ts.as_ptr()) } == 0 {
        return Ok(());
    }
    if abi::last_host_errno() != libc::EBADF {
        return Err(abi::last_errno());
    }
    let p = proc_fd_path(fd);
    // SAFETY: valid pointers.
    cvt(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), ts.as_ptr(), 0) }).map(|_| ())
}

pub fn clock_id(id: u32) -> Result<libc::clockid_t, Errno> {
    Ok(match id {
        abi::clockid::REALTIME => libc::CLOCK_REALTIME,
        abi::clockid::MONOTONIC => libc::CLOCK_MONOTONIC,
        abi::clockid::PROCESS_CPUTIME_ID => libc::CLOCK_PROCESS_CPUTIME_ID,
        abi::clockid::THREAD_CPUTIME_ID => libc::CLOCK_THREAD_CPUTIME_ID,
        _ => return Err(errno::INVAL),
    })
}

pub fn clock_now(clock: libc::clockid_t) -> Result<u64, Errno> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer.
    cvt(unsafe { libc::clock_gettime(clock, &mut ts) })?;
    Ok(ts_ns(ts.tv_sec, ts.tv_nsec))
}

pub fn clock_res(clock: libc::clockid_t) -> Result<u64, Errno> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer.
    cvt(unsafe { libc::clock_getres(clock, &mut ts) })?;
    Ok(ts_ns(ts.tv_sec, ts.tv_nsec).max(1))
}

pub fn monotonic_now() -> u64 {
    clock_now(libc::CLOCK_MONOTONIC).unwrap_or(0)
}

/// A relative timeout of `ns` nanoseconds for ppoll.
pub fn timespec_of(ns: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    }
}

/// Fills `len` bytes at `p` from the kernel CSPRNG.
pub fn fill_random(p: *mut u8, len: usize) -> Result<(), Errno> {
    let mut done = 0;
    while done < len {
        // SAFETY: the caller guarantees [p, p+len) is writable.
        let r = unsafe { libc::getrandom(p.add(done) as *mut libc::c_void, len - done, 0) };
        if r < 0 {
            if abi::last_host_errno() == libc::EINTR {
                continue;
            }
            return Err(abi::last_errno());
        }
        done += r as usize;
    }
    Ok(())
}

/// A directory descriptor that is either borrowed from the fd table or owned (an intermediate
/// directory opened for one call).
pub enum DirFd {
    Borrowed(RawFd),
    Owned(OwnedFd),
}

impl DirFd {
    pub fn raw(&self) -> RawFd {
        match self {
            DirFd::Borrowed(fd) => *fd,
            DirFd::Owned(fd) => fd.as_raw_fd(),
        }
    }
}
