//! The functions of `wasi_snapshot_preview1`.
//!
//! Each `fn name(ctx, mem, args...) -> Result<(), Errno>` below is wrapped by `wasi_functions!`
//! into a WasmEdge host function with the preview1 signature (all take i32/i64 and return the
//! errno as i32), except `proc_exit`, which stops execution.

// The preview1 signatures dictate the argument lists.
#![allow(clippy::too_many_arguments)]

use std::os::fd::{AsRawFd, RawFd};

use wasmedge_sdk::{CallingFrame, ImportObjectBuilder, Instance, WasmEdgeResult, WasmValue};
use wasmedge_types::error::{CoreCommonError, CoreError};

use super::abi::{self, errno, eventtype, fdflags, filetype, oflags, rights, whence, Errno};
use super::mem::Mem;
use super::{quota, sys};
use super::{Entry, Kind, Mode, WasiCtx};

type R = Result<(), Errno>;

/// Converts a host function argument to the unsigned value the implementations take.
trait Param {
    type Out;
    fn get(v: Option<&WasmValue>) -> Self::Out;
}
impl Param for i32 {
    type Out = u32;
    fn get(v: Option<&WasmValue>) -> u32 {
        v.map(|v| v.to_i32() as u32).unwrap_or(0)
    }
}
impl Param for i64 {
    type Out = u64;
    fn get(v: Option<&WasmValue>) -> u64 {
        v.map(|v| v.to_i64() as u64).unwrap_or(0)
    }
}

/// `CSW_WASI_TRACE` set in the process's environment: every call and its errno on stderr, for
/// debugging conformance. In a container that is the container's own environment and stderr:
/// a pod may trace its own module, nothing more.
fn tracing_calls() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("CSW_WASI_TRACE").is_some())
}

macro_rules! wasi_functions {
    ($( $name:ident ( $( $arg:ident : $ty:ident ),* ); )*) => {
        mod wrappers {
            use super::*;
            $(
                pub fn $name(
                    ctx: &mut WasiCtx,
                    _inst: &mut Instance,
                    frame: &mut CallingFrame,
                    args: Vec<WasmValue>,
                ) -> Result<Vec<WasmValue>, CoreError> {
                    let mut _it = args.iter();
                    $( let $arg = <$ty as Param>::get(_it.next()); )*
                    let mut mem = Mem::of(frame);
                    let e = match super::$name(ctx, &mut mem $(, $arg)*) {
                        Ok(()) => errno::SUCCESS,
                        Err(e) => e,
                    };
                    if tracing_calls() {
                        let shown: Vec<String> = vec![$( format!("{:?}", $arg) ),*];
                        eprintln!("wasi {}({}) = {e}", stringify!($name), shown.join(", "));
                    }
                    // The time limit holds in host calls too: a call that waited (or ran) up
                    // to the deadline ends here, as the timer ends the guest's own code.
                    if ctx.deadline_passed() {
                        return Err(CoreError::Common(CoreCommonError::Terminated));
                    }
                    Ok(vec![WasmValue::from_i32(e as i32)])
                }
            )*
        }

        /// Adds every function to the import object under construction.
        #[allow(unused_parens)]
        pub(super) fn register(b: &mut ImportObjectBuilder<WasiCtx>) -> WasmEdgeResult<()> {
            $( b.with_func::<( $( $ty ),* ), i32>(stringify!($name), wrappers::$name)?; )*
            b.with_func::<i32, ()>("proc_exit", proc_exit)?;
            Ok(())
        }
    };
}

wasi_functions! {
    args_get(argv: i32, argv_buf: i32);
    args_sizes_get(argc: i32, argv_buf_size: i32);
    environ_get(environ: i32, environ_buf: i32);
    environ_sizes_get(count: i32, buf_size: i32);
    clock_res_get(id: i32, out: i32);
    clock_time_get(id: i32, precision: i64, out: i32);
    fd_advise(fd: i32, offset: i64, len: i64, advice: i32);
    fd_allocate(fd: i32, offset: i64, len: i64);
    fd_close(fd: i32);
    fd_datasync(fd: i32);
    fd_fdstat_get(fd: i32, out: i32);
    fd_fdstat_set_flags(fd: i32, flags: i32);
    fd_fdstat_set_rights(fd: i32, base: i64, inheriting: i64);
    fd_filestat_get(fd: i32, out: i32);
    fd_filestat_set_size(fd: i32, size: i64);
    fd_filestat_set_times(fd: i32, atim: i64, mtim: i64, fst: i32);
    fd_pread(fd: i32, iovs: i32, iovs_len: i32, offset: i64, nread: i32);
    fd_prestat_get(fd: i32, out: i32);
    fd_prestat_dir_name(fd: i32, path: i32, path_len: i32);
    fd_pwrite(fd: i32, iovs: i32, iovs_len: i32, offset: i64, nwritten: i32);
    fd_read(fd: i32, iovs: i32, iovs_len: i32, nread: i32);
    fd_readdir(fd: i32, buf: i32, buf_len: i32, cookie: i64, bufused: i32);
    fd_renumber(fd: i32, to: i32);
    fd_seek(fd: i32, offset: i64, whence: i32, out: i32);
    fd_sync(fd: i32);
    fd_tell(fd: i32, out: i32);
    fd_write(fd: i32, iovs: i32, iovs_len: i32, nwritten: i32);
    path_create_directory(fd: i32, path: i32, path_len: i32);
    path_filestat_get(fd: i32, flags: i32, path: i32, path_len: i32, out: i32);
    path_filestat_set_times(fd: i32, flags: i32, path: i32, path_len: i32, atim: i64, mtim: i64, fst: i32);
    path_link(old_fd: i32, old_flags: i32, old_path: i32, old_len: i32, new_fd: i32, new_path: i32, new_len: i32);
    path_open(fd: i32, dirflags: i32, path: i32, path_len: i32, oflags: i32, base: i64, inheriting: i64, fdflags: i32, out: i32);
    path_readlink(fd: i32, path: i32, path_len: i32, buf: i32, buf_len: i32, bufused: i32);
    path_remove_directory(fd: i32, path: i32, path_len: i32);
    path_rename(fd: i32, old_path: i32, old_len: i32, new_fd: i32, new_path: i32, new_len: i32);
    path_symlink(old_path: i32, old_len: i32, fd: i32, new_path: i32, new_len: i32);
    path_unlink_file(fd: i32, path: i32, path_len: i32);
    poll_oneoff(subs: i32, events: i32, nsubs: i32, nevents: i32);
    proc_raise(sig: i32);
    sched_yield();
    random_get(buf: i32, buf_len: i32);
    sock_accept(fd: i32, flags: i32, out: i32);
    sock_recv(fd: i32, ri_data: i32, ri_len: i32, ri_flags: i32, ro_datalen: i32, ro_flags: i32);
    sock_send(fd: i32, si_data: i32, si_len: i32, si_flags: i32, so_datalen: i32);
    sock_shutdown(fd: i32, how: i32);
}

/// proc_exit(code): records the code and stops execution.
pub(super) fn proc_exit(
    ctx: &mut WasiCtx,
    _inst: &mut Instance,
    _frame: &mut CallingFrame,
    args: Vec<WasmValue>,
) -> Result<Vec<WasmValue>, CoreError> {
    ctx.exit_code = Some(<i32 as Param>::get(args.first()));
    Err(CoreError::Common(CoreCommonError::Terminated))
}

// ---------------------------------------------------------------- args, environ

/// Writes a NUL-terminated string list (argv / environ) into guest memory.
pub(super) fn write_strings(mem: &mut Mem, list: &[String], ptrs: u32, buf: u32) -> R {
    let mut cursor = buf;
    for (i, s) in list.iter().enumerate() {
        let slot = ptrs.checked_add(4 * i as u32).ok_or(errno::FAULT)?;
        mem.write_u32(slot, cursor)?;
        let len = u32::try_from(s.len()).map_err(|_| errno::OVERFLOW)?;
        mem.write_bytes(cursor, s.as_bytes())?;
        let end = cursor.checked_add(len).ok_or(errno::FAULT)?;
        mem.write_u8(end, 0)?;
        cursor = end.checked_add(1).ok_or(errno::FAULT)?;
    }
    Ok(())
}

