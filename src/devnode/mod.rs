//! A private containerd for tests, the demo and the benchmarks, driven like `ctr`.
//!
//! Each instance has its own root, state, socket, namespace, AOT cache and cgroup subtree,
//! so it never touches the node's containerd. Safety rules this file enforces (see DEVELOPERS.md): every container gets an absolute
//! cgroupsPath nested under this process's own memory cgroup; only processes this harness
//! started (containerd, and shims bound to its socket) are ever signalled; everything it
//! created (mounts, cgroup dirs, state dirs) is removed on drop.
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::shim::cleanup::{cgroup_mount_points, collect_dirs};

mod http;
pub mod wasi_testsuite;
pub use http::{free_port, request, HttpContainer, Reply};

pub const WASMEDGE_RUNTIME: &str = "io.containerd.wasmedge.v1";
pub const PAUSE_IMAGE: &str = "localhost/pause:3.10";
pub const BUSYBOX_IMAGE: &str = "localhost/busybox:host";
pub const RUNC_RUNTIME: &str = "io.containerd.runc.v2";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A binary of this package: next to the running executable (`target/release/`), or one
/// level up when the caller is a test (`target/release/deps/`).
pub fn package_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().unwrap();
    for candidate in [dir.join(name), dir.parent().unwrap().join(name)] {
        if candidate.exists() {
            return candidate;
        }
    }
    panic!(
        "{name} not found next to {}: run `cargo build --release --bins`",
        exe.display()
    );
}

/// A wasm module built by `make wasm` (target/wasm/NAME.wasm).
pub fn wasm(name: &str) -> PathBuf {
    let p = repo().join("target/wasm").join(format!("{name}.wasm"));
    assert!(
        p.exists(),
        "{} is missing: run `make wasm` (or `make test`) first",
        p.display()
    );
    p
}

pub fn shim_binary() -> PathBuf {
    if let Some(wrapper) = std::env::var_os("CSW_DEBUG_SHIM") {
        return PathBuf::from(wrapper);
    }
    package_binary("containerd-shim-wasmedge-v1")
}

/// A containerd release the harness can drive: its binaries and its config layout.
pub struct ContainerdRelease {
    /// The release line, as `CONTAINERD` names it: "2.3" or "1.7".
    pub line: &'static str,
    /// `containerd --version`'s version field, e.g. "v2.3.7".
    pub version: String,
    /// Holds its `containerd`, `ctr` and `containerd-shim-runc-v2`.
    pub bin_dir: PathBuf,
    /// The harness config in its layout (version 3 for 2.x, version 2 for 1.7).
    config_template: &'static str,
}

impl ContainerdRelease {
    /// `line`'s binaries: 2.3 (the LTS) as scripts/containerd-build.sh builds it into the cache,
    /// 1.7 as Debian packages it. Looked up and version-checked once per process.
    pub fn of(line: &str) -> &'static ContainerdRelease {
        static V2_3: OnceLock<ContainerdRelease> = OnceLock::new();
        static V1_7: OnceLock<ContainerdRelease> = OnceLock::new();
        match line {
            "2.3" => V2_3.get_or_init(|| Self::find("2.3")),
            "1.7" => V1_7.get_or_init(|| Self::find("1.7")),
            other => panic!("CONTAINERD={other}: supported are 2.3 (the default) and 1.7"),
        }
    }

    /// Checks that the binary is of the line it claims to be.
    fn find(line: &str) -> ContainerdRelease {
        let (line, bin_dir, config_template) = match line {
            "2.3" => {
                let out =
                    run_ok(Command::new("bash").arg(repo().join("scripts/containerd-build.sh")));
                (
                    "2.3",
                    PathBuf::from(out.trim()),
                    include_str!("containerd.toml"),
                )
            }
            "1.7" => (
                "1.7",
                PathBuf::from("/usr/bin"),
                include_str!("containerd-1.7.toml"),
            ),
            _ => unreachable!("ContainerdRelease::of names the lines"),
        };
        let text = run_ok(Command::new(bin_dir.join("containerd")).arg("--version"));
        let version = text
            .split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .to_string();
        assert!(
            version.starts_with(&format!("v{line}.")) || version.starts_with(&format!("{line}.")),
            "{} is {version}, not containerd {line}: {text}",
            bin_dir.join("containerd").display()
        );
        ContainerdRelease {
            line,
            version,
            bin_dir,
            config_template,
        }
    }

    pub fn containerd(&self) -> PathBuf {
        self.bin_dir.join("containerd")
    }

    pub fn ctr(&self) -> PathBuf {
        self.bin_dir.join("ctr")
    }
}

