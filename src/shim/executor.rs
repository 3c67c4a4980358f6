//! The container side: youki's init process, after `pivot_root`, runs what the daemon
//! prepared (see [`super::launch`]).
//!
//! Before anything of the module runs, every descriptor above stderr is closed: whatever the
//! shim daemon held when the zygote was forked (its ttrpc socket, the log FIFO, pipes) would
//! otherwise stay open in the container, and any of them is a way out.

use std::sync::Arc;

use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{
    Executor as WorkloadExecutor, ExecutorError, ExecutorSetEnvsError, ExecutorValidationError,
};
use oci_spec::runtime::Spec;

use super::launch::{Launch, WasmLaunch};
use crate::engine::slot::SlotSpec;
use crate::engine::wasi::{self, BoundDir, Preopen};
use crate::engine::{self, exit_code, stack, RunSpec};
use crate::http::{self, Mode, Served};

/// See [`Executor::validate`].
const INTERMEDIATE_HEAD_START: std::time::Duration = std::time::Duration::from_millis(20);

#[derive(Clone)]
pub struct Executor(pub Arc<Launch>);

impl WorkloadExecutor for Executor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        match &*self.0 {
            Launch::Native => DefaultExecutor {}.exec(spec),
            Launch::Refused { message, exit_code } => {
                enter_sandbox();
                std::process::exit(report_failure(message, *exit_code))
            }
            Launch::Wasm(launch) => {
                enter_sandbox();
                std::process::exit(run(launch))
            }
        }
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        // youki 0.6 races here: right after `validate` the init process reports InitReady on
        // the channel where the intermediate process still has to report IntermediateReady,
        // and the main process fails the create ("received unexpected message: InitReady,
        // expected: IntermediateReady(0)") if the intermediate was descheduled in between.
        // Seen on loaded nodes, for wasm containers and pod sandboxes (native) alike; give the
        // intermediate a head start in both.
        std::thread::sleep(INTERMEDIATE_HEAD_START);
        match &*self.0 {
            Launch::Native => DefaultExecutor {}.validate(spec),
            _ => Ok(()),
        }
    }

    /// A module gets only the policy's variables, through its WASI environment, never the
    /// process's.
    fn setup_envs(
        &self,
        envs: std::collections::HashMap<String, String>,
    ) -> Result<(), ExecutorSetEnvsError> {
        match &*self.0 {
            Launch::Native => DefaultExecutor {}.setup_envs(envs),
            _ => Ok(()),
        }
    }
}

/// Leaves the container's init process with its stdio only. Logging stops first: the shim
/// logger's descriptor (the daemon's log FIFO) is closed with the rest.
fn enter_sandbox() {
    log::set_max_level(log::LevelFilter::Off);
    make_stdin_read_only();
    // SAFETY: closes descriptors only; nothing of ours above stderr is used after this.
    let closed = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if closed != 0 {
        // close_range is in every kernel youki supports; refuse to run rather than leak.
        eprintln!(
            "cannot close inherited descriptors: {}",
            std::io::Error::last_os_error()
        );
        std::process::exit(exit_code::LOAD_FAILED);
    }
}

fn run(launch: &WasmLaunch) -> i32 {
    let mut run = launch.run.clone();
    run.preopens = match bind_preopens(std::mem::take(&mut run.preopens)) {
        Ok(preopens) => preopens,
        Err(message) => {
            exit_on_termination_signals();
            return report_failure(&message, exit_code::BAD_POLICY);
        }
    };
    run.disk = disk_quota(&run.preopens, run.max_disk_bytes);
    let module = match launch.module.load() {
        Ok(module) => module,
        Err(e) => {
            exit_on_termination_signals();
            return report_failure(&e.to_string(), exit_code::LOAD_FAILED);
        }
    };
    if let Some(anchor) = &launch.fault_anchor {
        // A failure leaves deep recursion fatal to the container, nothing worse.
        if let Err(e) = anchor
            .load()
            .map_err(|e| e.to_string())
            .and_then(stack::install)
        {
            eprintln!(
                "warning: stack guard not installed ({e}); deep recursion ends the container"
            );
        }
    }
    match &launch.mode {
        Mode::Command => {
            exit_on_termination_signals();
            // On a thread of its own like every call of HTTP mode (a guarded stack, see
            // `engine::stack`).
            let timeout = launch.timeout;
            let module = std::sync::Arc::new(module);
            let ran = stack::spawn_call_thread("wasm-main".into(), move || {
                run_command(&module, run, timeout)
            })
            .map(|t| t.join());
            match ran {
                Ok(Ok(code)) => code,
                Ok(Err(_)) => {
                    report_failure("the module's thread panicked", exit_code::LOAD_FAILED)
                }
                Err(e) => report_failure(
                    &format!("cannot start the module's thread: {e}"),
                    exit_code::LOAD_FAILED,
                ),
            }
        }
        Mode::Http(settings) => {
            let slot = SlotSpec {
                run,
                timeout: launch.timeout,
            };
            // A thread of its own: the HTTP runtime must not nest in another executor.
            let settings = settings.clone();
            let served =
                std::thread::spawn(move || http::serve(settings, slot, move || Ok(module))).join();
            match served {
                Ok(Served::Stopped { drained }) => {
                    if !drained {
                        eprintln!("drain timeout passed with requests in flight");
                    }
                    0
                }
                Ok(Served::Failed { message, exit_code }) => report_failure(&message, exit_code),
                Err(_) => report_failure("the HTTP server panicked", exit_code::LOAD_FAILED),
            }
        }
    }
}