pub(super) fn write_sizes(mem: &mut Mem, list: &[String], count: u32, size: u32) -> R {
    let total: usize = list.iter().map(|s| s.len() + 1).sum();
    mem.write_u32(
        count,
        u32::try_from(list.len()).map_err(|_| errno::OVERFLOW)?,
    )?;
    mem.write_u32(size, u32::try_from(total).map_err(|_| errno::OVERFLOW)?)
}

pub(super) fn args_get(ctx: &mut WasiCtx, mem: &mut Mem, argv: u32, argv_buf: u32) -> R {
    write_strings(mem, &ctx.args, argv, argv_buf)
}

pub(super) fn args_sizes_get(ctx: &mut WasiCtx, mem: &mut Mem, argc: u32, size: u32) -> R {
    write_sizes(mem, &ctx.args, argc, size)
}

pub(super) fn environ_get(ctx: &mut WasiCtx, mem: &mut Mem, environ: u32, buf: u32) -> R {
    write_strings(mem, &ctx.envs, environ, buf)
}

pub(super) fn environ_sizes_get(ctx: &mut WasiCtx, mem: &mut Mem, count: u32, size: u32) -> R {
    write_sizes(mem, &ctx.envs, count, size)
}

// ---------------------------------------------------------------- clocks, random, sched

pub(super) fn clock_res_get(_ctx: &mut WasiCtx, mem: &mut Mem, id: u32, out: u32) -> R {
    let res = sys::clock_res(sys::clock_id(id)?)?;
    mem.write_u64(out, res)
}

pub(super) fn clock_time_get(
    _ctx: &mut WasiCtx,
    mem: &mut Mem,
    id: u32,
    _precision: u64,
    out: u32,
) -> R {
    let now = sys::clock_now(sys::clock_id(id)?)?;
    mem.write_u64(out, now)
}

pub(super) fn random_get(_ctx: &mut WasiCtx, mem: &mut Mem, buf: u32, len: u32) -> R {
    let p = mem.ptr(buf, len)?;
    sys::fill_random(p, len as usize)
}

pub(super) fn sched_yield(_ctx: &mut WasiCtx, _mem: &mut Mem) -> R {
    // SAFETY: no arguments.
    unsafe { libc::sched_yield() };
    Ok(())
}

pub(super) fn proc_raise(_ctx: &mut WasiCtx, _mem: &mut Mem, _sig: u32) -> R {
    Err(errno::NOSYS)
}

// ---------------------------------------------------------------- descriptors

/// Host descriptor of a regular-file entry; stdio -> ESPIPE, directories -> EISDIR.
pub(super) fn file_fd(e: &Entry) -> Result<RawFd, Errno> {
    match &e.kind {
        Kind::File(f) => Ok(f.as_raw_fd()),
        Kind::Dir(_) | Kind::Root => Err(errno::ISDIR),
        Kind::Stdin | Kind::Stdout | Kind::Stderr => Err(errno::SPIPE),
    }
}

/// Host descriptor of a file or directory entry.
pub(super) fn object_fd(e: &Entry) -> Result<RawFd, Errno> {
    match &e.kind {
        Kind::File(f) | Kind::Dir(f) => Ok(f.as_raw_fd()),
        _ => Err(errno::BADF),
    }
}

/// Fails (ENOTCAPABLE + violation) when `fd` lies beneath a read-only preopen.
pub(super) fn check_writable(ctx: &mut WasiCtx, fd: u32) -> R {
    let e = ctx.entry(fd)?;
    if e.readonly {
        let guest = e.guest.clone();
        return Err(ctx.deny_write(guest));
    }
    Ok(())
}

pub(super) fn fd_advise(
    ctx: &mut WasiCtx,
    _mem: &mut Mem,
    fd: u32,
    offset: u64,
    len: u64,
    advice: u32,
) -> R {
    ctx.require(fd, rights::FD_ADVISE)?;
    let f = file_fd(ctx.entry(fd)?)?;
    let advice = match advice {
        0 => libc::POSIX_FADV_NORMAL,
        1 => libc::POSIX_FADV_SEQUENTIAL,
        2 => libc::POSIX_FADV_RANDOM,
        3 => libc::POSIX_FADV_WILLNEED,
        4 => libc::POSIX_FADV_DONTNEED,
        5 => libc::POSIX_FADV_NOREUSE,
        _ => return Err(errno::INVAL),
    };
    // SAFETY: plain syscall.
    match unsafe { libc::posix_fadvise(f, offset as i64, len as i64, advice) } {
        0 => Ok(()),
        e => Err(abi::from_host(e)),
    }
}

pub(super) fn fd_allocate(ctx: &mut WasiCtx, _mem: &mut Mem, fd: u32, offset: u64, len: u64) -> R {
    ctx.require(fd, rights::FD_ALLOCATE)?;
    check_writable(ctx, fd)?;
    file_fd(ctx.entry(fd)?)?;
    if offset > i64::MAX as u64 || len > i64::MAX as u64 {
        return Err(errno::INVAL);
    }
    ctx.resize_file(fd, |f, room| {
        if room.is_some_and(|r| offset.saturating_add(len) > r.max_size()) {
            return Err(errno::DQUOT);
        }
        // SAFETY: plain syscall.
        match unsafe { libc::posix_fallocate(f, offset as i64, len as i64) } {
            0 => Ok(()),
            e => Err(abi::from_host(e)),
        }
    })
}

pub(super) fn fd_close(ctx: &mut WasiCtx, _mem: &mut Mem, fd: u32) -> R {
    ctx.entry(fd)?;
    ctx.fds[fd as usize] = None;
    Ok(())
}

pub(super) fn sync(ctx: &mut WasiCtx, fd: u32, data_only: bool) -> R {
    let e = ctx.entry(fd)?;
    let f = match &e.kind {
        Kind::File(f) | Kind::Dir(f) => f.as_raw_fd(),
        _ => return Ok(()),
    };
    let call = |f: RawFd| {
        // SAFETY: plain syscalls.
        sys::cvt(unsafe {
            if data_only {
                libc::fdatasync(f)
            } else {
                libc::fsync(f)
            }
        })
        .map(|_| ())
    };
    match call(f) {
        Err(errno::BADF) if matches!(e.kind, Kind::Dir(_)) => {
            // O_PATH directory: sync through a readable descriptor of it.
            let d = sys::open_beneath(f, ".", libc::O_RDONLY | libc::O_DIRECTORY, 0)
                .map_err(abi::from_host)?;
            call(d.as_raw_fd())
        }
        r => r,
    }
}

pub(super) fn fd_datasync(ctx: &mut WasiCtx, _mem: &mut Mem, fd: u32) -> R {
    ctx.require(fd, rights::FD_DATASYNC)?;
    sync(ctx, fd, true)
}

pub(super) fn fd_sync(ctx: &mut WasiCtx, _mem: &mut Mem, fd: u32) -> R {
    ctx.require(fd, rights::FD_SYNC)?;
    sync(ctx, fd, false)
}

/// Filetype and the SEEK/TELL rights hint (absent means "tty" to wasi-libc) of a stdio stream.
pub(super) fn stdio_filetype(mode: Mode, host_fd: RawFd) -> (u8, u64) {
    let not_tty = rights::FD_SEEK | rights::FD_TELL;
    match mode {
        Mode::Buffer => (filetype::UNKNOWN, not_tty),
        Mode::Null => (filetype::CHARACTER_DEVICE, not_tty),
        Mode::Inherit => {
            let ft = sys::fstat(host_fd)
                .map(|st| sys::filetype_of_mode(st.st_mode))
                .unwrap_or(filetype::UNKNOWN);
            // SAFETY: plain call.
            let tty = unsafe { libc::isatty(host_fd) } == 1;
            (ft, if tty { 0 } else { not_tty })
        }
    }
}

