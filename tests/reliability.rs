//! Faults a node goes through: a shim killed with SIGKILL, a containerd restart, many
//! containers in a row, an AOT cache that is full or read-only.

mod common;

use std::time::{Duration, Instant};

use common::{images, unique, wasm, Containerd, WASMEDGE_RUNTIME};

const IMAGE: &str = "localhost/hello:reliability";
const HELLO: &str = "/app/hello.wasm";

fn setup() -> Containerd {
    let c = Containerd::start();
    c.import(None, &images().rootfs(IMAGE, &wasm("hello"), &[]), false);
    c
}

fn task_status(c: &Containerd, id: &str) -> Option<String> {
    let out = c.ctr_ok(&["task", "ls"]);
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .and_then(|l| l.split_whitespace().nth(2))
        .map(str::to_string)
}

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn killed_shim_leaves_nothing_and_the_next_container_runs() {
    let c = setup();
    let id = unique("victim");
    let cgroup = c.cgroup_of(&id);
    c.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        WASMEDGE_RUNTIME,
        "--cgroup",
        &cgroup,
        IMAGE,
        &id,
        HELLO,
        "sleep",
        "600",
    ]);
    wait_for("the task to run", Duration::from_secs(20), || {
        task_status(&c, &id).as_deref() == Some("RUNNING")
    });
    let shims = c.shim_pids();
    // The daemon is the shim process whose parent is not itself a shim process.
    let daemon = *shims
        .iter()
        .find(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid: i32 = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().nth(1))
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            !shims.contains(&ppid)
        })
        .expect("shim daemon");
    unsafe {
        libc::kill(daemon, libc::SIGKILL);
    }
    wait_for(
        "containerd to see the task end",
        Duration::from_secs(20),
        || task_status(&c, &id).as_deref() != Some("RUNNING"),
    );
    let _ = c.ctr(&["task", "delete", &id]);
    c.ctr_ok(&["container", "rm", &id]);
    // Nothing of the killed shim's container may survive: no module process, no cgroup, no mount.
    wait_for(
        "the container's processes to be gone",
        Duration::from_secs(20),
        || c.processes_in_cgroups().is_empty(),
    );
    let r = c.run_wasm(IMAGE, &unique("after"), &[HELLO, "exit", "9"]);
    assert_eq!(r.code, 9, "{}", r.stderr);
    c.assert_clean();
}

/// Processes, mounts, cgroup dirs and containerd's open descriptors, to compare before/after.
fn leak_counts(c: &Containerd) -> (usize, usize, usize, usize) {
    let fds = std::fs::read_dir(format!("/proc/{}/fd", c.pid()))
        .map(|d| d.count())
        .unwrap_or(0);
    (
        c.shim_pids().len() + c.processes_in_cgroups().len(),
        c.mounts().len(),
        c.cgroup_dirs().len(),
        fds,
    )
}