/// The containerd every harness of this process drives: `CONTAINERD=2.3` (the default) or
/// `CONTAINERD=1.7`. Never the one on PATH, which may be another release.
pub fn containerd_release() -> &'static ContainerdRelease {
    ContainerdRelease::of(
        std::env::var("CONTAINERD")
            .ok()
            .filter(|v| !v.is_empty())
            .as_deref()
            .unwrap_or("2.3"),
    )
}

/// The node install path, as `make install` runs it: dump the effective config, then let
/// `containerd-wasmedge-config` write the drop-in that registers the runtime.
fn install_dropin(dir: &Path) {
    fs::create_dir_all(dir.join("conf.d")).unwrap();
    let dump = run_ok(
        Command::new(containerd_release().containerd())
            .arg("--config")
            .arg(dir.join("config.toml"))
            .args(["config", "dump"]),
    );
    fs::write(dir.join("effective.toml"), dump).unwrap();
    run_ok(
        Command::new(package_binary("containerd-wasmedge-config"))
            .arg("--effective")
            .arg(dir.join("effective.toml"))
            .arg("--runtime")
            .arg(repo().join("runtime-config/wasmedge-runtime.toml"))
            .arg("--out")
            .arg(dir.join("conf.d/wasmedge.toml")),
    );
}

/// The `wasmedge` CLI of the engine the shim is built against (scripts/engine.sh), never one
/// found on PATH: comparisons must use the same engine.
pub fn wasmedge_cli() -> PathBuf {
    Path::new(env!("CSW_ENGINE_LIB_DIR")).join("../bin/wasmedge")
}

pub fn wasm_oci() -> PathBuf {
    package_binary("wasm-oci")
}

/// The cgroup the harness nests its containers under: on a cgroup v1 (hybrid) host this
/// process's memory cgroup.
///
/// On a cgroup-v2-only host the parent of this process's cgroup instead: the "no internal
/// processes" rule lets a cgroup that has processes delegate no controller to its children, so
/// the runner lives in a leaf (scripts/cgroup2-guest.sh: `/runner/leaf`) and the containers go
/// beside it (`/runner/<instance>/<id>`); a process in the root cgroup gets the root ("").
pub fn own_cgroup() -> String {
    let text = fs::read_to_string("/proc/self/cgroup").expect("read /proc/self/cgroup");
    if let Some(line) = text.lines().find(|l| l.split(':').nth(1) == Some("memory")) {
        return line
            .splitn(3, ':')
            .nth(2)
            .unwrap()
            .trim_end_matches('/')
            .to_string();
    }
    let unified = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("no memory cgroup");
    match unified.trim_end_matches('/').rsplit_once('/') {
        Some((parent, _leaf)) => parent.to_string(),
        None => String::new(),
    }
}

static SEQ: AtomicU32 = AtomicU32::new(0);

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

pub struct Containerd {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub namespace: String,
    pub aot_dir: PathBuf,
    pub log: PathBuf,
    /// Absolute cgroup path under which every container of this containerd lives.
    pub cgroup_base: String,
    pid: i32,
}

pub struct Options {
    pub aot_cache_max_bytes: u64,
    /// More lines for the shim's node config (policy ceiling, default preset, ...).
    pub node_config_extra: String,
    /// The AOT cache directory (default: `aot-cache` in the instance's directory).
    pub aot_cache_dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            aot_cache_max_bytes: 1 << 30,
            node_config_extra: String::new(),
            aot_cache_dir: None,
        }
    }
}

impl Containerd {
    pub fn start() -> Self {
        Self::start_with(Options::default())
    }