pub(super) fn stdio_mode(ctx: &WasiCtx, kind: &Kind) -> Option<(Mode, RawFd)> {
    match kind {
        Kind::Stdin => Some((ctx.stdin_mode, 0)),
        Kind::Stdout => Some((ctx.stdout_mode, 1)),
        Kind::Stderr => Some((ctx.stderr_mode, 2)),
        _ => None,
    }
}

pub(super) fn host_fdflags(f: RawFd) -> u16 {
    // SAFETY: plain call.
    let fl = unsafe { libc::fcntl(f, libc::F_GETFL) };
    if fl < 0 {
        return 0;
    }
    let mut out = 0;
    if fl & libc::O_APPEND != 0 {
        out |= fdflags::APPEND;
    }
    if fl & libc::O_NONBLOCK != 0 {
        out |= fdflags::NONBLOCK;
    }
    if fl & libc::O_SYNC == libc::O_SYNC {
        out |= fdflags::SYNC | fdflags::RSYNC;
    } else if fl & libc::O_DSYNC != 0 {
        out |= fdflags::DSYNC;
    }
    out
}

pub(super) fn fd_fdstat_get(ctx: &mut WasiCtx, mem: &mut Mem, fd: u32, out: u32) -> R {
    mem.check(out, abi::FDSTAT_SIZE)?;
    let e = ctx.entry(fd)?;
    let (ft, flags, base) = match &e.kind {
        Kind::File(f) => {
            let st = sys::fstat(f.as_raw_fd())?;
            (
                sys::filetype_of_mode(st.st_mode),
                host_fdflags(f.as_raw_fd()),
                e.base,
            )
        }
        Kind::Dir(_) | Kind::Root => (filetype::DIRECTORY, e.flags, e.base),
        k => {
            let (mode, host) = stdio_mode(ctx, k).unwrap_or((Mode::Null, 0));
            let (ft, extra) = stdio_filetype(mode, host);
            (ft, e.flags, e.base | extra)
        }
    };
    let mut b = [0u8; 24];
    b[0] = ft;
    b[2..4].copy_from_slice(&flags.to_le_bytes());
    b[8..16].copy_from_slice(&base.to_le_bytes());
    b[16..24].copy_from_slice(&e.inheriting.to_le_bytes());
    mem.write_bytes(out, &b)
}

pub(super) fn fd_fdstat_set_flags(ctx: &mut WasiCtx, _mem: &mut Mem, fd: u32, flags: u32) -> R {
    ctx.require(fd, rights::FD_FDSTAT_SET_FLAGS)?;
    let flags = u16::try_from(flags).map_err(|_| errno::INVAL)?;
    if flags & fdflags::APPEND != 0 {
        check_writable(ctx, fd)?;
    }
    let e = ctx.entry_mut(fd)?;
    match &e.kind {
        Kind::File(f) => {
            let f = f.as_raw_fd();
            let sync_bits = fdflags::DSYNC | fdflags::RSYNC | fdflags::SYNC;
            if flags & sync_bits != host_fdflags(f) & sync_bits {
                return Err(errno::NOTSUP);
            }
            // SAFETY: plain fcntl calls.
            let cur = sys::cvt(unsafe { libc::fcntl(f, libc::F_GETFL) })?;
            let mut new = cur & !(libc::O_APPEND | libc::O_NONBLOCK);
            if flags & fdflags::APPEND != 0 {
                new |= libc::O_APPEND;
            }
            if flags & fdflags::NONBLOCK != 0 {
                new |= libc::O_NONBLOCK;
            }
            // SAFETY: plain fcntl call.
            sys::cvt(unsafe { libc::fcntl(f, libc::F_SETFL, new) })?;
        }
        // Never change the flags of the shim's own stdio; just remember them.
        _ => e.flags = flags,
    }
    Ok(())
}

pub(super) fn fd_fdstat_set_rights(
    ctx: &mut WasiCtx,
    _mem: &mut Mem,
    fd: u32,
    base: u64,
    inheriting: u64,
) -> R {
    let e = ctx.entry_mut(fd)?;
    if base & !e.base != 0 || inheriting & !e.inheriting != 0 {
        return Err(errno::NOTCAPABLE);
    }
    e.base = base;
    e.inheriting = inheriting;
    Ok(())
}

pub(super) fn fd_filestat_get(ctx: &mut WasiCtx, mem: &mut Mem, fd: u32, out: u32) -> R {
    ctx.require(fd, rights::FD_FILESTAT_GET)?;
    mem.check(out, abi::FILESTAT_SIZE)?;
    let e = ctx.entry(fd)?;
    let b = match &e.kind {
        Kind::File(f) | Kind::Dir(f) => sys::filestat_bytes(&sys::fstat(f.as_raw_fd())?),
        Kind::Root => sys::filestat_raw(0, 0, filetype::DIRECTORY, 1, 0, 0, 0, 0),
        k => {
            let (mode, host) = stdio_mode(ctx, k).unwrap_or((Mode::Null, 0));
            match mode {
                Mode::Inherit => sys::filestat_bytes(&sys::fstat(host)?),
                _ => sys::filestat_raw(0, 0, stdio_filetype(mode, host).0, 1, 0, 0, 0, 0),
            }
        }
    };
    mem.write_bytes(out, &b)
}

pub(super) fn fd_filestat_set_size(ctx: &mut WasiCtx, _mem: &mut Mem, fd: u32, size: u64) -> R {
    ctx.require(fd, rights::FD_FILESTAT_SET_SIZE)?;
    check_writable(ctx, fd)?;
    let new_size = i64::try_from(size).map_err(|_| errno::INVAL)?;
    ctx.resize_file(fd, |f, room| {
        if room.is_some_and(|r| size > r.max_size()) {
            return Err(errno::DQUOT);
        }
        // SAFETY: plain syscall.
        sys::cvt(unsafe { libc::ftruncate(f, new_size) }).map(|_| ())
    })
}

pub(super) fn fd_filestat_set_times(
    ctx: &mut WasiCtx,
    _mem: &mut Mem,
    fd: u32,
    atim: u64,
    mtim: u64,
    fst: u32,
) -> R {
    ctx.require(fd, rights::FD_FILESTAT_SET_TIMES)?;
    if matches!(ctx.entry(fd)?.kind, Kind::Root) {
        return Err(ctx.deny("/".to_string()));
    }
    check_writable(ctx, fd)?;
    let ts = sys::utime_specs(atim, mtim, fst as u16)?;
    let f = object_fd(ctx.entry(fd)?)?;
    sys::set_times_fd(f, &ts)
}

pub(super) fn fd_prestat_get(ctx: &mut WasiCtx, mem: &mut Mem, fd: u32, out: u32) -> R {
    let e = ctx.entry(fd)?;
    if !e.preopen {
        return Err(errno::BADF);
    }
    let mut b = [0u8; 8];
    b[0] = abi::PREOPENTYPE_DIR;
    b[4..8].copy_from_slice(&(e.guest.len() as u32).to_le_bytes());
    mem.write_bytes(out, &b)
}

pub(super) fn fd_prestat_dir_name(
    ctx: &mut WasiCtx,
    mem: &mut Mem,
    fd: u32,
    path: u32,
    path_len: u32,
) -> R {
    let e = ctx.entry(fd)?;
    if !e.preopen {
        return Err(errno::BADF);
    }
    if (path_len as usize) < e.guest.len() {
        return Err(errno::NAMETOOLONG);
    }
    mem.write_bytes(path, e.guest.as_bytes())
}

pub(super) fn fd_renumber(ctx: &mut WasiCtx, _mem: &mut Mem, fd: u32, to: u32) -> R {
    ctx.entry(fd)?;
    ctx.entry(to)?;
    if fd != to {
        let e = ctx.fds[fd as usize].take();
        ctx.fds[to as usize] = e;
    }
    Ok(())
}

