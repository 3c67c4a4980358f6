//! Constants and layouts of `wasi_snapshot_preview1` (from the witx definitions of the spec).

#![allow(dead_code)]

pub type Errno = u16;

pub mod errno {
    use super::Errno;
    pub const SUCCESS: Errno = 0;
    pub const TOOBIG: Errno = 1;
    pub const ACCES: Errno = 2;
    pub const ADDRINUSE: Errno = 3;
    pub const ADDRNOTAVAIL: Errno = 4;
    pub const AFNOSUPPORT: Errno = 5;
    pub const AGAIN: Errno = 6;
    pub const ALREADY: Errno = 7;
    pub const BADF: Errno = 8;
    pub const BADMSG: Errno = 9;
    pub const BUSY: Errno = 10;
    pub const CANCELED: Errno = 11;
    pub const CHILD: Errno = 12;
    pub const CONNABORTED: Errno = 13;
    pub const CONNREFUSED: Errno = 14;
    pub const CONNRESET: Errno = 15;
    pub const DEADLK: Errno = 16;
    pub const DESTADDRREQ: Errno = 17;
    pub const DOM: Errno = 18;
    pub const DQUOT: Errno = 19;
    pub const EXIST: Errno = 20;
    pub const FAULT: Errno = 21;
    pub const FBIG: Errno = 22;
    pub const HOSTUNREACH: Errno = 23;
    pub const IDRM: Errno = 24;
    pub const ILSEQ: Errno = 25;
    pub const INPROGRESS: Errno = 26;
    pub const INTR: Errno = 27;
    pub const INVAL: Errno = 28;
    pub const IO: Errno = 29;
    pub const ISCONN: Errno = 30;
    pub const ISDIR: Errno = 31;
    pub const LOOP: Errno = 32;
    pub const MFILE: Errno = 33;
    pub const MLINK: Errno = 34;
    pub const MSGSIZE: Errno = 35;
    pub const MULTIHOP: Errno = 36;
    pub const NAMETOOLONG: Errno = 37;
    pub const NETDOWN: Errno = 38;
    pub const NETRESET: Errno = 39;
    pub const NETUNREACH: Errno = 40;
    pub const NFILE: Errno = 41;
    pub const NOBUFS: Errno = 42;
    pub const NODEV: Errno = 43;
    pub const NOENT: Errno = 44;
    pub const NOEXEC: Errno = 45;
    pub const NOLCK: Errno = 46;
    pub const NOLINK: Errno = 47;
    pub const NOMEM: Errno = 48;
    pub const NOMSG: Errno = 49;
    pub const NOPROTOOPT: Errno = 50;
    pub const NOSPC: Errno = 51;
    pub const NOSYS: Errno = 52;
    pub const NOTCONN: Errno = 53;
    pub const NOTDIR: Errno = 54;
    pub const NOTEMPTY: Errno = 55;
    pub const NOTRECOVERABLE: Errno = 56;
    pub const NOTSOCK: Errno = 57;
    pub const NOTSUP: Errno = 58;
    pub const NOTTY: Errno = 59;
    pub const NXIO: Errno = 60;
    pub const OVERFLOW: Errno = 61;
    pub const OWNERDEAD: Errno = 62;
    pub const PERM: Errno = 63;
    pub const PIPE: Errno = 64;
    pub const PROTO: Errno = 65;
    pub const PROTONOSUPPORT: Errno = 66;
    pub const PROTOTYPE: Errno = 67;
    pub const RANGE: Errno = 68;
    pub const ROFS: Errno = 69;
    pub const SPIPE: Errno = 70;
    pub const SRCH: Errno = 71;
    pub const STALE: Errno = 72;
    pub const TIMEDOUT: Errno = 73;
    pub const TXTBSY: Errno = 74;
    pub const XDEV: Errno = 75;
    pub const NOTCAPABLE: Errno = 76;
}

