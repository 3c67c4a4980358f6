//! Keeps wasm tasks across a containerd restart.
//!
//! When containerd 1.7 starts, it reconnects to every shim it finds and asks it for the task's
//! `Pids`; a shim that answers with no process (or an error) is "cleaning leaked shim process":
//! containerd forgets the task while the module keeps running. The task service of
//! containerd-shim-wasm 1.0.1 does not implement `Pids` and is private to that crate.
//!
//! So the shim daemon puts this proxy in front of it: the daemon's listening socket (fd 3, the
//! address containerd knows) stays with the proxy, and the library gets a private listener on
//! a socket in a directory only root can enter ([`PRIVATE_DIR`]; an abstract socket would be
//! reachable from every process in the host's network namespace, hostNetwork pods included).
//! The proxy serves only peers with the shim's own uid (`SO_PEERCRED`). Every ttrpc frame is relayed unchanged, except `Task.Pids`
//! requests, which the proxy answers itself with the task's init process, asked from the
//! library's `State`. If `State` fails, the request goes to the library as it is.
//!
//! `Task.Create` also passes through here first: the proxy adjusts the bundle's spec (see
//! [`super::bundle`]) before the library hands it to youki. Before a stopped container's
//! `Task.Delete` goes on, its cgroups are drained (see [`super::cleanup::drain_container_cgroups`]).

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::shim::{
    CreateTaskRequest, DeleteRequest, PidsRequest, PidsResponse, StateRequest, StateResponse,
};
use containerd_shim_protos::shim::shim_ttrpc::TaskClient;
use containerd_shim_protos::ttrpc::{self, Code, Response, Status};
use containerd_shim_protos::types::task::{ProcessInfo, Status as TaskStatus};

/// The listener the containerd-shim library serves on in daemon mode.
const SOCKET_FD: RawFd = 3;
const TASK_SERVICE: &str = "containerd.task.v2.Task";
/// ttrpc frames: 10-byte header, payload at most 4 MiB.
const HEADER_LEN: usize = 10;
const MAX_PAYLOAD: usize = 4 << 20;
const TYPE_REQUEST: u8 = 1;
const TYPE_RESPONSE: u8 = 2;
/// Where the library's private listeners live: root only (mode 0700).
pub const PRIVATE_DIR: &str = "/run/containerd-shim-wasmedge";

/// In the shim daemon, before the library starts serving: moves fd 3 to the proxy.
pub fn install() -> Result<()> {
    // SAFETY: fd 3 is the listener containerd-shim's `start` passed to the daemon; we take a
    // close-on-exec duplicate of it (containers must not inherit it) and replace fd 3 below.
    let public_fd = nix::fcntl::fcntl(SOCKET_FD, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10))
        .context("dup the shim socket")?;
    let public = unsafe { UnixListener::from_raw_fd(public_fd) };
    // The library unlinks the public socket on shutdown only if it can still read the bundle's
    // `address` file; containerd may already have removed the bundle by then (seen after
    // RemovePodSandbox), which left the socket in /run/containerd/s. So it is unlinked here
    // too, at exit, if the path still names the socket this daemon listened on.
    if let Some(path) = public
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf))
    {
        remove_at_exit(&PUBLIC_SOCKET, &path);
    }
    let private_path = private_socket_path(Path::new(PRIVATE_DIR))?;
    let private = UnixListener::bind(&private_path).context("bind the private task socket")?;
    remove_at_exit(&PRIVATE_SOCKET, &private_path);
    let private_addr = SocketAddr::from_pathname(&private_path)?;
    nix::unistd::dup2(private.as_raw_fd(), SOCKET_FD)
        .context("hand the private socket to the library")?;
    drop(private);
    std::thread::Builder::new()
        .name("task-proxy".into())
        .spawn(move || {
            for client in public.incoming() {
                match client {
                    Ok(client) if !peer_is_trusted(&client) => {
                        log::warn!(
                            "task proxy: refused a connection from {:?} (not the shim's uid)",
                            peer_of(&client)
                        );
                    }
                    Ok(client) => {
                        let addr = private_addr.clone();
                        let _ = std::thread::Builder::new()
                            .name("task-proxy-conn".into())
                            .spawn(move || {
                                if let Err(e) = relay(client, &addr) {
                                    log::debug!("task proxy connection ended: {e}");
                                }
                            });
                    }
                    Err(e) => log::warn!("task proxy accept: {e}"),
                }
            }
        })
        .context("start the task proxy")?;
    Ok(())
}