pub(super) fn fd_seek(
    ctx: &mut WasiCtx,
    mem: &mut Mem,
    fd: u32,
    offset: u64,
    wh: u32,
    out: u32,
) -> R {
    mem.check(out, 8)?;
    // Asking where the offset is needs only the right to tell.
    let asks_only = offset == 0 && u8::try_from(wh) == Ok(whence::CUR);
    let needed = if asks_only {
        rights::FD_TELL
    } else {
        rights::FD_SEEK
    };
    let f = match file_fd(ctx.require(fd, needed)?) {
        Err(errno::ISDIR) => return Err(errno::BADF),
        r => r?,
    };
    let wh = match u8::try_from(wh) {
        Ok(whence::SET) => libc::SEEK_SET,
        Ok(whence::CUR) => libc::SEEK_CUR,
        Ok(whence::END) => libc::SEEK_END,
        _ => return Err(errno::INVAL),
    };
    // SAFETY: plain syscall.
    let pos = unsafe { libc::lseek(f, offset as i64, wh) };
    if pos < 0 {
        return Err(abi::last_errno());
    }
    mem.write_u64(out, pos as u64)
}

pub(super) fn fd_tell(ctx: &mut WasiCtx, mem: &mut Mem, fd: u32, out: u32) -> R {
    ctx.require(fd, rights::FD_TELL)?;
    fd_seek(ctx, mem, fd, 0, whence::CUR as u32, out)
}

// ---------------------------------------------------------------- reading and writing

pub(super) fn fd_read(
    ctx: &mut WasiCtx,
    mem: &mut Mem,
    fd: u32,
    iovs: u32,
    iovs_len: u32,
    nread: u32,
) -> R {
    ctx.require(fd, rights::FD_READ)?;
    mem.check(nread, 4)?;
    let iov = mem.iovecs(iovs, iovs_len)?;
    let e = ctx.entry(fd)?;
    let n = match &e.kind {
        Kind::File(f) => readv(f.as_raw_fd(), &iov)?,
        Kind::Stdin => match ctx.stdin_mode {
            Mode::Inherit => {
                wait_until_ready(ctx, 0, libc::POLLIN)?;
                readv(0, &iov)?
            }
            Mode::Null => 0,
            Mode::Buffer => {
                let mut n = 0;
                for v in &iov {
                    let rest = &ctx.stdin_buf[ctx.stdin_pos.min(ctx.stdin_buf.len())..];
                    let take = rest.len().min(v.iov_len);
                    if take == 0 {
                        break;
                    }
                    // SAFETY: iov_base points to a checked guest range of iov_len >= take bytes;
                    // the source is host memory, so the ranges cannot overlap.
                    unsafe {
                        std::ptr::copy_nonoverlapping(rest.as_ptr(), v.iov_base as *mut u8, take)
                    };
                    ctx.stdin_pos += take;
                    n += take;
                }
                n
            }
        },
        Kind::Dir(_) | Kind::Root => return Err(errno::ISDIR),
        Kind::Stdout | Kind::Stderr => return Err(errno::BADF),
    };
    mem.write_u32(nread, n as u32)
}

pub(super) fn fd_write(
    ctx: &mut WasiCtx,
    mem: &mut Mem,
    fd: u32,
    iovs: u32,
    iovs_len: u32,
    nwritten: u32,
) -> R {
    ctx.require(fd, rights::FD_WRITE)?;
    mem.check(nwritten, 4)?;
    let iov = mem.iovecs(iovs, iovs_len)?;
    let e = ctx.entry(fd)?;
    let n = match &e.kind {
        Kind::File(_) => {
            check_writable(ctx, fd)?;
            ctx.resize_file(fd, |f, room| match room {
                None => writev(f, &iov),
                Some(room) => {
                    // SAFETY: plain syscall.
                    let at = unsafe { libc::lseek(f, 0, libc::SEEK_CUR) };
                    let at = if appends(f) {
                        room.size
                    } else {
                        at.max(0) as u64
                    };
                    writev(f, &within_quota(&iov, at, room)?)
                }
            })?
        }
        Kind::Stdout | Kind::Stderr => {
            let (mode, host) = if matches!(e.kind, Kind::Stdout) {
                (ctx.stdout_mode, 1)
            } else {
                (ctx.stderr_mode, 2)
            };
            match mode {
                Mode::Inherit => {
                    wait_until_ready(ctx, host, libc::POLLOUT)?;
                    writev(host, &iov)?
                }
                Mode::Null => iov.iter().map(|v| v.iov_len).sum(),
                Mode::Buffer => {
                    let mut n = 0;
                    for v in &iov {
                        // SAFETY: checked guest range, read only.
                        let s = unsafe {
                            std::slice::from_raw_parts(v.iov_base as *const u8, v.iov_len)
                        };
                        ctx.capture(host == 1, s);
                        n += v.iov_len;
                    }
                    n
                }
            }
        }
        Kind::Dir(_) | Kind::Root => return Err(errno::ISDIR),
        Kind::Stdin => return Err(errno::BADF),
    };
    mem.write_u32(nwritten, n as u32)
}

pub(super) fn fd_pread(
    ctx: &mut WasiCtx,
    mem: &mut Mem,
    fd: u32,
    iovs: u32,
    iovs_len: u32,
    offset: u64,
    nread: u32,
) -> R {
    ctx.require(fd, rights::FD_READ | rights::FD_SEEK)?;
    mem.check(nread, 4)?;
    let iov = mem.iovecs(iovs, iovs_len)?;
    let f = file_fd(ctx.entry(fd)?)?;
    let offset = i64::try_from(offset).map_err(|_| errno::INVAL)?;
    // SAFETY: iovecs point to checked guest ranges.
    let n = sys::cvt_size(unsafe { libc::preadv(f, iov.as_ptr(), iov.len() as i32, offset) })?;
    mem.write_u32(nread, n as u32)
}

pub(super) fn fd_pwrite(
    ctx: &mut WasiCtx,
    mem: &mut Mem,
    fd: u32,
    iovs: u32,
    iovs_len: u32,
    offset: u64,
    nwritten: u32,
) -> R {
    ctx.require(fd, rights::FD_WRITE | rights::FD_SEEK)?;
    mem.check(nwritten, 4)?;
    let iov = mem.iovecs(iovs, iovs_len)?;
    file_fd(ctx.entry(fd)?)?;
    check_writable(ctx, fd)?;
    let host_offset = i64::try_from(offset).map_err(|_| errno::INVAL)?;
    let n = ctx.resize_file(fd, |f, room| {
        let iov = match room {
            // Linux's pwrite on an O_APPEND descriptor appends.
            Some(room) => within_quota(&iov, if appends(f) { room.size } else { offset }, room)?,
            None => std::borrow::Cow::Borrowed(&iov[..]),
        };
        // SAFETY: iovecs point to checked guest ranges.
        sys::cvt_size(unsafe { libc::pwritev(f, iov.as_ptr(), iov.len() as i32, host_offset) })
    })?;
    mem.write_u32(nwritten, n as u32)
}

/// True when the host descriptor has O_APPEND.
fn appends(f: RawFd) -> bool {
    // SAFETY: plain syscall.
    let flags = unsafe { libc::fcntl(f, libc::F_GETFL) };
    flags >= 0 && flags & libc::O_APPEND != 0
}

/// The part of a write at offset `at` that keeps the file within `room` (shortened like a
/// write to a full disk); EDQUOT when none of it fits.
fn within_quota(
    iov: &[libc::iovec],
    at: u64,
    room: super::Room,
) -> Result<std::borrow::Cow<'_, [libc::iovec]>, Errno> {
    let total: u64 = iov.iter().map(|v| v.iov_len as u64).sum();
    let max = room.max_size();
    if total == 0 || at.saturating_add(total) <= max {
        return Ok(std::borrow::Cow::Borrowed(iov));
    }
    if at >= max {
        return Err(errno::DQUOT);
    }
    let mut left = (max - at) as usize;
    let mut kept = Vec::new();
    for v in iov {
        if left == 0 {
            break;
        }
        let take = v.iov_len.min(left);
        kept.push(libc::iovec {
            iov_base: v.iov_base,
            iov_len: take,
        });
        left -= take;
    }
    Ok(std::borrow::Cow::Owned(kept))
}