    pub fn start_with(opts: Options) -> Self {
        let name = unique("csw");
        let dir = PathBuf::from("/tmp").join(&name);
        fs::create_dir_all(dir.join("bin")).unwrap();
        fs::create_dir_all(dir.join("cni/conf")).unwrap();
        std::os::unix::fs::symlink(shim_binary(), dir.join("bin/containerd-shim-wasmedge-v1"))
            .unwrap();
        let socket = dir.join("c.sock");
        let aot_dir = opts
            .aot_cache_dir
            .clone()
            .unwrap_or_else(|| dir.join("aot-cache"));
        let log = dir.join("containerd.log");
        let cgroup_base = format!("{}/{}", own_cgroup(), name);
        // The same files configure the e2e Kubernetes node's containerd (scripts/k8s-up.sh).
        let config = containerd_release()
            .config_template
            .replace("@DIR@", &dir.display().to_string())
            .replace("@CNI_BIN_DIR@", &dir.join("cni/bin").display().to_string())
            .replace("@PAUSE_IMAGE@", PAUSE_IMAGE);
        fs::write(dir.join("config.toml"), config).unwrap();
        install_dropin(&dir);
        fs::write(
            dir.join("shim-config.toml"),
            format!(
                "aot_cache_dir = \"{}\"\naot_cache_max_bytes = {}\npolicy_dir = \"{}\"\n{}\n",
                aot_dir.display(),
                opts.aot_cache_max_bytes,
                dir.join("policies").display(),
                opts.node_config_extra
            ),
        )
        .unwrap();
        let pid = spawn_containerd(&dir, &log);
        let c = Self {
            dir,
            socket,
            namespace: name,
            aot_dir,
            log,
            cgroup_base,
            pid,
        };
        c.wait_ready();
        c
    }

    /// Stops containerd (SIGTERM, as a service manager does) and starts it again with the same
    /// config and state, leaving shims and containers running in between.
    pub fn restart(&mut self) {
        self.stop_daemon();
        self.pid = spawn_containerd(&self.dir, &self.log);
        self.wait_ready();
    }