/// Maps a host (Linux) errno value to the preview1 errno.
pub fn from_host(e: i32) -> Errno {
    use errno::*;
    match e {
        0 => SUCCESS,
        libc::E2BIG => TOOBIG,
        libc::EACCES => ACCES,
        libc::EADDRINUSE => ADDRINUSE,
        libc::EADDRNOTAVAIL => ADDRNOTAVAIL,
        libc::EAFNOSUPPORT => AFNOSUPPORT,
        libc::EAGAIN => AGAIN,
        libc::EALREADY => ALREADY,
        libc::EBADF => BADF,
        libc::EBADMSG => BADMSG,
        libc::EBUSY => BUSY,
        libc::ECANCELED => CANCELED,
        libc::ECHILD => CHILD,
        libc::ECONNABORTED => CONNABORTED,
        libc::ECONNREFUSED => CONNREFUSED,
        libc::ECONNRESET => CONNRESET,
        libc::EDEADLK => DEADLK,
        libc::EDESTADDRREQ => DESTADDRREQ,
        libc::EDOM => DOM,
        libc::EDQUOT => DQUOT,
        libc::EEXIST => EXIST,
        libc::EFAULT => FAULT,
        libc::EFBIG => FBIG,
        libc::EHOSTUNREACH => HOSTUNREACH,
        libc::EIDRM => IDRM,
        libc::EILSEQ => ILSEQ,
        libc::EINPROGRESS => INPROGRESS,
        libc::EINTR => INTR,
        libc::EINVAL => INVAL,
        libc::EIO => IO,
        libc::EISCONN => ISCONN,
        libc::EISDIR => ISDIR,
        libc::ELOOP => LOOP,
        libc::EMFILE => MFILE,
        libc::EMLINK => MLINK,
        libc::EMSGSIZE => MSGSIZE,
        libc::EMULTIHOP => MULTIHOP,
        libc::ENAMETOOLONG => NAMETOOLONG,
        libc::ENETDOWN => NETDOWN,
        libc::ENETRESET => NETRESET,
        libc::ENETUNREACH => NETUNREACH,
        libc::ENFILE => NFILE,
        libc::ENOBUFS => NOBUFS,
        libc::ENODEV => NODEV,
        libc::ENOENT => NOENT,
        libc::ENOEXEC => NOEXEC,
        libc::ENOLCK => NOLCK,
        libc::ENOLINK => NOLINK,
        libc::ENOMEM => NOMEM,
        libc::ENOMSG => NOMSG,
        libc::ENOPROTOOPT => NOPROTOOPT,
        libc::ENOSPC => NOSPC,
        libc::ENOSYS => NOSYS,
        libc::ENOTCONN => NOTCONN,
        libc::ENOTDIR => NOTDIR,
        libc::ENOTEMPTY => NOTEMPTY,
        libc::ENOTRECOVERABLE => NOTRECOVERABLE,
        libc::ENOTSOCK => NOTSOCK,
        libc::EOPNOTSUPP => NOTSUP,
        libc::ENOTTY => NOTTY,
        libc::ENXIO => NXIO,
        libc::EOVERFLOW => OVERFLOW,
        libc::EOWNERDEAD => OWNERDEAD,
        libc::EPERM => PERM,
        libc::EPIPE => PIPE,
        libc::EPROTO => PROTO,
        libc::EPROTONOSUPPORT => PROTONOSUPPORT,
        libc::EPROTOTYPE => PROTOTYPE,
        libc::ERANGE => RANGE,
        libc::EROFS => ROFS,
        libc::ESPIPE => SPIPE,
        libc::ESRCH => SRCH,
        libc::ESTALE => STALE,
        libc::ETIMEDOUT => TIMEDOUT,
        libc::ETXTBSY => TXTBSY,
        libc::EXDEV => XDEV,
        _ => IO,
    }
}

/// The calling thread's last host errno, as a preview1 errno.
pub fn last_errno() -> Errno {
    from_host(last_host_errno())
}

pub fn last_host_errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

pub mod rights {
    pub const FD_DATASYNC: u64 = 1 << 0;
    pub const FD_READ: u64 = 1 << 1;
    pub const FD_SEEK: u64 = 1 << 2;
    pub const FD_FDSTAT_SET_FLAGS: u64 = 1 << 3;
    pub const FD_SYNC: u64 = 1 << 4;
    pub const FD_TELL: u64 = 1 << 5;
    pub const FD_WRITE: u64 = 1 << 6;
    pub const FD_ADVISE: u64 = 1 << 7;
    pub const FD_ALLOCATE: u64 = 1 << 8;
    pub const PATH_CREATE_DIRECTORY: u64 = 1 << 9;
    pub const PATH_CREATE_FILE: u64 = 1 << 10;
    pub const PATH_LINK_SOURCE: u64 = 1 << 11;
    pub const PATH_LINK_TARGET: u64 = 1 << 12;
    pub const PATH_OPEN: u64 = 1 << 13;
    pub const FD_READDIR: u64 = 1 << 14;
    pub const PATH_READLINK: u64 = 1 << 15;
    pub const PATH_RENAME_SOURCE: u64 = 1 << 16;
    pub const PATH_RENAME_TARGET: u64 = 1 << 17;
    pub const PATH_FILESTAT_GET: u64 = 1 << 18;
    pub const PATH_FILESTAT_SET_SIZE: u64 = 1 << 19;
    pub const PATH_FILESTAT_SET_TIMES: u64 = 1 << 20;
    pub const FD_FILESTAT_GET: u64 = 1 << 21;
    pub const FD_FILESTAT_SET_SIZE: u64 = 1 << 22;
    pub const FD_FILESTAT_SET_TIMES: u64 = 1 << 23;
    pub const PATH_SYMLINK: u64 = 1 << 24;
    pub const PATH_REMOVE_DIRECTORY: u64 = 1 << 25;
    pub const PATH_UNLINK_FILE: u64 = 1 << 26;
    pub const POLL_FD_READWRITE: u64 = 1 << 27;
    pub const SOCK_SHUTDOWN: u64 = 1 << 28;
    pub const SOCK_ACCEPT: u64 = 1 << 29;
    pub const ALL: u64 = (1 << 30) - 1;