pub(super) fn readv(f: RawFd, iov: &[libc::iovec]) -> Result<usize, Errno> {
    vectored(f, iov, libc::readv)
}

pub(super) fn writev(f: RawFd, iov: &[libc::iovec]) -> Result<usize, Errno> {
    vectored(f, iov, libc::writev)
}

/// Waits until the host descriptor `fd` (inherited stdio, which may be a pipe nobody serves)
/// is ready for `events`, for at most the call's remaining time; then the wrapper ends the call.
fn wait_until_ready(ctx: &WasiCtx, fd: RawFd, events: i16) -> R {
    let Some(deadline) = ctx.deadline_ns else {
        return Ok(());
    };
    loop {
        let now = sys::monotonic_now();
        if now >= deadline {
            return Err(errno::AGAIN);
        }
        let left = deadline - now;
        let ts = sys::timespec_of(left);
        let mut p = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd and a valid timespec.
        let r = unsafe { libc::ppoll(&mut p, 1, &ts, std::ptr::null()) };
        if r > 0 {
            // Ready, or hung up / failed: the read or write itself reports which.
            return Ok(());
        }
        if r < 0 && abi::last_host_errno() != libc::EINTR {
            return Err(abi::last_errno());
        }
    }
}

/// readv/writev, retried on EINTR.
fn vectored(
    f: RawFd,
    iov: &[libc::iovec],
    op: unsafe extern "C" fn(libc::c_int, *const libc::iovec, libc::c_int) -> libc::ssize_t,
) -> Result<usize, Errno> {
    if iov.is_empty() {
        return Ok(0);
    }
    loop {
        // SAFETY: iovecs point to checked guest ranges.
        let r = unsafe { op(f, iov.as_ptr(), iov.len() as i32) };
        if r < 0 && abi::last_host_errno() == libc::EINTR {
            continue;
        }
        return sys::cvt_size(r);
    }
}

pub(super) fn fd_readdir(
    ctx: &mut WasiCtx,
    mem: &mut Mem,
    fd: u32,
    buf: u32,
    buf_len: u32,
    cookie: u64,
    bufused: u32,
) -> R {
    ctx.require(fd, rights::FD_READDIR)?;
    mem.check(buf, buf_len)?;
    mem.check(bufused, 4)?;
    let dirfd = match &ctx.entry(fd)?.kind {
        Kind::Dir(d) => d.as_raw_fd(),
        Kind::Root => return mem.write_u32(bufused, 0),
        _ => return Err(errno::NOTDIR),
    };
    // A fresh readable descriptor: the table's may be O_PATH, and its offset must not be shared.
    let d = sys::open_beneath(dirfd, ".", libc::O_RDONLY | libc::O_DIRECTORY, 0)
        .map_err(abi::from_host)?;
    let d = d.as_raw_fd();
    if cookie != 0 {
        let pos = i64::try_from(cookie).map_err(|_| errno::INVAL)?;
        // SAFETY: plain syscall.
        if unsafe { libc::lseek(d, pos, libc::SEEK_SET) } < 0 {
            return Err(abi::last_errno());
        }
    }
    let out = mem.slice_mut(buf, buf_len)?;
    let mut used = 0usize;
    let mut kbuf = [0u8; 8192];
    'fill: loop {
        // SAFETY: kbuf is writable for its length.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, d, kbuf.as_mut_ptr(), kbuf.len()) };
        if n < 0 {
            return Err(abi::last_errno());
        }
        if n == 0 {
            break;
        }
        let n = n as usize;
        let mut at = 0usize;
        while at + 19 <= n {
            // struct linux_dirent64 { u64 d_ino; i64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
            let ino = u64::from_ne_bytes(kbuf[at..at + 8].try_into().unwrap());
            let off = i64::from_ne_bytes(kbuf[at + 8..at + 16].try_into().unwrap());
            let reclen = u16::from_ne_bytes(kbuf[at + 16..at + 18].try_into().unwrap()) as usize;
            let dtype = kbuf[at + 18];
            if reclen == 0 || at + reclen > n {
                break;
            }
            let name_area = &kbuf[at + 19..at + reclen];
            let name_len = name_area
                .iter()
                .position(|&c| c == 0)
                .unwrap_or(name_area.len());
            let name = &name_area[..name_len];
            let ft = match sys::filetype_of_dtype(dtype) {
                Some(ft) => ft,
                None => std::str::from_utf8(name)
                    .ok()
                    .and_then(|s| sys::fstatat(d, s, libc::AT_SYMLINK_NOFOLLOW).ok())
                    .map(|st| sys::filetype_of_mode(st.st_mode))
                    .unwrap_or(filetype::UNKNOWN),
            };
            let mut head = [0u8; 24];
            head[0..8].copy_from_slice(&(off as u64).to_le_bytes());
            head[8..16].copy_from_slice(&ino.to_le_bytes());
            head[16..20].copy_from_slice(&(name.len() as u32).to_le_bytes());
            head[20] = ft;
            for part in [&head[..], name] {
                let room = out.len() - used;
                let take = part.len().min(room);
                out[used..used + take].copy_from_slice(&part[..take]);
                used += take;
                if take < part.len() {
                    break 'fill;
                }
            }
            if used == out.len() {
                break 'fill;
            }
            at += reclen;
        }
    }
    mem.write_u32(bufused, used as u32)
}

// ---------------------------------------------------------------- paths

