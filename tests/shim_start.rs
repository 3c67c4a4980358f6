//! The shim started exactly as containerd 2.3 starts one (pkg/shim `Command` and
//! core/runtime/v2 of v2.3): `start` with the deprecated flags and environment beside the
//! bootstrap parameters (a `BootstrapParams` protobuf) on stdin, its combined output parsed as
//! 2.3 parses it, then the task API it announces driven over ttrpc; and `-info` with runtime
//! options on stdin, which 2.3's introspection service runs.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{containerd_release, shim_binary, unique, Containerd};
use containerd_shim_protos::api::{ConnectRequest, ShutdownRequest};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{CodedInputStream, CodedOutputStream, Message};
use containerd_shim_protos::shim::oci::Options;
use containerd_shim_protos::shim_sync::{Client, TaskClient};
use containerd_shim_protos::ttrpc::context;
use containerd_shim_protos::types::introspection::RuntimeInfo;

/// containerd 2.3 hands the CRI runtime's options to the shim as an `Any` of this type.
const RUNC_OPTIONS_TYPE: &str = "containerd.runc.v1.Options";

fn runc_options_any() -> Any {
    let mut any = Any::new();
    any.type_url = RUNC_OPTIONS_TYPE.to_string();
    any.value = Options::new().write_to_bytes().unwrap();
    any
}

/// `containerd.runtime.bootstrap.v1.BootstrapParams` as 2.3 marshals it (field numbers from
/// api/runtime/bootstrap/v1/bootstrap.proto): no socket_dir, the default.
fn bootstrap_params(c: &Containerd, id: &str, containerd_binary: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = CodedOutputStream::vec(&mut out);
        w.write_string(1, id).unwrap();
        w.write_string(2, &c.namespace).unwrap();
        // log_level 3: LOG_LEVEL_INFO is 0, proto3 leaves it out.
        w.write_string(4, &containerd_release().version).unwrap();
        w.write_string(5, &format!("{}.ttrpc", c.socket.display()))
            .unwrap();
        w.write_string(6, &c.socket.display().to_string()).unwrap();
        w.write_string(7, &containerd_binary.display().to_string())
            .unwrap();
        // extensions 8: an Extension { value: Any } with the runtime options.
        let any = runc_options_any().write_to_bytes().unwrap();
        let mut extension = Vec::new();
        {
            let mut e = CodedOutputStream::vec(&mut extension);
            e.write_bytes(1, &any).unwrap();
            e.flush().unwrap();
        }
        w.write_bytes(8, &extension).unwrap();
        w.flush().unwrap();
    }
    out
}

/// What 2.3's `parseStartResponse` makes of a start's combined output: a `BootstrapResult`
/// protobuf (version 1, address 2, protocol 3) if it decodes as one, else the legacy forms (JSON
/// `{"version":2,"address":…,"protocol":…}` or a plain address, which mean ttrpc, version 2).
fn parse_start_response(response: &[u8]) -> (i32, String, String) {
    if let Some(result) = decode_bootstrap_result(response) {
        return result;
    }
    let text = String::from_utf8_lossy(response).trim().to_string();
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
        if v["version"].as_i64().unwrap_or(0) >= 2 {
            return (
                v["version"].as_i64().unwrap() as i32,
                v["address"].as_str().unwrap_or_default().to_string(),
                v["protocol"].as_str().unwrap_or_default().to_string(),
            );
        }
    }
    (2, text, "ttrpc".to_string())
}

fn decode_bootstrap_result(bytes: &[u8]) -> Option<(i32, String, String)> {
    let mut r = CodedInputStream::from_bytes(bytes);
    let (mut version, mut address, mut protocol) = (0, String::new(), String::new());
    while !r.eof().ok()? {
        let tag = r.read_raw_varint32().ok()?;
        match (tag >> 3, tag & 7) {
            (1, 0) => version = r.read_int32().ok()?,
            (2, 2) => address = r.read_string().ok()?,
            (3, 2) => protocol = r.read_string().ok()?,
            (_, wire) => {
                let wire = containerd_shim_protos::protobuf::rt::WireType::new(wire)?;
                r.skip_field(wire).ok()?;
            }
        }
    }
    Some((version, address, protocol))
}

/// The bundle's `log` FIFO, held open for reading as containerd holds it for the shim's whole
/// life (a shim process opening it for writing blocks until a reader is there).
struct ShimLog {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    reader: std::thread::JoinHandle<String>,
}

impl ShimLog {
    fn open(bundle: &Path) -> ShimLog {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        use std::sync::atomic::Ordering;
        let path = bundle.join("log");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o700)).unwrap();
        let mut fifo = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let reader = std::thread::spawn(move || {
            let mut text = Vec::new();
            let mut buf = [0u8; 4096];
            // Writers come and go (`start`, then the daemon): EOF only means none is there now.
            while !stopped.load(Ordering::Relaxed) {
                match fifo.read(&mut buf) {
                    Ok(n) if n > 0 => text.extend_from_slice(&buf[..n]),
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            String::from_utf8_lossy(&text).into_owned()
        });
        ShimLog { stop, reader }
    }

    fn finish(self) -> String {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.reader.join().unwrap()
    }
}

