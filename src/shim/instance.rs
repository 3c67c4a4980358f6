//! The shim's task instance (`containerd_shimkit::sandbox::Instance`): one per container.
//!
//! `new` runs in the daemon once containerd-shimkit has mounted the rootfs: it prepares the
//! [`Launch`] (see [`super::launch`]), then has a process forked from the zygote build the
//! youki container around an [`Executor`] that carries it. That process keeps the youki
//! container for `start`, `kill` and `delete`.

use std::cell::RefCell;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use containerd_shim::monitor::{monitor_subscribe, ExitEvent, Subject, Topic};
use containerd_shimkit::sandbox::sync::WaitableCell;
use containerd_shimkit::sandbox::{Error, Instance, InstanceConfig};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::signal::Signal;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use oci_spec::runtime::Spec;
use tokio::io::unix::AsyncFd;
use zygote::Zygote;

use super::executor::Executor;
use super::launch::{self, Launch};
use super::oci_layers;

/// The runtime's name: youki's state lives in `<state root>/wasmedge`.
pub const RUNTIME_NAME: &str = "wasmedge";

pub struct WasmEdgeInstance {
    id: String,
    /// The process (forked from the zygote) that holds this container's youki state.
    keeper: Zygote,
    exit_code: WaitableCell<(u32, DateTime<Utc>)>,
}

thread_local! {
    /// In a keeper process: its youki container.
    static CONTAINER: RefCell<Option<Container>> = const { RefCell::new(None) };
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Build {
    id: String,
    cfg: InstanceConfig,
    launch: Launch,
}

fn build(arg: Build) -> Result<(), String> {
    let Build { id, cfg, launch } = arg;
    let container = (|| -> anyhow::Result<Container> {
        let rootdir = cfg.determine_rootdir(RUNTIME_NAME)?;
        let mut builder = ContainerBuilder::new(id, SyscallType::Linux)
            .with_executor(Executor(Arc::new(launch)))
            .with_root_path(rootdir)?;
        if let Ok(f) = cfg.open_stdin() {
            builder = builder.with_stdin(f);
        }
        if let Ok(f) = cfg.open_stdout() {
            builder = builder.with_stdout(f);
        }
        if let Ok(f) = cfg.open_stderr() {
            builder = builder.with_stderr(f);
        }
        Ok(builder
            .as_init(&cfg.bundle)
            .as_sibling(true)
            .with_systemd(cfg.config.systemd_cgroup)
            .build()?)
    })()
    .map_err(|e| format!("{e:#}"))?;
    CONTAINER.with_borrow_mut(|c| *c = Some(container));
    Ok(())
}

/// Runs `f` on the keeper's youki container.
fn with_container<T>(f: impl FnOnce(&mut Container) -> anyhow::Result<T>) -> Result<T, String> {
    CONTAINER.with_borrow_mut(|c| match c.as_mut() {
        Some(c) => f(c).map_err(|e| format!("{e:#}")),
        None => Err("container not built".to_string()),
    })
}

fn pid(_: ()) -> Result<i32, String> {
    with_container(|c| {
        c.pid()
            .map(|p| p.as_raw())
            .ok_or_else(|| anyhow::anyhow!("container has no pid"))
    })
}

fn start(_: ()) -> Result<(), String> {
    with_container(|c| Ok(c.start()?))
}

fn kill(signal: u32) -> Result<(), String> {
    with_container(|c| {
        let signal = Signal::try_from(signal as i32)
            .map_err(|e| anyhow::anyhow!("invalid signal {signal}: {e}"))?;
        Ok(c.kill(signal, true)?)
    })
}

fn delete(_: ()) -> Result<(), String> {
    with_container(|c| Ok(c.delete(true)?))
}

impl WasmEdgeInstance {
    fn keeper_run<A, T>(&self, f: fn(A) -> Result<T, String>, arg: A) -> Result<T, Error>
    where
        A: serde::Serialize + serde::de::DeserializeOwned + 'static,
        T: serde::Serialize + serde::de::DeserializeOwned + 'static,
    {
        match self.keeper.try_run(f, arg) {
            Ok(result) => result.map_err(Error::Others),
            Err(e) => Err(Error::Others(format!(
                "container process of {}: {e}",
                self.id
            ))),
        }
    }
}

impl Instance for WasmEdgeInstance {
    async fn new(id: String, cfg: &InstanceConfig) -> Result<Self, Error> {
        let spec = Spec::load(cfg.bundle.join("config.json"))
            .map_err(|e| Error::InvalidArgument(format!("could not load runtime spec: {e}")))?;
        let max_bytes = super::node().config.max_module_bytes;
        let layers =
            oci_layers::wasm_layers(&cfg.containerd_address, &cfg.namespace, &id, max_bytes)
                .await
                .unwrap_or_else(|e| {
                    log::warn!(
                "container {id}: no wasm layers read from containerd ({e:#}); using the rootfs"
            );
                    vec![]
                });
        let bundle = cfg.bundle.clone();
        // Reading and compiling block: keep them off the runtime's worker threads.
        let launch = tokio::task::spawn_blocking(move || launch::prepare(&bundle, &spec, layers))
            .await
            .map_err(|e| Error::Others(format!("preparing container {id}: {e}")))?;
        let keeper = Zygote::global().spawn();
        match keeper.try_run(
            build,
            Build {
                id: id.clone(),
                cfg: cfg.clone(),
                launch,
            },
        ) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Error::Others(format!("creating container {id}: {e}"))),
            Err(e) => return Err(Error::Others(format!("creating container {id}: {e}"))),
        }
        Ok(WasmEdgeInstance {
            id,
            keeper,
            exit_code: WaitableCell::new(),
        })
    }

    async fn start(&self) -> Result<u32, Error> {
        // An exit code exists by the time this returns, even if something below panics.
        let guard = self.exit_code.clone().set_guard_with(|| (137, Utc::now()));
        let pid = self.keeper_run(pid, ())?;
        // Before `start`, so that the exit cannot be missed.
        let exit =
            ExitWatch::new(pid).map_err(|e| Error::Others(format!("watching {}: {e}", self.id)))?;
        self.keeper_run(start, ())?;
        let exit_code = self.exit_code.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let status = match exit.wait().await {
                Ok(WaitStatus::Exited(_, code)) => code,
                Ok(WaitStatus::Signaled(_, sig, _)) => 128 + sig as i32,
                Ok(other) => {
                    log::error!("unexpected wait status {other:?}");
                    137
                }
                Err(e) => {
                    log::error!("waiting for the container failed: {e}");
                    137
                }
            };
            let _ = exit_code.set((status as u32, Utc::now()));
        });
        Ok(pid as u32)
    }

    async fn kill(&self, signal: u32) -> Result<(), Error> {
        self.keeper_run(kill, signal)
    }

    async fn delete(&self) -> Result<(), Error> {
        self.keeper_run(delete, ())
    }

    async fn wait(&self) -> (u32, DateTime<Utc>) {
        *self.exit_code.wait().await
    }
}