#[test]
fn churn_leaks_nothing() {
    let c = setup();
    let cycles: usize = std::env::var("CHURN_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    // Warm up (compile once, let containerd open its long-lived descriptors).
    assert_eq!(c.run_wasm(IMAGE, &unique("warm"), &[]).code, 0);
    let before = leak_counts(&c);
    for i in 0..cycles {
        if i % 5 == 4 {
            // Killed while running: create, start, SIGKILL, delete.
            let id = unique("killed");
            let cgroup = c.cgroup_of(&id);
            c.ctr_ok(&[
                "run",
                "-d",
                "--runtime",
                WASMEDGE_RUNTIME,
                "--cgroup",
                &cgroup,
                IMAGE,
                &id,
                HELLO,
                "sleep",
                "60",
            ]);
            let status = c.stop_task(&id, "SIGKILL", Duration::from_secs(10));
            assert!(status.contains("137"), "cycle {i}: {status}");
            continue;
        }
        let r = match i % 5 {
            0 => c.run_wasm(IMAGE, &unique("ok"), &[]),
            1 => c.run_wasm(IMAGE, &unique("fail"), &[HELLO, "exit", "2"]),
            2 => c.run_wasm(IMAGE, &unique("trap"), &[HELLO, "trap"]),
            _ => c.run(
                WASMEDGE_RUNTIME,
                IMAGE,
                &unique("slow"),
                &["--annotation", "wasmedge.io/execution-timeout-ms=50"],
                &[HELLO, "sleep", "5"],
            ),
        };
        let expected = [0, 2, 134, 124][i % 5];
        assert_eq!(r.code, expected, "cycle {i}: {}", r.stderr);
    }
    c.wait_no_shims(Duration::from_secs(10));
    let after = leak_counts(&c);
    println!("churn of {cycles} containers: (processes, mounts, cgroup dirs, containerd fds) before {before:?} after {after:?}");
    assert_eq!(
        (after.0, after.1, after.2),
        (before.0, before.1, before.2),
        "leaked processes, mounts or cgroup dirs"
    );
    assert!(
        after.3 <= before.3 + 2,
        "containerd descriptors grew from {} to {}",
        before.3,
        after.3
    );
    assert_eq!(c.aot_entries().len(), 1);
    let cache_bytes: u64 = c
        .aot_entries()
        .iter()
        .map(|e| std::fs::metadata(e).map(|m| m.len()).unwrap_or(0))
        .sum();
    assert!(
        cache_bytes <= common::Options::default().aot_cache_max_bytes,
        "cache of {cache_bytes} bytes above its bound"
    );
    c.assert_clean();
}

#[test]
fn wasm_tasks_survive_a_containerd_restart() {
    // The sleepers must outlive the whole test, however long their compiles take on a busy
    // machine: a node ceiling (and annotation) far above the default 5 s time limit.
    let mut c = Containerd::start_with(common::Options {
        node_config_extra: concat!(
            "[ceiling]\nmaxMemoryPages = 512\nexecutionTimeoutMs = 3600000\n",
            "allowedHosts = [\"api.example.com\", \"cdn.example.com\"]\nallowedEnvVars = [\"APP_MODE\", \"REGION\", \"LOG_LEVEL\"]\n",
            "allowedDirs = [{ hostPath = \"/app/config\", guestPath = \"/config\", readonly = true }, ",
            "{ hostPath = \"/app/cache\", guestPath = \"/cache\", readonly = false }]\nmaxNetworkRequests = 200\n",
        )
        .into(),
        ..Default::default()
    });
    c.import(None, &images().rootfs(IMAGE, &wasm("hello"), &[]), false);
    c.import(
        None,
        &images().rootfs(
            "localhost/edge-function:reliability",
            &wasm("edge-function"),
            &[],
        ),
        false,
    );
    let mut sleepers = vec![];
    for _ in 0..6 {
        let id = unique("sleeper");
        let cgroup = c.cgroup_of(&id);
        let limit = "wasmedge.io/execution-timeout-ms=3600000";
        c.ctr_ok(&[
            "run",
            "-d",
            "--runtime",
            WASMEDGE_RUNTIME,
            "--cgroup",
            &cgroup,
            "--annotation",
            limit,
            IMAGE,
            &id,
            HELLO,
            "sleep",
            "600",
        ]);
        sleepers.push(id);
    }
    let servers: Vec<_> = (0..4)
        .map(|_| {
            c.start_http(
                "localhost/edge-function:reliability",
                &unique("server"),
                &[],
                &["/app/edge-function.wasm"],
            )
        })
        .collect();
    for s in &servers {
        s.wait_ready(Duration::from_secs(180))
            .unwrap_or_else(|seen| panic!("{} never ready: {seen:?}", s.id));
    }
    for id in &sleepers {
        let deadline = Instant::now() + Duration::from_secs(20);
        while task_status(&c, id).as_deref() != Some("RUNNING") {
            assert!(
                Instant::now() < deadline,
                "sleeper {id} is not running: {:?}\n{}\ncontainerd log:\n{}",
                task_status(&c, id),
                c.ctr_ok(&["task", "ls"]),
                c.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // One server is asked continuously while containerd goes away and comes back.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let port = servers[0].port;
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                match common::request(
                    "GET",
                    &format!("http://127.0.0.1:{port}/during-restart"),
                    None,
                )
                .status
                {
                    200 => ok += 1,
                    _ => failed += 1,
                }
            }
            (ok, failed)
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    c.restart();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failed) = load.join().unwrap();
    assert!(
        ok > 0 && failed == 0,
        "the server must keep answering through the restart: {ok} ok, {failed} failed"
    );

    let log = c.log_text();
    assert!(
        !log.contains("cleaning leaked shim process"),
        "containerd dropped a wasm task:\n{log}"
    );
    let all: Vec<String> = sleepers
        .iter()
        .cloned()
        .chain(servers.iter().map(|s| s.id.clone()))
        .collect();
    for id in &all {
        assert_eq!(
            task_status(&c, id).as_deref(),
            Some("RUNNING"),
            "{id} after the restart"
        );
        let ps = c.ctr_ok(&["task", "ps", id]);
        assert!(
            ps.lines().skip(1).any(|l| l
                .split_whitespace()
                .next()
                .and_then(|p| p.parse::<u32>().ok())
                .is_some()),
            "ps {id}: {ps}"
        );
    }
    for s in &servers {
        assert_eq!(s.get("/api/v1/process").status, 200);
    }
    // Stopping and deleting works as before (and no delete hangs on a log FIFO).
    for id in &sleepers {
        let status = c.stop_task(id, "SIGTERM", Duration::from_secs(10));
        assert!(status.contains("143"), "{id}: {status}");
    }
    for s in &servers {
        let status = c.stop_task(&s.id, "SIGTERM", Duration::from_secs(30));
        assert!(!status.contains("non-zero exit code"), "{}: {status}", s.id);
    }
    c.assert_clean();
}

/// A tmpfs mounted by the test for its AOT cache, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(options: &str) -> Tmpfs {
        let dir = std::env::temp_dir().join(unique("aot-tmpfs"));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(&dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount tmpfs -o {options}");
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_full_or_read_only_cache_still_runs_modules_and_says_why() {
    for (options, why) in [("size=16k", "full"), ("ro,size=1m", "read-only")] {
        let cache = Tmpfs::mount(options);
        let c = Containerd::start_with(common::Options {
            aot_cache_dir: Some(cache.0.clone()),
            ..Default::default()
        });
        c.import(None, &images().rootfs(IMAGE, &wasm("hello"), &[]), false);
        let r = c.run_wasm(IMAGE, &unique(why), &[]);
        assert_eq!(
            (r.code, r.stdout.trim()),
            (0, "hello from wasmedge"),
            "{why} cache: {}",
            r.stderr
        );
        let r = c.run_wasm(IMAGE, &unique(why), &[HELLO, "exit", "4"]);
        assert_eq!(r.code, 4, "{why} cache: {}", r.stderr);
        let log = c.log_text();
        // A full cache still gets the module compiled (the compiler writes to its own
        // tmpfs) and run from memory; a read-only one leaves no room to compile: interpreted.
        let fallback = if why == "full" {
            "could not store compiled /app/hello.wasm in the cache"
        } else {
            "in the interpreter"
        };
        assert!(
            log.contains(fallback),
            "{why} cache: the fallback must be logged:\n{log}"
        );
        c.assert_clean();
        drop(c);
    }
}
