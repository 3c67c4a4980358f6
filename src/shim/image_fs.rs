//! Reading a container's files from the shim daemon, before the container exists.
//!
//! The image is untrusted: its files may be symlinks to anywhere (`/proc/self/fd/N/..`, `/`,
//! `../../..`). Every lookup is made with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`
//! from the rootfs (or from a bind mount's source, for paths on a volume), so a symlink
//! resolves as if that directory were `/` and never reaches the node's files.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::Spec;

/// Searched for a bare program name when the spec sets no `PATH` (runc's default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The container's file tree as the spec lays it out: the rootfs plus bind mounts.
pub struct ImageFs {
    root: OwnedFd,
    /// (mount point in the container, source on the node), longest mount point first.
    binds: Vec<(PathBuf, PathBuf)>,
    cwd: PathBuf,
    path: Vec<PathBuf>,
}

/// A file of the container, opened read-only.
pub struct ImageFile {
    /// Its path in the container.
    pub path: PathBuf,
    pub file: File,
    pub mode: u32,
    pub size: u64,
}

impl ImageFs {
    pub fn open(bundle: &Path, spec: &Spec) -> io::Result<Self> {
        let rootfs = spec
            .root()
            .as_ref()
            .map(|r| r.path().clone())
            .unwrap_or_else(|| PathBuf::from("rootfs"));
        let root = open_path(&bundle.join(rootfs))?;
        let mut binds: Vec<(PathBuf, PathBuf)> = spec
            .mounts()
            .iter()
            .flatten()
            .filter(|m| {
                m.typ().as_deref() == Some("bind")
                    || m.options()
                        .iter()
                        .flatten()
                        .any(|o| o == "bind" || o == "rbind")
            })
            .filter_map(|m| Some((normalize(m.destination()), m.source().clone()?)))
            .collect();
        binds.sort_by_key(|(dest, _)| std::cmp::Reverse(dest.components().count()));
        let process = spec.process().as_ref();
        let cwd = process
            .map(|p| p.cwd().clone())
            .unwrap_or_else(|| PathBuf::from("/"));
        let path_var = process
            .and_then(|p| p.env().as_ref())
            .and_then(|env| {
                env.iter()
                    .find_map(|e| e.strip_prefix("PATH=").map(str::to_string))
            })
            .unwrap_or_else(|| DEFAULT_PATH.to_string());
        let path = path_var
            .split(':')
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .collect();
        Ok(ImageFs {
            root,
            binds,
            cwd,
            path,
        })
    }

    /// The file a program name refers to, as the container resolves it: a name with a `/` is
    /// taken relative to the working directory, a bare name is looked up in `PATH`, then in the
    /// working directory. Only regular files count.
    pub fn find(&self, name: &str) -> Option<ImageFile> {
        if name.is_empty() {
            return None;
        }
        let candidates: Vec<PathBuf> = if name.contains('/') {
            vec![self.cwd.join(name)]
        } else {
            self.path
                .iter()
                .chain(std::iter::once(&self.cwd))
                .map(|dir| self.cwd.join(dir).join(name))
                .collect()
        };
        candidates
            .into_iter()
            .find_map(|c| self.open_file(&normalize(&c)).ok())
    }

    /// Whether `path` (absolute, in the container) is a directory there.
    pub fn is_dir(&self, path: &Path) -> bool {
        self.open_at(&normalize(path))
            .and_then(|f| f.metadata())
            .map(|m| m.is_dir())
            .unwrap_or(false)
    }

    /// Opens the regular file at `path` (absolute, in the container).
    fn open_file(&self, path: &Path) -> io::Result<ImageFile> {
        let file = self.open_at(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        use std::os::unix::fs::MetadataExt;
        Ok(ImageFile {
            path: path.to_path_buf(),
            mode: meta.mode(),
            size: meta.len(),
            file,
        })
    }

    /// Opens `path` (absolute and normalized, in the container) read-only.
    fn open_at(&self, path: &Path) -> io::Result<File> {
        let (dir, rest) = match self.binds.iter().find(|(dest, _)| path.starts_with(dest)) {
            Some((dest, source)) => {
                let rest = path.strip_prefix(dest).unwrap_or(Path::new(""));
                if rest.as_os_str().is_empty() {
                    // A single-file bind mount: the source itself (a node path kubelet chose).
                    (
                        open_path(source.parent().unwrap_or(Path::new("/")))?,
                        PathBuf::from(source.file_name().unwrap_or_default()),
                    )
                } else {
                    (open_path(source)?, rest.to_path_buf())
                }
            }
            None => (
                self.root.try_clone()?,
                path.strip_prefix("/").unwrap_or(path).to_path_buf(),
            ),
        };
        // O_PATH: nothing is opened for reading yet (a FIFO would block, a device would be
        // touched); regular files are reopened through the descriptor by `open_file`'s caller.
        let fd = open_in_root(dir.as_raw_fd(), &rest, libc::O_PATH)?;
        reopen_if_regular(fd)
    }
}

impl ImageFile {
    /// The whole file, refused above `limit` bytes.
    pub fn read_all(&mut self, limit: u64) -> io::Result<Vec<u8>> {
        if self.size > limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} bytes, more than the node's max_module_bytes ({limit})",
                    self.size
                ),
            ));
        }
        let mut bytes = Vec::with_capacity(self.size as usize);
        (&mut self.file).take(limit + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("more than the node's max_module_bytes ({limit})"),
            ));
        }
        Ok(bytes)
    }

    /// The first bytes (fewer if the file is shorter).
    pub fn head(&self) -> [u8; 4] {
        let mut head = [0u8; 4];
        let _ = std::os::unix::fs::FileExt::read_at(&self.file, &mut head, 0);
        head
    }

    /// An ELF binary or a `#!` script with an execute bit: something youki would exec.
    pub fn is_native_executable(&self) -> bool {
        let head = self.head();
        (head == *b"\x7fELF" || head.starts_with(b"#!")) && self.mode & 0o111 != 0
    }
}