/// Opens the policy's directories in the container, where its mounts are in place. One the
/// container does not have is left out (the module does not see it); one that is no directory
/// or resolves into /proc, /sys, /dev or out through a magic link refuses the start.
fn bind_preopens(preopens: Vec<Preopen>) -> Result<Vec<Preopen>, String> {
    let mut bound = Vec::with_capacity(preopens.len());
    for mut preopen in preopens {
        match wasi::bind_preopen_dir(&preopen.host) {
            Ok(fd) => {
                preopen.bound = Some(BoundDir::new(fd));
                bound.push(preopen);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(format!(
                    "sandbox policy: {e} (guest path {}); grant a real directory of the image or a volume in wasmedge.io/allowed-dirs",
                    preopen.guest
                ))
            }
        }
    }
    Ok(bound)
}

/// The quota of the read-write preopens, counted from what they hold now (before the module
/// runs). A start over the quota is allowed, so a module can clean up; it is said on stderr.
fn disk_quota(preopens: &[Preopen], limit: u64) -> Option<wasi::DiskQuota> {
    use std::os::fd::AsFd;
    let dirs: Vec<_> = preopens
        .iter()
        .filter(|p| !p.readonly)
        .filter_map(|p| p.bound.as_ref().map(|b| b.as_fd()))
        .collect();
    if dirs.is_empty() {
        return None;
    }
    let (quota, usage) = wasi::DiskQuota::measure(limit, &dirs);
    if !usage.complete {
        eprintln!(
            "warning: disk quota: could not count all of the read-write directories ({} names, {} bytes counted); the quota applies to what was counted plus what the module adds",
            usage.entries, usage.bytes
        );
    }
    if usage.bytes > limit {
        eprintln!(
            "warning: disk quota: the read-write directories hold {} bytes, more than max_disk_bytes {limit}; writes that add bytes fail (EDQUOT) until the module removes files; raise wasmedge.io/max-disk-bytes",
            usage.bytes
        );
    }
    Some(quota)
}

/// Command mode: one run of the entry function; its exit code is the container's.
fn run_command(module: &wasmedge_sdk::Module, run: RunSpec, timeout: std::time::Duration) -> i32 {
    start_backstop(timeout);
    let report = match engine::run_command(module, run, timeout) {
        Ok(report) => report,
        Err(e) => {
            return report_failure(
                &format!("failed to start module: {e:#}"),
                exit_code::LOAD_FAILED,
            )
        }
    };
    for violation in &report.violations {
        eprintln!("{violation}");
    }
    match report.outcome.failure_message() {
        None => report.outcome.exit_code(),
        Some(message) => report_failure(&message, report.outcome.exit_code()),
    }
}

/// How long after the time limit the backstop ends the process.
const BACKSTOP_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// The run's deadline stops guest code and host calls (see `engine::run_command`); what it
/// cannot reach, such as a start function looping during instantiation, this watchdog thread
/// ends shortly after, by ending the process.
fn start_backstop(timeout: std::time::Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(timeout + BACKSTOP_GRACE);
        let timeout_ms = timeout.as_millis() as u64;
        report_failure(
            &engine::time_limit_message(timeout_ms),
            exit_code::TIME_LIMIT,
        );
        // SAFETY: _exit ends the process without running destructors, as intended here.
        unsafe { libc::_exit(exit_code::TIME_LIMIT) }
    });
}

/// Kubernetes shows this file's content as the container's termination message.
const TERMINATION_LOG: &str = "/dev/termination-log";

/// Writes the reason to the container's stderr (`ctr run`, `kubectl logs`), to the termination
/// message when Kubernetes provides one (`kubectl describe`), and to the shim log.
fn report_failure(message: &str, code: i32) -> i32 {
    log::error!("{message}");
    eprintln!("{message}");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .append(true)
        .open(TERMINATION_LOG)
    {
        use std::io::Write;
        let _ = writeln!(f, "{message}");
    }
    code
}

/// A container's init process ignores signals it has no handler for, so without this a busy
/// module would outlive `ctr task kill` (SIGTERM) until SIGKILL.
fn exit_on_termination_signals() {
    extern "C" fn on_signal(sig: libc::c_int) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(128 + sig) }
    }
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        // SAFETY: the handler only calls _exit.
        unsafe {
            let _ = sigaction(sig, &action);
        }
    }
    debug_assert_eq!(exit_code::TERMINATED, 128 + libc::SIGTERM);
}

/// containerd-shim-wasm opens the stdin FIFO read-write (so that opening never blocks), which
/// makes the container its own writer: a module reading stdin to the end would wait forever
/// after the client closed its side. Reopen it read-only so the client's close is an EOF.
fn make_stdin_read_only() {
    use nix::fcntl::{fcntl, open, FcntlArg, OFlag};
    use nix::sys::stat::{fstat, Mode, SFlag};
    let is_fifo = fstat(0)
        .map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFIFO)
        .unwrap_or(false);
    let read_write = fcntl(0, FcntlArg::F_GETFL)
        .map(|fl| OFlag::from_bits_truncate(fl) & OFlag::O_ACCMODE == OFlag::O_RDWR)
        .unwrap_or(false);
    if !(is_fifo && read_write) {
        return;
    }
    match open(
        "/proc/self/fd/0",
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => {
            let _ = nix::unistd::dup2(fd, 0);
            let _ = nix::unistd::close(fd);
        }
        Err(e) => {
            log::warn!("could not reopen stdin read-only ({e}); a module reading to EOF may block")
        }
    }
}