/// Waits for a container's init process (a sibling of the keeper, so a child of the daemon)
/// through a pidfd; when containerd-shim's reaper collected it first, its exit code comes from
/// the reaper's events.
struct ExitWatch {
    fd: OwnedFd,
    pid: i32,
    events: containerd_shim::monitor::Subscription,
}

impl ExitWatch {
    fn new(pid: i32) -> std::io::Result<Self> {
        let events = monitor_subscribe(Topic::Pid).map_err(std::io::Error::other)?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, libc::PIDFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor owned by nobody else.
        Ok(ExitWatch {
            fd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
            pid,
            events,
        })
    }

    async fn wait(self) -> std::io::Result<WaitStatus> {
        // SAFETY: the AsyncFd owns the pidfd for as long as it is registered.
        let fd = unsafe { AsyncFd::register(self.fd) }.map_err(|e| e.into_parts().1)?;
        loop {
            // Checked before every wait: readiness is edge-triggered.
            match waitid(
                Id::PIDFd(fd.as_fd()),
                WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG,
            ) {
                Ok(WaitStatus::StillAlive) => {
                    let _ = fd.readable().await?;
                }
                Ok(status) => return Ok(status),
                Err(nix::errno::Errno::ECHILD) => {
                    let (pid, events) = (self.pid, self.events);
                    return tokio::task::spawn_blocking(move || {
                        while let Ok(ExitEvent { subject, exit_code }) =
                            events.rx.recv_timeout(Duration::from_secs(2))
                        {
                            if matches!(subject, Subject::Pid(p) if p == pid) {
                                return Ok(WaitStatus::Exited(
                                    nix::unistd::Pid::from_raw(pid),
                                    exit_code,
                                ));
                            }
                        }
                        Err(std::io::Error::other("exit status lost"))
                    })
                    .await
                    .map_err(std::io::Error::other)?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}