/// A readable descriptor for an `O_PATH` one that names a regular file; other kinds are
/// returned as they are (enough for `metadata`).
fn reopen_if_regular(fd: OwnedFd) -> io::Result<File> {
    let path_only = File::from(fd);
    if !path_only.metadata()?.is_file() {
        return Ok(path_only);
    }
    // The daemon's own /proc names the descriptor; reopening it cannot resolve anything else.
    let c = cstring(Path::new(&format!(
        "/proc/self/fd/{}",
        path_only.as_raw_fd()
    )))?;
    // SAFETY: valid C string.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// `a/./b/../c` → `/a/c`, without touching the file system (`..` stops at `/`).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

/// An `O_PATH` descriptor of a node directory (a trusted path).
fn open_path(path: &Path) -> io::Result<OwnedFd> {
    let c = cstring(path)?;
    // SAFETY: valid C string.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `struct open_how` of openat2(2) (the libc one is `#[non_exhaustive]`).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// openat2 with `dirfd` as the root of the lookup: absolute symlinks and `..` stay inside it,
/// magic links (`/proc/*/fd/*`, …) are refused.
pub fn open_in_root(dirfd: RawFd, path: &Path, flags: i32) -> io::Result<OwnedFd> {
    let c = cstring(if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    })?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u32 as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    loop {
        // SAFETY: a valid C string and an open_how of the size passed.
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
        let e = io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(libc::EINTR) | Some(libc::EAGAIN)) {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{MountBuilder, ProcessBuilder, RootBuilder, SpecBuilder};
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn spec(cwd: &str, env: &[&str], mounts: Vec<oci_spec::runtime::Mount>) -> Spec {
        SpecBuilder::default()
            .root(RootBuilder::default().path("rootfs").build().unwrap())
            .process(
                ProcessBuilder::default()
                    .cwd(cwd)
                    .env(env.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                    .build()
                    .unwrap(),
            )
            .mounts(mounts)
            .build()
            .unwrap()
    }

    #[test]
    fn symlinks_resolve_inside_the_rootfs() {
        let bundle = tempfile::tempdir().unwrap();
        let rootfs = bundle.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("app")).unwrap();
        std::fs::write(rootfs.join("app/m.wasm"), b"\0asm\x01\0\0\0").unwrap();
        std::fs::write(bundle.path().join("secret"), b"node file").unwrap();
        symlink("/app/m.wasm", rootfs.join("app/abs")).unwrap();
        symlink("../../../secret", rootfs.join("app/up")).unwrap();
        symlink("/proc/self/fd/0", rootfs.join("app/magic")).unwrap();
        symlink("/proc/self/root/etc/passwd", rootfs.join("app/proc")).unwrap();
        let fs = ImageFs::open(bundle.path(), &spec("/", &[], vec![])).unwrap();
        assert_eq!(
            fs.find("/app/abs").unwrap().read_all(100).unwrap(),
            b"\0asm\x01\0\0\0"
        );
        assert!(
            fs.find("/app/up").is_none(),
            "`..` must not leave the rootfs"
        );
        assert!(fs.find("/app/magic").is_none(), "magic links are refused");
        assert!(
            fs.find("/app/proc").is_none(),
            "/proc of the rootfs is empty, not the node's"
        );
        assert!(fs.find("/app").is_none(), "directories are not files");
    }

    #[test]
    fn bare_names_search_path_then_cwd_and_volumes_resolve_in_their_source() {
        let bundle = tempfile::tempdir().unwrap();
        let rootfs = bundle.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        std::fs::create_dir_all(rootfs.join("work")).unwrap();
        std::fs::write(rootfs.join("bin/tool"), b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            rootfs.join("bin/tool"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::fs::write(rootfs.join("work/here.wasm"), b"\0asm").unwrap();
        let volume = tempfile::tempdir().unwrap();
        std::fs::write(volume.path().join("m.wasm"), b"\0asm volume").unwrap();
        let mount = MountBuilder::default()
            .destination("/data")
            .typ("bind")
            .source(volume.path())
            .options(vec!["rbind".to_string()])
            .build()
            .unwrap();
        let fs = ImageFs::open(bundle.path(), &spec("/work", &["PATH=/bin"], vec![mount])).unwrap();
        let tool = fs.find("tool").unwrap();
        assert_eq!(tool.path, PathBuf::from("/bin/tool"));
        assert!(tool.is_native_executable());
        let here = fs.find("here.wasm").unwrap();
        assert_eq!(here.path, PathBuf::from("/work/here.wasm"));
        assert!(!here.is_native_executable());
        assert_eq!(
            fs.find("/data/m.wasm").unwrap().read_all(100).unwrap(),
            b"\0asm volume"
        );
        assert!(fs.find("/data/../work/here.wasm").is_some());
        let err = fs.find("/work/here.wasm").unwrap().read_all(2).unwrap_err();
        assert!(err.to_string().contains("max_module_bytes"), "{err}");
    }
}