/// The shim daemon `start` left running for `id` (its command line carries `-id ID`).
fn daemon_pid(id: &str) -> i32 {
    let needle = format!("\0-id\0{id}\0");
    let pids: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                .unwrap_or(false)
        })
        .collect();
    // The daemon and the zygote it forked (containers' parent): the daemon is the one whose
    // parent is not another of them.
    let parent = |pid: i32| -> i32 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or("");
        after
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    };
    let daemons: Vec<i32> = pids
        .iter()
        .copied()
        .filter(|p| !pids.contains(&parent(*p)))
        .collect();
    assert_eq!(daemons.len(), 1, "shim processes of {id}: {pids:?}");
    daemons[0]
}

fn write_bundle(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let spec = oci_spec::runtime::Spec::default();
    spec.save(dir.join("config.json")).unwrap();
}

#[test]
fn a_shim_started_as_containerd_2_3_starts_it_serves_the_task_api() {
    let c = Containerd::start();
    let id = unique("boot");
    let bundle = c.dir.join("bundles").join(&id);
    write_bundle(&bundle);
    let containerd_binary = containerd_release().containerd();
    // As 2.3's openShimLog: the shim's log is a FIFO in the bundle that containerd reads.
    let shim_log = ShimLog::open(&bundle);

    let started = Instant::now();
    let mut child = Command::new(shim_binary())
        .args(["-namespace", &c.namespace, "-address"])
        .arg(&c.socket)
        .arg("-publish-binary")
        .arg(&containerd_binary)
        .args(["-id", &id, "start"])
        .current_dir(&bundle)
        .env("GOMAXPROCS", "2")
        .env("MAX_SHIM_VERSION", "2")
        .env("TTRPC_ADDRESS", format!("{}.ttrpc", c.socket.display()))
        .env("GRPC_ADDRESS", &c.socket)
        .env("NAMESPACE", &c.namespace)
        // containerd's own environment, which it passes on: the harness's node config.
        .env(
            "CONTAINERD_SHIM_WASMEDGE_CONFIG",
            c.dir.join("shim-config.toml"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the shim");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&bootstrap_params(&c, &id, &containerd_binary))
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "start failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // containerd 2.3 reads stdout and stderr together (CombinedOutput): anything the shim logs
    // there would become part of the address.
    let mut combined = out.stdout.clone();
    combined.extend_from_slice(&out.stderr);
    let (version, address, protocol) = parse_start_response(&combined);
    assert_eq!(
        protocol,
        "ttrpc",
        "from {:?}",
        String::from_utf8_lossy(&combined)
    );
    // 2.3 speaks task API v2 to version 2 and v3 to version 3 (CurrentShimVersion); this
    // shim serves containerd.task.v2.Task.
    assert_eq!(version, 2, "from {:?}", String::from_utf8_lossy(&combined));
    let socket = address
        .strip_prefix("unix://")
        .unwrap_or_else(|| panic!("not a unix socket address: {address:?}"));
    // The default socket dir of 2.3 (no socket_dir in the parameters).
    assert!(socket.starts_with("/run/containerd/s/"), "{socket}");
    assert_eq!(
        std::fs::read_to_string(bundle.join("address"))
            .unwrap()
            .trim(),
        address,
        "the address file containerd reads after a restart"
    );

    let client = Client::connect(&address).expect("connect to the shim's ttrpc socket");
    let task = TaskClient::new(client);
    // No task was created: the task v2 service answers, and knows no such task.
    let mut req = ConnectRequest::new();
    req.id = id.clone();
    match task.connect(
        context::with_timeout(Duration::from_secs(30).as_nanos() as i64),
        &req,
    ) {
        Err(containerd_shim_protos::ttrpc::Error::RpcStatus(status)) => {
            assert_eq!(
                status.code(),
                containerd_shim_protos::ttrpc::Code::NOT_FOUND,
                "{status:?}"
            );
        }
        other => {
            let _ = std::process::Command::new("kill")
                .arg(daemon_pid(&id).to_string())
                .status();
            panic!(
                "task v2 Connect of an uncreated task: {other:?}; shim log:\n{}",
                shim_log.finish()
            )
        }
    }
    let shim_pid = daemon_pid(&id);

    let mut req = ShutdownRequest::new();
    req.id = id.clone();
    req.now = true;
    // The daemon exits while answering; either outcome of the call is fine, its exit is not.
    let _ = task.shutdown(
        context::with_timeout(Duration::from_secs(30).as_nanos() as i64),
        &req,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while Path::new(&format!("/proc/{shim_pid}/cmdline")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !Path::new(&format!("/proc/{shim_pid}/cmdline")).exists(),
        "the shim daemon {shim_pid} did not exit on Shutdown"
    );
    assert!(
        !Path::new(socket).exists(),
        "the daemon left its socket {socket} behind"
    );
    let log = shim_log.finish();
    assert!(!log.contains("panicked"), "shim log:\n{log}");
    eprintln!(
        "start as containerd {} does: {address} (ttrpc, version {version}) in {:?}",
        containerd_release().version,
        started.elapsed()
    );
}

#[test]
fn info_prints_the_runtime_info_containerd_2_3_asks_for() {
    let mut child = Command::new(shim_binary())
        .arg("-info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&runc_options_any().write_to_bytes().unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "-info failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info = RuntimeInfo::parse_from_bytes(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not a RuntimeInfo protobuf ({e}): {:?}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(info.name, "wasmedge", "{info:?}");
    assert_eq!(
        info.version.as_ref().map(|v| v.version.as_str()),
        Some(env!("CARGO_PKG_VERSION")),
        "{info:?}"
    );
}