/// A fresh socket path for this daemon in `dir`, which is created root-only (and made so if it
/// exists); sockets of daemons that are gone are removed on the way.
fn private_socket_path(dir: &Path) -> Result<PathBuf> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("securing {}", dir.display()))?;
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_suffix(".sock"))
            .and_then(|p| p.parse::<i32>().ok());
        // SAFETY: signal 0 only checks that the process exists.
        if pid.is_some_and(|pid| unsafe { libc::kill(pid, 0) } != 0) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let path = dir.join(format!("{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    Ok(path)
}

/// A socket to unlink when the daemon exits, the inode it had when this daemon owned it, and
/// the daemon's pid (a forked child that calls `exit` must not unlink the daemon's sockets).
struct ExitUnlink {
    path: std::ffi::CString,
    dev: libc::dev_t,
    ino: libc::ino_t,
    pid: libc::pid_t,
}

static PUBLIC_SOCKET: std::sync::OnceLock<ExitUnlink> = std::sync::OnceLock::new();
static PRIVATE_SOCKET: std::sync::OnceLock<ExitUnlink> = std::sync::OnceLock::new();

/// Unlinks `path` when the daemon exits (the library ends it with `exit`), unless the path
/// names another file by then.
fn remove_at_exit(slot: &'static std::sync::OnceLock<ExitUnlink>, path: &Path) {
    extern "C" fn unlink_sockets() {
        for slot in [&PUBLIC_SOCKET, &PRIVATE_SOCKET] {
            let Some(entry) = slot.get() else { continue };
            // SAFETY: getpid has no preconditions.
            if unsafe { libc::getpid() } != entry.pid {
                continue;
            }
            // SAFETY: a valid C string and a zeroed stat buffer.
            unsafe {
                let mut st: libc::stat = std::mem::zeroed();
                if libc::lstat(entry.path.as_ptr(), &mut st) == 0
                    && st.st_dev == entry.dev
                    && st.st_ino == entry.ino
                {
                    libc::unlink(entry.path.as_ptr());
                }
            }
        }
    }
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let (Ok(path_c), Ok(meta)) = (
        std::ffi::CString::new(path.as_os_str().as_bytes()),
        std::fs::symlink_metadata(path),
    ) else {
        return;
    };
    let entry = ExitUnlink {
        path: path_c,
        dev: meta.dev() as libc::dev_t,
        ino: meta.ino() as libc::ino_t,
        pid: std::process::id() as libc::pid_t,
    };
    if slot.set(entry).is_ok() {
        static REGISTERED: std::sync::Once = std::sync::Once::new();
        // SAFETY: registers a plain function, once.
        REGISTERED.call_once(|| unsafe {
            libc::atexit(unlink_sockets);
        });
    }
}

/// containerd runs `<shim> delete` after a shim is gone. A daemon killed outright (SIGKILL, the
/// OOM killer) never unlinked its socket: remove it if nothing listens there any more. The path
/// is containerd's rule (containerd-shim's `socket_address` of containerd's address, the
/// namespace and the id); a live daemon accepts the connection and keeps its socket.
pub fn remove_dead_shim_socket(containerd_address: &str, namespace: &str, id: &str) {
    let address = containerd_shim::socket_address(containerd_address, namespace, id);
    let path = Path::new(address.strip_prefix("unix://").unwrap_or(&address));
    use std::os::unix::fs::FileTypeExt;
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if !is_socket {
        return;
    }
    match UnixStream::connect(path) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            match std::fs::remove_file(path) {
                Ok(()) => eprintln!(
                    "containerd-shim-wasmedge: removed the socket of the dead shim of {id}: {}",
                    path.display()
                ),
                Err(e) => eprintln!(
                    "containerd-shim-wasmedge: cannot remove the dead shim's socket {}: {e}",
                    path.display()
                ),
            }
        }
        Err(_) => {}
    }
}

fn peer_of(stream: &UnixStream) -> Option<(u32, i32)> {
    let cred =
        nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials).ok()?;
    Some((cred.uid(), cred.pid()))
}

/// containerd runs as the shim's uid (root): nobody else may drive its tasks.
fn peer_is_trusted(stream: &UnixStream) -> bool {
    peer_of(stream).is_some_and(|(uid, _)| uid == nix::unistd::geteuid().as_raw())
}

struct Frame {
    stream_id: u32,
    kind: u8,
    flags: u8,
    payload: Vec<u8>,
}