    /// What a directory descriptor may hold (preopens have all of it): the calls beneath it and
    /// its own metadata; no seeking, reading or sizing of the directory itself.
    pub const DIR_BASE: u64 = PATH_CREATE_DIRECTORY
        | PATH_CREATE_FILE
        | PATH_LINK_SOURCE
        | PATH_LINK_TARGET
        | PATH_OPEN
        | FD_READDIR
        | PATH_READLINK
        | PATH_RENAME_SOURCE
        | PATH_RENAME_TARGET
        | PATH_SYMLINK
        | PATH_REMOVE_DIRECTORY
        | PATH_UNLINK_FILE
        | PATH_FILESTAT_GET
        | PATH_FILESTAT_SET_SIZE
        | PATH_FILESTAT_SET_TIMES
        | FD_FILESTAT_GET
        | FD_FILESTAT_SET_TIMES
        | FD_FDSTAT_SET_FLAGS
        | FD_SYNC
        | FD_DATASYNC;
    /// What a regular file's descriptor may hold.
    pub const FILE_BASE: u64 = FD_DATASYNC
        | FD_READ
        | FD_SEEK
        | FD_FDSTAT_SET_FLAGS
        | FD_SYNC
        | FD_TELL
        | FD_WRITE
        | FD_ADVISE
        | FD_ALLOCATE
        | FD_FILESTAT_GET
        | FD_FILESTAT_SET_SIZE
        | FD_FILESTAT_SET_TIMES
        | POLL_FD_READWRITE;
    /// What a preopen passes on to what is opened beneath it.
    pub const DIR_INHERITING: u64 = DIR_BASE | FILE_BASE;

    /// Rights whose presence on `path_open` means the file is opened for writing.
    pub const WRITE: u64 = FD_WRITE | FD_ALLOCATE | FD_FILESTAT_SET_SIZE;
    /// Rights whose presence means the file is opened for reading.
    pub const READ: u64 = FD_READ | FD_READDIR;
}

pub mod filetype {
    pub const UNKNOWN: u8 = 0;
    pub const BLOCK_DEVICE: u8 = 1;
    pub const CHARACTER_DEVICE: u8 = 2;
    pub const DIRECTORY: u8 = 3;
    pub const REGULAR_FILE: u8 = 4;
    pub const SOCKET_DGRAM: u8 = 5;
    pub const SOCKET_STREAM: u8 = 6;
    pub const SYMBOLIC_LINK: u8 = 7;
}

pub mod fdflags {
    pub const APPEND: u16 = 1 << 0;
    pub const DSYNC: u16 = 1 << 1;
    pub const NONBLOCK: u16 = 1 << 2;
    pub const RSYNC: u16 = 1 << 3;
    pub const SYNC: u16 = 1 << 4;
}

pub mod oflags {
    pub const CREAT: u16 = 1 << 0;
    pub const DIRECTORY: u16 = 1 << 1;
    pub const EXCL: u16 = 1 << 2;
    pub const TRUNC: u16 = 1 << 3;
}

pub const LOOKUP_SYMLINK_FOLLOW: u32 = 1;

pub mod fstflags {
    pub const ATIM: u16 = 1 << 0;
    pub const ATIM_NOW: u16 = 1 << 1;
    pub const MTIM: u16 = 1 << 2;
    pub const MTIM_NOW: u16 = 1 << 3;
}

pub mod whence {
    pub const SET: u8 = 0;
    pub const CUR: u8 = 1;
    pub const END: u8 = 2;
}

pub mod clockid {
    pub const REALTIME: u32 = 0;
    pub const MONOTONIC: u32 = 1;
    pub const PROCESS_CPUTIME_ID: u32 = 2;
    pub const THREAD_CPUTIME_ID: u32 = 3;
}

pub mod eventtype {
    pub const CLOCK: u8 = 0;
    pub const FD_READ: u8 = 1;
    pub const FD_WRITE: u8 = 2;
}

pub const SUBCLOCK_ABSTIME: u16 = 1;
pub const EVENTRW_HANGUP: u16 = 1;
pub const PREOPENTYPE_DIR: u8 = 0;

/// Sizes of the structures exchanged through linear memory.
pub const IOVEC_SIZE: u32 = 8;
pub const FDSTAT_SIZE: u32 = 24;
pub const FILESTAT_SIZE: u32 = 64;
pub const PRESTAT_SIZE: u32 = 8;
pub const DIRENT_SIZE: u32 = 24;
pub const SUBSCRIPTION_SIZE: u32 = 48;
pub const EVENT_SIZE: u32 = 32;