pub(super) fn path_open(
    ctx: &mut WasiCtx,
    mem: &mut Mem,
    fd: u32,
    dirflags: u32,
    path: u32,
    path_len: u32,
    oflags: u32,
    base: u64,
    inheriting: u64,
    fdflags: u32,
    out: u32,
) -> R {
    let rel = mem.read_str(path, path_len)?;
    mem.check(out, 4)?;
    // Before anything is opened on the host.
    ctx.check_fd_quota()?;
    let oflags = oflags as u16;
    let fdflags = fdflags as u16;
    let mut needed = rights::PATH_OPEN;
    if oflags & oflags::CREAT != 0 {
        needed |= rights::PATH_CREATE_FILE;
    }
    if oflags & oflags::TRUNC != 0 {
        needed |= rights::PATH_FILESTAT_SET_SIZE;
    }
    let parent_inheriting = ctx.require(fd, needed)?.inheriting;
    // What the new descriptor may get: what was asked for, within what its directory passes on.
    let base = base & parent_inheriting;
    let inheriting = inheriting & parent_inheriting;
    let wants_write = oflags & (oflags::CREAT | oflags::TRUNC | oflags::EXCL) != 0
        || base & rights::WRITE != 0
        || fdflags & fdflags::APPEND != 0;
    let (dirfd, guest, readonly) = ctx.dir_for(fd, rel, wants_write)?;

    let read = base & rights::READ != 0;
    let write = base & rights::WRITE != 0;
    let creating = oflags & (oflags::CREAT | oflags::TRUNC) != 0;
    let mut flags = match (read, write) {
        (true, true) => libc::O_RDWR,
        (false, true) => libc::O_WRONLY,
        (true, false) => libc::O_RDONLY,
        (false, false) if creating || fdflags != 0 => libc::O_RDONLY,
        (false, false) => libc::O_PATH,
    };
    if dirflags & abi::LOOKUP_SYMLINK_FOLLOW == 0 {
        flags |= libc::O_NOFOLLOW;
    }
    if oflags & oflags::DIRECTORY != 0 {
        flags |= libc::O_DIRECTORY;
    }
    if flags & libc::O_PATH == 0 {
        flags |= libc::O_NOCTTY;
        if oflags & oflags::CREAT != 0 {
            flags |= libc::O_CREAT;
        }
        if oflags & oflags::EXCL != 0 {
            flags |= libc::O_EXCL;
        }
        if oflags & oflags::TRUNC != 0 {
            flags |= libc::O_TRUNC;
        }
        if fdflags & fdflags::APPEND != 0 {
            flags |= libc::O_APPEND;
        }
        if fdflags & fdflags::NONBLOCK != 0 {
            flags |= libc::O_NONBLOCK;
        }
        if fdflags & fdflags::SYNC != 0 || fdflags & fdflags::RSYNC != 0 {
            flags |= libc::O_SYNC;
        } else if fdflags & fdflags::DSYNC != 0 {
            flags |= libc::O_DSYNC;
        }
    }
    let (file, st, held) = match ctx.disk.clone() {
        None => {
            let file = ctx.open_beneath(dirfd, rel, flags, 0o666, &guest)?;
            let st = sys::fstat(file.as_raw_fd())?;
            (file, st, None)
        }
        Some(disk) => {
            let mut ledger = disk.lock();
            // Creating a file adds a name, truncating releases bytes: what was there decides.
            let changes = flags & (libc::O_CREAT | libc::O_TRUNC) != 0;
            let before = if changes {
                sys::open_confined(dirfd, rel, libc::O_PATH | (flags & libc::O_NOFOLLOW), 0)
                    .ok()
                    .and_then(|f| sys::fstat(f.as_raw_fd()).ok())
            } else {
                None
            };
            if flags & libc::O_CREAT != 0 && before.is_none() && !ledger.has_room_for_entry() {
                let limit = ledger.limit();
                drop(ledger);
                return Err(ctx.over_quota(guest, limit));
            }
            let file = ctx.open_beneath(dirfd, rel, flags, 0o666, &guest)?;
            let st = sys::fstat(file.as_raw_fd())?;
            let size = |st: &libc::stat| st.st_size.max(0) as u64;
            match before {
                None if changes => {
                    ledger.entry_added();
                    ledger.resized(0, size(&st));
                }
                Some(b) if quota::FileId::of(&b) == quota::FileId::of(&st) => {
                    ledger.resized(size(&b), size(&st))
                }
                _ => {}
            }
            let held = (st.st_mode & libc::S_IFMT == libc::S_IFREG).then(|| {
                ledger.file_opened(quota::FileId::of(&st));
                (disk.clone(), quota::FileId::of(&st))
            });
            (file, st, held)
        }
    };
    if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
        // Reached only without LOOKUP_SYMLINK_FOLLOW, where O_PATH opens the link itself:
        // WASI, like open(2) with O_NOFOLLOW, says ELOOP.
        return Err(errno::LOOP);
    }
    let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
    let entry = Entry {
        kind: if is_dir {
            Kind::Dir(file)
        } else {
            Kind::File(file)
        },
        guest,
        preopen: false,
        readonly,
        // A directory's descriptor holds directory rights only, a file's file rights only.
        base: base
            & if is_dir {
                rights::DIR_BASE
            } else {
                rights::FILE_BASE
            },
        inheriting,
        flags: if is_dir { fdflags } else { 0 },
        held,
    };
    let new = ctx.insert(entry)?;
    if let Err(e) = mem.write_u32(out, new) {
        ctx.fds[new as usize] = None;
        return Err(e);
    }
    Ok(())
}

pub(super) fn path_create_directory(
    ctx: &mut WasiCtx,
    mem: &mut Mem,
    fd: u32,
    path: u32,
    path_len: u32,
) -> R {
    ctx.require(fd, rights::PATH_CREATE_DIRECTORY)?;
    let rel = mem.read_str(path, path_len)?;
    let p = ctx.parent_of(fd, rel, true)?;
    let name = sys::cstr(&p.last)?;
    let guest = ctx.guest_of(fd, rel)?;
    // SAFETY: valid C string.
    ctx.add_name(&guest, || {
        sys::cvt(unsafe { libc::mkdirat(p.dir.raw(), name.as_ptr(), 0o777) }).map(|_| ())
    })
}

pub(super) fn path_filestat_get(
    ctx: &mut WasiCtx,
    mem: &mut Mem,
    fd: u32,
    flags: u32,
    path: u32,
    path_len: u32,
    out: u32,
) -> R {
    ctx.require(fd, rights::PATH_FILESTAT_GET)?;
    let rel = mem.read_str(path, path_len)?;
    mem.check(out, abi::FILESTAT_SIZE)?;
    let (dirfd, guest, _) = ctx.dir_for(fd, rel, false)?;
    let mut oflags = libc::O_PATH;
    if flags & abi::LOOKUP_SYMLINK_FOLLOW == 0 {
        oflags |= libc::O_NOFOLLOW;
    }
    let f = ctx.open_beneath(dirfd, rel, oflags, 0, &guest)?;
    let st = sys::fstat(f.as_raw_fd())?;
    mem.write_bytes(out, &sys::filestat_bytes(&st))
}