fn read_frame(from: &mut impl Read) -> io::Result<Frame> {
    let mut header = [0u8; HEADER_LEN];
    from.read_exact(&mut header)?;
    let len = u32::from_be_bytes(header[0..4].try_into().unwrap()) as usize;
    if len > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("ttrpc frame of {len} bytes"),
        ));
    }
    let mut payload = vec![0u8; len];
    from.read_exact(&mut payload)?;
    Ok(Frame {
        stream_id: u32::from_be_bytes(header[4..8].try_into().unwrap()),
        kind: header[8],
        flags: header[9],
        payload,
    })
}

fn write_frame(to: &Mutex<UnixStream>, frame: &Frame) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(HEADER_LEN + frame.payload.len());
    bytes.extend_from_slice(&(frame.payload.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&frame.stream_id.to_be_bytes());
    bytes.push(frame.kind);
    bytes.push(frame.flags);
    bytes.extend_from_slice(&frame.payload);
    // One write per frame under the lock: frames from both directions never interleave.
    to.lock()
        .map_err(|_| io::Error::other("poisoned"))?
        .write_all(&bytes)
}

/// Relays one containerd connection to the library, answering `Pids` on the way.
fn relay(client: UnixStream, private: &SocketAddr) -> Result<()> {
    let backend = UnixStream::connect_addr(private)?;
    let to_client = Arc::new(Mutex::new(client.try_clone()?));
    let to_backend = Arc::new(Mutex::new(backend.try_clone()?));
    let replies = {
        let to_client = to_client.clone();
        let mut backend = backend.try_clone()?;
        std::thread::spawn(move || {
            while let Ok(frame) = read_frame(&mut backend) {
                if write_frame(&to_client, &frame).is_err() {
                    break;
                }
            }
            let _ = to_client
                .lock()
                .map(|c| c.shutdown(std::net::Shutdown::Both));
        })
    };
    let mut client = client;
    let mut state_client: Option<TaskClient> = None;
    while let Ok(frame) = read_frame(&mut client) {
        match task_request(&frame) {
            Some(TaskRequest::Create(create)) => prepare_bundle(&create),
            Some(TaskRequest::Delete(delete)) if delete.exec_id.is_empty() => {
                // On a thread of its own: other requests on this connection must not wait.
                let (to_backend, private, mut client) =
                    (to_backend.clone(), private.clone(), state_client.clone());
                std::thread::spawn(move || {
                    drain_before_delete(&delete.id, &private, &mut client);
                    let _ = write_frame(&to_backend, &frame);
                });
                continue;
            }
            Some(TaskRequest::Pids(pids)) => {
                if let Some(answer) = answer_pids(&frame, &pids, private, &mut state_client) {
                    write_frame(&to_client, &answer)?;
                    continue;
                }
            }
            _ => {}
        }
        write_frame(&to_backend, &frame)?;
    }
    let _ = backend.shutdown(std::net::Shutdown::Both);
    let _ = replies.join();
    Ok(())
}

/// The task requests the proxy takes part in.
enum TaskRequest {
    Create(CreateTaskRequest),
    Delete(DeleteRequest),
    Pids(PidsRequest),
}

/// The request in a frame, if it is one of [`TaskRequest`].
fn task_request(frame: &Frame) -> Option<TaskRequest> {
    if frame.kind != TYPE_REQUEST {
        return None;
    }
    let request = ttrpc::Request::parse_from_bytes(&frame.payload).ok()?;
    if request.service != TASK_SERVICE {
        return None;
    }
    match request.method.as_str() {
        "Create" => CreateTaskRequest::parse_from_bytes(&request.payload)
            .ok()
            .map(TaskRequest::Create),
        "Delete" => DeleteRequest::parse_from_bytes(&request.payload)
            .ok()
            .map(TaskRequest::Delete),
        "Pids" => PidsRequest::parse_from_bytes(&request.payload)
            .ok()
            .map(TaskRequest::Pids),
        _ => None,
    }
}

/// Adjusts the bundle before the library creates the container. A spec the proxy cannot read
/// goes on as it is: the library then reports its own, more precise, error.
fn prepare_bundle(create: &CreateTaskRequest) {
    match super::bundle::prepare(std::path::Path::new(&create.bundle)) {
        Ok(changes) => {
            for change in changes {
                log::info!("container {}: {change}", create.id);
            }
        }
        Err(e) => log::warn!("container {}: bundle left as it is: {e:#}", create.id),
    }
}