    fn stop_daemon(&self) {
        unsafe {
            libc::kill(self.pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut status = 0;
            let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            if r != 0 || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        unsafe {
            if libc::kill(self.pid, 0) == 0 {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.socket.exists() && self.ctr(&["version"]).status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("containerd did not become ready; log:\n{}", self.log_text());
    }

    /// PID of this containerd.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `ctr` against this containerd in this harness's namespace.
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_ns(&self.namespace, args)
    }

    pub fn ctr_ns(&self, ns: &str, args: &[&str]) -> Output {
        Command::new(containerd_release().ctr())
            .arg("--address")
            .arg(&self.socket)
            .arg("-n")
            .arg(ns)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ctr")
    }

    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Imports an OCI archive into `ns` (this harness's namespace when None).
    pub fn import(&self, ns: Option<&str>, archive: &Path, wasm_platform: bool) {
        let ns = ns.unwrap_or(&self.namespace);
        let mut args = vec!["image", "import"];
        if wasm_platform {
            args.extend(["--platform", "wasip1/wasm"]);
            // containerd 2.x imports through its transfer service, which unpacks only for the
            // platforms of its unpack config (the node's own); `--local` imports as 1.7 did.
            if containerd_release().line != "1.7" {
                args.push("--local");
            }
        }
        let archive = archive.to_str().unwrap();
        args.push(archive);
        let out = self.ctr_ns(ns, &args);
        assert!(
            out.status.success(),
            "import {archive}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn cgroup_of(&self, id: &str) -> String {
        format!("{}/{}", self.cgroup_base, id)
    }

    /// The most memory container `id`'s cgroup has used so far, in bytes (cgroup v2
    /// `memory.peak`, v1 `memory.max_usage_in_bytes`); None when neither is there.
    pub fn peak_memory_bytes(&self, id: &str) -> Option<u64> {
        let cgroup = self.cgroup_of(id);
        let rel = cgroup.trim_start_matches('/');
        [
            Path::new("/sys/fs/cgroup").join(rel).join("memory.peak"),
            Path::new("/sys/fs/cgroup/memory")
                .join(rel)
                .join("memory.max_usage_in_bytes"),
        ]
        .iter()
        .find_map(|p| fs::read_to_string(p).ok()?.trim().parse().ok())
    }

    /// `ctr run --rm` of `image` under `runtime`, with extra ctr flags before the image.
    pub fn run(&self, runtime: &str, image: &str, id: &str, flags: &[&str], args: &[&str]) -> Run {
        let cgroup = self.cgroup_of(id);
        let mut all = vec![
            "run",
            "--rm",
            "--runtime",
            runtime,
            "--cgroup",
            cgroup.as_str(),
        ];
        all.extend_from_slice(flags);
        all.push(image);
        all.push(id);
        all.extend_from_slice(args);
        let started = Instant::now();
        let out = self.ctr(&all);
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: started.elapsed(),
        }
    }

    /// Like [`Containerd::run`], feeding `stdin` to the container.
    pub fn run_with_stdin(
        &self,
        runtime: &str,
        image: &str,
        id: &str,
        args: &[&str],
        stdin: &[u8],
    ) -> Run {
        use std::io::Write;
        let cgroup = self.cgroup_of(id);
        let mut all = vec![
            "run",
            "--rm",
            "--runtime",
            runtime,
            "--cgroup",
            cgroup.as_str(),
            image,
            id,
        ];
        all.extend_from_slice(args);
        let started = Instant::now();
        let mut child = Command::new(containerd_release().ctr())
            .arg("--address")
            .arg(&self.socket)
            .arg("-n")
            .arg(&self.namespace)
            .args(&all)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ctr");
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin).expect("write stdin");
        drop(input);
        let out = child.wait_with_output().expect("wait ctr");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: started.elapsed(),
        }
    }

    pub fn run_wasm(&self, image: &str, id: &str, args: &[&str]) -> Run {
        self.run(WASMEDGE_RUNTIME, image, id, &[], args)
    }

    /// PIDs of shims serving this containerd (they carry its socket on their command line).
    pub fn shim_pids(&self) -> Vec<i32> {
        let needle = self.socket.to_string_lossy().into_owned();
        let mut pids = vec![];
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let is_shim = args
                .first()
                .map(|a| a.contains("containerd-shim"))
                .unwrap_or(false);
            if is_shim
                && args
                    .iter()
                    .any(|a| a == &needle || a.starts_with(&format!("{needle}.")))
            {
                pids.push(pid);
            }
        }
        pids
    }

    /// Proportional set size (kB) of every process of this containerd's containers and shims.
    pub fn pss_kb(&self) -> u64 {
        let mut pids = self.shim_pids();
        pids.extend(self.processes_in_cgroups());
        pids.sort();
        pids.dedup();
        pids.iter().map(|pid| pss_of(*pid)).sum()
    }

    /// Processes whose cgroup (any controller) is under this harness's cgroup base.
    pub fn processes_in_cgroups(&self) -> Vec<i32> {
        let mut pids = vec![];
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cg) = fs::read_to_string(entry.path().join("cgroup")) else {
                continue;
            };
            if cg.lines().any(|l| l.contains(&self.cgroup_base)) {
                pids.push(pid);
            }
        }
        pids
    }

    /// Cgroup directories below the base (the base itself excluded), in every hierarchy.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![];
        for root in cgroup_mount_points() {
            let base = root.join(self.cgroup_base.trim_start_matches('/'));
            collect_dirs(&base, &mut dirs);
        }
        dirs
    }

    /// Removes a pod-level cgroup after RemovePodSandbox, as kubelet does (the runtime only
    /// removes the containers' cgroups below it). Fails if anything is still below it.
    pub fn remove_pod_cgroup(&self, pod: &str) {
        for root in cgroup_mount_points() {
            let dir = root.join(self.cgroup_of(pod).trim_start_matches('/'));
            if !dir.exists() {
                continue;
            }
            let mut below = vec![];
            collect_dirs(&dir, &mut below);
            assert!(
                below.is_empty(),
                "container cgroups left below the pod: {below:?}"
            );
            fs::remove_dir(&dir).unwrap_or_else(|e| panic!("rmdir {}: {e}", dir.display()));
        }
    }

    /// Mounts under this harness's directory.
    pub fn mounts(&self) -> Vec<String> {
        let d = self.dir.to_string_lossy().into_owned();
        fs::read_to_string("/proc/self/mounts")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(1).map(str::to_string))
            .filter(|m| m.starts_with(&d))
            .collect()
    }

    /// Files in the AOT cache directory whose names mark them as temporary.
    pub fn aot_temp_files(&self) -> Vec<String> {
        fs::read_dir(&self.aot_dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The cache entries of modules, without the stack guard's anchor (`engine::stack`), which
    /// the node compiles once beside the first native module.
    pub fn aot_entries(&self) -> Vec<PathBuf> {
        let anchor = crate::engine::stack::anchor_wasm()
            .map(|wasm| format!("{}.aot", crate::engine::cache_key(&wasm)));
        let mut v: Vec<PathBuf> = fs::read_dir(&self.aot_dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().map(|x| x == "aot").unwrap_or(false))
                    .filter(|p| anchor.as_deref() != p.file_name().and_then(|n| n.to_str()))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Waits until no shim of this containerd is left (shims exit after their last delete).
    pub fn wait_no_shims(&self, timeout: Duration) -> Vec<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            let pids = self.shim_pids();
            if pids.is_empty() || Instant::now() > deadline {
                return pids;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Asserts that nothing of any container is left: processes, shims, mounts, cgroups.
    pub fn assert_clean(&self) {
        let shims = self.wait_no_shims(Duration::from_secs(10));
        assert!(shims.is_empty(), "shim processes left: {shims:?}");
        let procs = self.processes_in_cgroups();
        assert!(
            procs.is_empty(),
            "processes left in container cgroups: {procs:?}"
        );
        let dirs: Vec<_> = self.cgroup_dirs();
        assert!(dirs.is_empty(), "cgroup dirs left: {dirs:?}");
        let mounts: Vec<_> = self
            .mounts()
            .into_iter()
            .filter(|m| m.contains("/rootfs"))
            .collect();
        assert!(mounts.is_empty(), "rootfs mounts left: {mounts:?}");
        let temps = self.aot_temp_files();
        assert!(
            temps.is_empty(),
            "temp files left in the AOT cache: {temps:?}"
        );
        let sockets = self.shim_sockets_left();
        assert!(
            sockets.is_empty(),
            "shim sockets left in /run/containerd/s: {sockets:?}"
        );
    }

    /// Sockets in /run/containerd/s of shims this containerd started (for every task id its
    /// log names) that are still there: a shim that is gone must not leave its socket.
    pub fn shim_sockets_left(&self) -> Vec<String> {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let mut ids: Vec<&str> = log
            .split_whitespace()
            .filter_map(|field| field.strip_prefix("id="))
            .map(|id| id.trim_matches('"'))
            .filter(|id| !id.is_empty())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let socket = self.socket.to_string_lossy();
        ids.into_iter()
            .map(|id| containerd_shim::socket_address(&socket, &self.namespace, id))
            .map(|a| a.trim_start_matches("unix://").to_string())
            .filter(|path| Path::new(path).exists())
            .collect()
    }

    fn cleanup_containers(&self, ns: &str) {
        let out = self.ctr_ns(ns, &["task", "ls", "-q"]);
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = self.ctr_ns(ns, &["task", "kill", "-s", "SIGKILL", id]);
            for _ in 0..50 {
                if self.ctr_ns(ns, &["task", "delete", id]).status.success() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let out = self.ctr_ns(ns, &["container", "ls", "-q"]);
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = self.ctr_ns(ns, &["container", "rm", id]);
        }
    }
}

/// PSS in kB from /proc/PID/smaps_rollup (0 if the process is gone).
pub fn pss_of(pid: i32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.cleanup_containers(&self.namespace.clone());
        self.cleanup_containers("k8s.io");
        self.stop_daemon();
        for pid in self.shim_pids() {
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        for pid in self.processes_in_cgroups() {
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        let mut mounts = self.mounts();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let c = std::ffi::CString::new(m).unwrap();
            unsafe {
                libc::umount2(c.as_ptr(), libc::MNT_DETACH);
            }
        }
        remove_cgroup_tree(&self.cgroup_base);
        let _ = fs::remove_dir_all(PathBuf::from("/run/containerd/wasmedge").join(&self.namespace));
        let _ = fs::remove_dir_all(PathBuf::from("/run/containerd/runc").join(&self.namespace));
        if std::env::var_os("KEEP_TEST_DIRS").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Starts containerd on the config in `dir`, in its own session, logging (appending) to `log`.
fn spawn_containerd(dir: &Path, log: &Path) -> i32 {
    // The shim first, then the release's own runc shim, then the machine's runc.
    let path = format!(
        "{}:{}:{}",
        dir.join("bin").display(),
        containerd_release().bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let logf = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut cmd = Command::new(containerd_release().containerd());
    cmd.arg("--config")
        .arg(dir.join("config.toml"))
        .env("PATH", path)
        .env(
            "CONTAINERD_SHIM_WASMEDGE_CONFIG",
            dir.join("shim-config.toml"),
        )
        .stdin(Stdio::null())
        .stdout(logf.try_clone().unwrap())
        .stderr(logf)
        .current_dir(dir);
    // Own session: signals sent to the test's process group never reach it.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd.spawn().expect("start containerd (run `make setup`)");
    let pid = child.id() as i32;
    // The child is reaped via waitpid (stop_daemon); forget the handle.
    std::mem::forget(child);
    pid
}

/// Test images, built once per test binary with the project's `wasm-oci` tool.
pub struct Images {
    pub dir: PathBuf,
    /// Tests run in parallel threads; two of them must not build the same archive at once.
    building: std::sync::Mutex<()>,
}

pub fn images() -> &'static Images {
    static IMAGES: OnceLock<Images> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let parent = repo().join("target/test-images");
        // Remove what earlier (finished) test processes left.
        for e in fs::read_dir(&parent).into_iter().flatten().flatten() {
            let alive = e
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<i32>().ok())
                .map(|pid| unsafe { libc::kill(pid, 0) } == 0);
            if alive != Some(true) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
        let dir = parent.join(std::process::id().to_string());
        fs::create_dir_all(&dir).unwrap();
        Images {
            dir,
            building: Default::default(),
        }
    })
}

impl Images {
    /// Builds (once) a rootfs image with `module` at /app/<name>.wasm plus `extra` files.
    pub fn rootfs(&self, reference: &str, module: &Path, extra: &[(&Path, &str)]) -> PathBuf {
        let _guard = self.building.lock().unwrap_or_else(|e| e.into_inner());
        let out = self.dir.join(format!("{}.tar", sanitize(reference)));
        if !out.exists() {
            let mut cmd = Command::new(wasm_oci());
            cmd.args(["rootfs", "--name", reference, "--out"])
                .arg(&out)
                .arg("--module")
                .arg(module);
            for (host, guest) in extra {
                cmd.arg("--file").arg(format!("{}:{guest}", host.display()));
            }
            run_ok(&mut cmd);
        }
        out
    }

    pub fn artifact(&self, reference: &str, module: &Path) -> PathBuf {
        let _guard = self.building.lock().unwrap_or_else(|e| e.into_inner());
        let out = self.dir.join(format!("{}.tar", sanitize(reference)));
        if !out.exists() {
            run_ok(
                Command::new(wasm_oci())
                    .args(["artifact", "--name", reference, "--out"])
                    .arg(&out)
                    .arg("--module")
                    .arg(module),
            );
        }
        out
    }

    /// The project's pause image (static C binary built by `make`).
    pub fn pause(&self) -> PathBuf {
        let _guard = self.building.lock().unwrap_or_else(|e| e.into_inner());
        let out = self.dir.join("pause.tar");
        if !out.exists() {
            let bin = repo().join("target/images/pause");
            assert!(
                bin.exists(),
                "{} missing: run `make images` first",
                bin.display()
            );
            run_ok(
                Command::new(wasm_oci())
                    .args(["rootfs", "--name", PAUSE_IMAGE, "--out"])
                    .arg(&out)
                    .arg("--file")
                    .arg(format!("{}:/pause", bin.display()))
                    .args(["--entrypoint", "/pause"]),
            );
        }
        out
    }

    /// A busybox image (the host's static busybox), the runc baseline of the benchmarks.
    pub fn busybox(&self) -> PathBuf {
        let _guard = self.building.lock().unwrap_or_else(|e| e.into_inner());
        let out = self.dir.join("busybox.tar");
        if !out.exists() {
            run_ok(
                Command::new(wasm_oci())
                    .args(["rootfs", "--name", BUSYBOX_IMAGE, "--out"])
                    .arg(&out)
                    .args([
                        "--file",
                        "/bin/busybox:/bin/busybox",
                        "--entrypoint",
                        "/bin/busybox",
                    ]),
            );
        }
        out
    }

    pub fn write_file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let _guard = self.building.lock().unwrap_or_else(|e| e.into_inner());
        let p = self.dir.join(name);
        fs::write(&p, bytes).unwrap();
        p
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Removes the (empty) cgroup directories at and below the absolute cgroup path `cgroup`, in
/// every hierarchy mounted here, deepest first.
pub fn remove_cgroup_tree(cgroup: &str) {
    for root in cgroup_mount_points() {
        let base = root.join(cgroup.trim_start_matches('/'));
        let mut dirs = vec![];
        collect_dirs(&base, &mut dirs);
        dirs.push(base);
        for d in dirs {
            let _ = fs::remove_dir(d);
        }
    }
}

/// Runs `cmd` to its end and returns what it printed, stdout then stderr; panics with that
/// text (and `what`) when it fails.
pub fn run_ok_all_output(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().expect("spawn");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what}: {text}");
    text
}

pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