pub(super) fn path_filestat_set_times(
    ctx: &mut WasiCtx,
    mem: &mut Mem,
    fd: u32,
    flags: u32,
    path: u32,
    path_len: u32,
    atim: u64,
    mtim: u64,
    fst: u32,
) -> R {
    ctx.require(fd, rights::PATH_FILESTAT_SET_TIMES)?;
    let rel = mem.read_str(path, path_len)?;
    let ts = sys::utime_specs(atim, mtim, fst as u16)?;
    if flags & abi::LOOKUP_SYMLINK_FOLLOW != 0 {
        let (dirfd, guest, _) = ctx.dir_for(fd, rel, true)?;
        let f = ctx.open_beneath(dirfd, rel, libc::O_PATH, 0, &guest)?;
        sys::set_times_fd(f.as_raw_fd(), &ts)
    } else {
        let p = ctx.parent_of(fd, rel, true)?;
        let name = sys::cstr(&p.last)?;
        // SAFETY: valid pointers.
        sys::cvt(unsafe {
            libc::utimensat(
                p.dir.raw(),
                name.as_ptr(),
                ts.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
        .map(|_| ())
    }
}

pub(super) fn path_link(
    ctx: &mut WasiCtx,
    mem: &mut Mem,
    old_fd: u32,
    old_flags: u32,
    old_path: u32,
    old_len: u32,
    new_fd: u32,
    new_path: u32,
    new_len: u32,
) -> R {
    let old_rel = mem.read_str(old_path, old_len)?;
    let new_rel = mem.read_str(new_path, new_len)?;
    ctx.require(old_fd, rights::PATH_LINK_SOURCE)?;
    ctx.require(new_fd, rights::PATH_LINK_TARGET)?;
    // A link to a file beneath a read-only preopen would make it writable elsewhere: both sides
    // count as writes.
    let to = ctx.parent_of(new_fd, new_rel, true)?;
    // With its trailing slash: the kernel's rules for one are the ones WASI expects.
    let to_name = sys::cstr(&to.as_given())?;
    let to_guest = ctx.guest_of(new_fd, new_rel)?;
    if old_flags & abi::LOOKUP_SYMLINK_FOLLOW != 0 {
        let (dirfd, guest, _) = ctx.dir_for(old_fd, old_rel, true)?;
        let f = ctx.open_beneath(dirfd, old_rel, libc::O_PATH, 0, &guest)?;
        let src = sys::proc_fd_path(f.as_raw_fd());
        ctx.add_name(&to_guest, || {
            // SAFETY: valid C strings.
            sys::cvt(unsafe {
                libc::linkat(
                    libc::AT_FDCWD,
                    src.as_ptr(),
                    to.dir.raw(),
                    to_name.as_ptr(),
                    libc::AT_SYMLINK_FOLLOW,
                )
            })
            .map(|_| ())
        })
    } else {
        let from = ctx.parent_of(old_fd, old_rel, true)?;
        let from_name = sys::cstr(&from.as_given())?;
        ctx.add_name(&to_guest, || {
            // SAFETY: valid C strings.
            sys::cvt(unsafe {
                libc::linkat(
                    from.dir.raw(),
                    from_name.as_ptr(),
                    to.dir.raw(),
                    to_name.as_ptr(),
                    0,
                )
            })
            .map(|_| ())
        })
    }
}

pub(super) fn path_readlink(
    ctx: &mut WasiCtx,
    mem: &mut Mem,
    fd: u32,
    path: u32,
    path_len: u32,
    buf: u32,
    buf_len: u32,
    bufused: u32,
) -> R {
    ctx.require(fd, rights::PATH_READLINK)?;
    let rel = mem.read_str(path, path_len)?;
    mem.check(bufused, 4)?;
    let p = ctx.parent_of(fd, rel, false)?;
    let name = sys::cstr(&p.last)?;
    let dst = mem.ptr(buf, buf_len)?;
    // SAFETY: dst is a checked guest range of buf_len bytes.
    let n = sys::cvt_size(unsafe {
        libc::readlinkat(
            p.dir.raw(),
            name.as_ptr(),
            dst as *mut libc::c_char,
            buf_len as usize,
        )
    })?;
    mem.write_u32(bufused, n as u32)
}

pub(super) fn path_remove_directory(
    ctx: &mut WasiCtx,
    mem: &mut Mem,
    fd: u32,
    path: u32,
    path_len: u32,
) -> R {
    ctx.require(fd, rights::PATH_REMOVE_DIRECTORY)?;
    let rel = mem.read_str(path, path_len)?;
    let p = ctx.parent_of(fd, rel, true)?;
    let name = sys::cstr(&p.last)?;
    ctx.remove_name(p.dir.raw(), &p.last, || {
        // SAFETY: valid C string.
        sys::cvt(unsafe { libc::unlinkat(p.dir.raw(), name.as_ptr(), libc::AT_REMOVEDIR) })
            .map(|_| ())
    })
}

pub(super) fn path_unlink_file(
    ctx: &mut WasiCtx,
    mem: &mut Mem,
    fd: u32,
    path: u32,
    path_len: u32,
) -> R {
    ctx.require(fd, rights::PATH_UNLINK_FILE)?;
    let rel = mem.read_str(path, path_len)?;
    let p = ctx.parent_of(fd, rel, true)?;
    if p.trailing_slash {
        // "x/" names a directory: never unlink a file through it.
        let st = sys::fstatat(p.dir.raw(), &p.last, libc::AT_SYMLINK_NOFOLLOW)?;
        return Err(if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            errno::ISDIR
        } else {
            errno::NOTDIR
        });
    }
    let name = sys::cstr(&p.last)?;
    ctx.remove_name(p.dir.raw(), &p.last, || {
        // SAFETY: valid C string.
        sys::cvt(unsafe { libc::unlinkat(p.dir.raw(), name.as_ptr(), 0) }).map(|_| ())
    })
}

pub(super) fn path_rename(
    ctx: &mut WasiCtx,
    mem: &mut Mem,
    fd: u32,
    old_path: u32,
    old_len: u32,
    new_fd: u32,
    new_path: u32,
    new_len: u32,
) -> R {
    let old_rel = mem.read_str(old_path, old_len)?;
    let new_rel = mem.read_str(new_path, new_len)?;
    ctx.require(fd, rights::PATH_RENAME_SOURCE)?;
    ctx.require(new_fd, rights::PATH_RENAME_TARGET)?;
    let from = ctx.parent_of(fd, old_rel, true)?;
    let to = ctx.parent_of(new_fd, new_rel, true)?;
    let from_name = sys::cstr(&from.last)?;
    let to_name = sys::cstr(&to.last)?;
    let rename = || {
        // SAFETY: valid C strings.
        sys::cvt(unsafe {
            libc::renameat(
                from.dir.raw(),
                from_name.as_ptr(),
                to.dir.raw(),
                to_name.as_ptr(),
            )
        })
        .map(|_| ())
    };
    let Some(disk) = ctx.disk.clone() else {
        return rename();
    };
    // A rename over an existing name removes that name (and a file's bytes with its last one).
    let mut ledger = disk.lock();
    let stat = |dir: RawFd, name: &str| sys::fstatat(dir, name, libc::AT_SYMLINK_NOFOLLOW).ok();
    let source = stat(from.dir.raw(), &from.last);
    let replaced = stat(to.dir.raw(), &to.last);
    rename()?;
    match (replaced, source) {
        (Some(r), Some(s)) if quota::FileId::of(&r) == quota::FileId::of(&s) => {}
        (Some(r), _) if r.st_mode & libc::S_IFMT == libc::S_IFREG => ledger.file_unlinked(&r),
        (Some(_), _) => ledger.entry_removed(),
        (None, _) => {}
    }
    Ok(())
}

pub(super) fn path_symlink(
    ctx: &mut WasiCtx,
    mem: &mut Mem,
    old_path: u32,
    old_len: u32,
    fd: u32,
    new_path: u32,
    new_len: u32,
) -> R {
    ctx.require(fd, rights::PATH_SYMLINK)?;
    let target_text = mem.read_str(old_path, old_len)?;
    let target = sys::cstr(target_text)?;
    let new_rel = mem.read_str(new_path, new_len)?;
    let p = ctx.parent_of(fd, new_rel, true)?;
    if target_text.starts_with('/') {
        // It could only ever point out of the directory (lookups refuse to follow it).
        let guest = ctx.guest_of(fd, new_rel)?;
        return Err(ctx.deny(guest));
    }
    let name = sys::cstr(&p.as_given())?;
    let guest = ctx.guest_of(fd, new_rel)?;
    // The target is stored as given; following it later is confined like any other lookup.
    ctx.add_name(&guest, || {
        // SAFETY: valid C strings.
        sys::cvt(unsafe { libc::symlinkat(target.as_ptr(), p.dir.raw(), name.as_ptr()) })
            .map(|_| ())
    })
}

// ---------------------------------------------------------------- poll_oneoff

/// At most this many subscriptions per call (bounds the host allocation).
const MAX_SUBSCRIPTIONS: u32 = 4096;

struct Event {
    userdata: u64,
    error: Errno,
    kind: u8,
    nbytes: u64,
    flags: u16,
}

enum Wait {
    /// Clock subscription: deadline on CLOCK_MONOTONIC (ns).
    Clock(u64),
    /// Readiness of a host descriptor (poll events mask).
    Host(RawFd, i16),
}

pub(super) fn poll_oneoff(
    ctx: &mut WasiCtx,
    mem: &mut Mem,
    subs: u32,
    events: u32,
    nsubs: u32,
    nevents: u32,
) -> R {
    mem.check(nevents, 4)?;
    if nsubs == 0 {
        return Err(errno::INVAL);
    }
    if nsubs > MAX_SUBSCRIPTIONS {
        return Err(errno::NOTSUP);
    }
    mem.check(subs, nsubs * abi::SUBSCRIPTION_SIZE)?;
    mem.check(events, nsubs * abi::EVENT_SIZE)?;

    let now = sys::monotonic_now();
    let mut ready: Vec<Event> = Vec::new();
    let mut waits: Vec<(u64, u8, Wait)> = Vec::new();
    for i in 0..nsubs {
        let at = subs + i * abi::SUBSCRIPTION_SIZE;
        let userdata = mem.read_u64(at)?;
        let tag = mem.read_u8(at + 8)?;
        match tag {
            eventtype::CLOCK => {
                let id = mem.read_u32(at + 16)?;
                let timeout = mem.read_u64(at + 24)?;
                let flags = mem.read_u16(at + 40)?;
                let clock = match id {
                    abi::clockid::REALTIME => libc::CLOCK_REALTIME,
                    abi::clockid::MONOTONIC => libc::CLOCK_MONOTONIC,
                    _ => {
                        ready.push(Event {
                            userdata,
                            error: errno::INVAL,
                            kind: tag,
                            nbytes: 0,
                            flags: 0,
                        });
                        continue;
                    }
                };
                let remaining = if flags & abi::SUBCLOCK_ABSTIME != 0 {
                    timeout.saturating_sub(sys::clock_now(clock)?)
                } else {
                    timeout
                };
                if remaining == 0 {
                    ready.push(Event {
                        userdata,
                        error: 0,
                        kind: tag,
                        nbytes: 0,
                        flags: 0,
                    });
                } else {
                    waits.push((userdata, tag, Wait::Clock(now.saturating_add(remaining))));
                }
            }
            eventtype::FD_READ | eventtype::FD_WRITE => {
                let fd = mem.read_u32(at + 16)?;
                let reading = tag == eventtype::FD_READ;
                let events = if reading { libc::POLLIN } else { libc::POLLOUT };
                let Ok(e) = ctx.entry(fd) else {
                    ready.push(Event {
                        userdata,
                        error: errno::BADF,
                        kind: tag,
                        nbytes: 0,
                        flags: 0,
                    });
                    continue;
                };
                let immediate = |nbytes: u64, flags: u16| Event {
                    userdata,
                    error: 0,
                    kind: tag,
                    nbytes,
                    flags,
                };
                match &e.kind {
                    Kind::File(f) => {
                        // Regular files are always ready; report the bytes left before EOF.
                        let f = f.as_raw_fd();
                        let nbytes = if reading {
                            let size = sys::fstat(f)
                                .map(|st| st.st_size.max(0) as u64)
                                .unwrap_or(0);
                            // SAFETY: plain syscall.
                            let pos = unsafe { libc::lseek(f, 0, libc::SEEK_CUR) }.max(0) as u64;
                            size.saturating_sub(pos)
                        } else {
                            0
                        };
                        ready.push(immediate(nbytes, 0));
                    }
                    Kind::Dir(_) | Kind::Root => ready.push(Event {
                        userdata,
                        error: errno::BADF,
                        kind: tag,
                        nbytes: 0,
                        flags: 0,
                    }),
                    k => {
                        let (mode, host) = stdio_mode(ctx, k).unwrap_or((Mode::Null, 0));
                        match mode {
                            Mode::Inherit => waits.push((userdata, tag, Wait::Host(host, events))),
                            Mode::Null => ready
                                .push(immediate(0, if reading { abi::EVENTRW_HANGUP } else { 0 })),
                            Mode::Buffer => {
                                let left = if reading && matches!(k, Kind::Stdin) {
                                    ctx.stdin_buf.len().saturating_sub(ctx.stdin_pos) as u64
                                } else {
                                    0
                                };
                                let hup = reading && left == 0;
                                ready.push(immediate(
                                    left,
                                    if hup { abi::EVENTRW_HANGUP } else { 0 },
                                ));
                            }
                        }
                    }
                }
            }
            _ => ready.push(Event {
                userdata,
                error: errno::INVAL,
                kind: tag,
                nbytes: 0,
                flags: 0,
            }),
        }
    }

    // Wait (or just probe, when something is ready already) for host descriptors and clocks.
    let mut pfds: Vec<libc::pollfd> = waits
        .iter()
        .filter_map(|(_, _, w)| match w {
            Wait::Host(fd, ev) => Some(libc::pollfd {
                fd: *fd,
                events: *ev,
                revents: 0,
            }),
            Wait::Clock(_) => None,
        })
        .collect();
    let earliest = waits
        .iter()
        .filter_map(|(_, _, w)| match w {
            Wait::Clock(d) => Some(*d),
            Wait::Host(..) => None,
        })
        .min();
    // Never past the call's time limit: the wrapper ends the call when it is reached.
    let deadline = ctx.deadline_ns;
    let wake = match (earliest, deadline) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if !waits.is_empty() {
        loop {
            let timeout = if !ready.is_empty() {
                Some(0)
            } else {
                wake.map(|d| d.saturating_sub(sys::monotonic_now()))
            };
            let ts = timeout.map(sys::timespec_of);
            let tsp = ts
                .as_ref()
                .map_or(std::ptr::null(), |t| t as *const libc::timespec);
            // SAFETY: pfds is a valid array; tsp is null or a valid timespec.
            let r = unsafe {
                libc::ppoll(
                    pfds.as_mut_ptr(),
                    pfds.len() as libc::nfds_t,
                    tsp,
                    std::ptr::null(),
                )
            };
            if r < 0 {
                if abi::last_host_errno() == libc::EINTR {
                    continue;
                }
                return Err(abi::last_errno());
            }
            let after = sys::monotonic_now();
            let clocks_due = earliest.is_some_and(|d| d <= after);
            let out_of_time = deadline.is_some_and(|d| d <= after);
            if r > 0 || clocks_due || !ready.is_empty() || out_of_time {
                break;
            }
        }
        let after = sys::monotonic_now();
        let mut host_iter = pfds.iter();
        for (userdata, kind, w) in &waits {
            match w {
                Wait::Clock(d) => {
                    if *d <= after {
                        ready.push(Event {
                            userdata: *userdata,
                            error: 0,
                            kind: *kind,
                            nbytes: 0,
                            flags: 0,
                        });
                    }
                }
                Wait::Host(fd, _) => {
                    let p = host_iter.next().map(|p| p.revents).unwrap_or(0);
                    if p == 0 {
                        continue;
                    }
                    let error = if p & libc::POLLNVAL != 0 {
                        errno::BADF
                    } else if p & libc::POLLERR != 0 {
                        errno::IO
                    } else {
                        0
                    };
                    let flags = if p & libc::POLLHUP != 0 {
                        abi::EVENTRW_HANGUP
                    } else {
                        0
                    };
                    let mut nbytes = 0u64;
                    if *kind == eventtype::FD_READ {
                        let mut avail: libc::c_int = 0;
                        // SAFETY: FIONREAD writes an int.
                        if unsafe { libc::ioctl(*fd, libc::FIONREAD, &mut avail) } == 0 {
                            nbytes = avail.max(0) as u64;
                        }
                    }
                    ready.push(Event {
                        userdata: *userdata,
                        error,
                        kind: *kind,
                        nbytes,
                        flags,
                    });
                }
            }
        }
    }

    for (i, ev) in ready.iter().enumerate() {
        let mut b = [0u8; 32];
        b[0..8].copy_from_slice(&ev.userdata.to_le_bytes());
        b[8..10].copy_from_slice(&ev.error.to_le_bytes());
        b[10] = ev.kind;
        b[16..24].copy_from_slice(&ev.nbytes.to_le_bytes());
        b[24..26].copy_from_slice(&ev.flags.to_le_bytes());
        mem.write_bytes(events + i as u32 * abi::EVENT_SIZE, &b)?;
    }
    mem.write_u32(nevents, ready.len() as u32)
}

// ---------------------------------------------------------------- sockets (none are ever open)

/// No descriptor of an instance is a socket. The virtual root is no host descriptor at all:
/// EBADF, as for a number that is not open (what a module without preopens expects of fd 3).
pub(super) fn not_a_socket(ctx: &WasiCtx, fd: u32) -> R {
    match ctx.entry(fd)?.kind {
        Kind::Root => Err(errno::BADF),
        _ => Err(errno::NOTSOCK),
    }
}

pub(super) fn sock_accept(ctx: &mut WasiCtx, _mem: &mut Mem, fd: u32, _flags: u32, _out: u32) -> R {
    not_a_socket(ctx, fd)
}

pub(super) fn sock_recv(
    ctx: &mut WasiCtx,
    _mem: &mut Mem,
    fd: u32,
    _ri: u32,
    _ri_len: u32,
    _fl: u32,
    _len: u32,
    _ro: u32,
) -> R {
    not_a_socket(ctx, fd)
}

pub(super) fn sock_send(
    ctx: &mut WasiCtx,
    _mem: &mut Mem,
    fd: u32,
    _si: u32,
    _si_len: u32,
    _fl: u32,
    _len: u32,
) -> R {
    not_a_socket(ctx, fd)
}

pub(super) fn sock_shutdown(ctx: &mut WasiCtx, _mem: &mut Mem, fd: u32, _how: u32) -> R {
    not_a_socket(ctx, fd)
}