/// Drains the cgroups of container `id` if its task has stopped (a running one is left to
/// the library, which refuses or kills as the request says). Bundles are siblings of the
/// daemon's working directory, the first container's bundle.
fn drain_before_delete(id: &str, private: &SocketAddr, client: &mut Option<TaskClient>) {
    match task_state(id, private, client) {
        Some(state) if state.status.enum_value() == Ok(TaskStatus::STOPPED) => {}
        _ => return,
    }
    let Some(bundle) = std::env::current_dir()
        .ok()
        .and_then(|cwd| Some(cwd.parent()?.join(id)))
    else {
        return;
    };
    match super::cleanup::drain_container_cgroups(&bundle, id, std::time::Duration::from_secs(10)) {
        Ok(true) => {}
        Ok(false) => log::warn!(
            "container {id}: processes still in its cgroups 10 s after SIGKILL; deleting anyway"
        ),
        Err(e) => log::debug!("container {id}: cgroups not drained: {e:#}"),
    }
}

/// The library's `State` of task `id`, through `client` (connected on first use, dropped
/// after a failure so that the next call reconnects).
fn task_state(
    id: &str,
    private: &SocketAddr,
    client: &mut Option<TaskClient>,
) -> Option<StateResponse> {
    if client.is_none() {
        let stream = UnixStream::connect_addr(private).ok()?;
        let fd: OwnedFd = stream.into();
        *client = Some(TaskClient::new(ttrpc::Client::new(fd.into_raw_fd()).ok()?));
    }
    let request = StateRequest {
        id: id.to_string(),
        ..Default::default()
    };
    match client
        .as_ref()?
        .state(ttrpc::context::with_timeout(5_000_000_000), &request)
    {
        Ok(state) => Some(state),
        Err(e) => {
            log::warn!("task proxy: State of {id} failed ({e})");
            *client = None;
            None
        }
    }
}

/// The response frame to a `Pids` request: the task's init process, from the library's
/// `State`; None (the request goes on to the library) when that is unknown.
fn answer_pids(
    frame: &Frame,
    pids: &PidsRequest,
    private: &SocketAddr,
    client: &mut Option<TaskClient>,
) -> Option<Frame> {
    let state = task_state(&pids.id, private, client).filter(|state| state.pid > 0)?;
    let answer = PidsResponse {
        processes: vec![ProcessInfo {
            pid: state.pid,
            ..Default::default()
        }],
        ..Default::default()
    };
    let response = Response {
        status: MessageField::some(Status {
            code: Code::OK.into(),
            ..Default::default()
        }),
        payload: answer.write_to_bytes().ok()?,
        ..Default::default()
    };
    Some(Frame {
        stream_id: frame.stream_id,
        kind: TYPE_RESPONSE,
        flags: 0,
        payload: response.write_to_bytes().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connects to `path` from a child running as uid/gid 65534 and keeps the connection open
    /// until the parent has looked at it.
    fn connect_as_nobody(path: &Path) -> i32 {
        // SAFETY: the child makes plain syscalls only, then _exits.
        match unsafe { libc::fork() } {
            0 => unsafe {
                if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                    libc::_exit(2);
                }
                let ok = UnixStream::connect(path).map(|s| {
                    std::thread::sleep(std::time::Duration::from_millis(500));
                    drop(s)
                });
                libc::_exit(if ok.is_ok() { 0 } else { 1 })
            },
            child => child,
        }
    }

    #[test]
    fn only_the_shims_own_uid_is_trusted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        let child = connect_as_nobody(&path);
        let (stranger, _) = listener.accept().unwrap();
        assert_eq!(peer_of(&stranger).map(|(uid, _)| uid), Some(65534));
        assert!(!peer_is_trusted(&stranger));
        let _own = UnixStream::connect(&path).unwrap();
        let (own, _) = listener.accept().unwrap();
        assert!(peer_is_trusted(&own));
        // SAFETY: reaps our own child.
        unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
    }

    #[test]
    fn private_sockets_live_in_a_root_only_directory() {
        let parent = tempfile::tempdir().unwrap();
        // Only the private directory's own mode may keep others out.
        std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let dir = parent.path().join("private");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        // A socket of a daemon that is gone, and one of a live process (this one).
        std::fs::write(dir.join("999999999.sock"), b"").unwrap();
        let path = private_socket_path(&dir).unwrap();
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700,
            "made root-only"
        );
        assert!(!dir.join("999999999.sock").exists(), "stale socket removed");
        assert_eq!(path, dir.join(format!("{}.sock", std::process::id())));
        let _listener = UnixListener::bind(&path).unwrap();
        let child = connect_as_nobody(&path);
        let mut status = 0;
        // SAFETY: reaps our own child.
        unsafe { libc::waitpid(child, &mut status, 0) };
        assert_eq!(
            libc::WEXITSTATUS(status),
            1,
            "an unprivileged process cannot reach the socket"
        );
    }
}
