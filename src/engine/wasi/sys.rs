//! Thin wrappers over the Linux syscalls the WASI functions use.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

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

/// openat2(dirfd, path, flags, mode) confined beneath `dirfd`, never through /proc magic links.
/// An attempt to leave `dirfd` (`..`, absolute path or symlink) fails with host `EXDEV`.
pub fn open_beneath(dirfd: RawFd, path: &str, flags: i32, mode: u32) -> Result<OwnedFd, HostErr> {
    let c = CString::new(path).map_err(|_| libc::EINVAL)?;
    let creating = flags & libc::O_CREAT != 0 || flags & libc::O_TMPFILE == libc::O_TMPFILE;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u32 as u64,
        mode: if creating { mode as u64 } else { 0 },
        resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS,
    };
    loop {
        // SAFETY: valid C string and open_how of the size passed.
        let r = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dirfd,
                c.as_ptr(),
                &how as *const OpenHow,
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

/// Opens a host directory for a preopen.
pub fn open_dir(path: &std::path::Path) -> std::io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: valid C string.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
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
pub fn filestat_raw(dev: u64, ino: u64, ft: u8, nlink: u64, size: u64, atim: u64, mtim: u64, ctim: u64) -> [u8; 64] {
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
            (false, true) => Ok(libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_NOW }),
            (false, false) => Ok(libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT }),
        }
    }
    if fst & !(fstflags::ATIM | fstflags::ATIM_NOW | fstflags::MTIM | fstflags::MTIM_NOW) != 0 {
        return Err(errno::INVAL);
    }
    Ok([
        one(atim, fst & fstflags::ATIM != 0, fst & fstflags::ATIM_NOW != 0)?,
        one(mtim, fst & fstflags::MTIM != 0, fst & fstflags::MTIM_NOW != 0)?,
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
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid out pointer.
    cvt(unsafe { libc::clock_gettime(clock, &mut ts) })?;
    Ok(ts_ns(ts.tv_sec, ts.tv_nsec))
}

pub fn clock_res(clock: libc::clockid_t) -> Result<u64, Errno> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid out pointer.
    cvt(unsafe { libc::clock_getres(clock, &mut ts) })?;
    Ok(ts_ns(ts.tv_sec, ts.tv_nsec).max(1))
}

pub fn monotonic_now() -> u64 {
    clock_now(libc::CLOCK_MONOTONIC).unwrap_or(0)
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
