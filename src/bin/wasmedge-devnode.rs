//! Developer entry points on a private containerd: `demo` (what `make demo` runs) and
//! `bench` (what `make bench` runs).

use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use containerd_shim_wasmedge::devnode::{
    free_port, images, repo, unique, wasm, Containerd, HttpContainer, Options, BUSYBOX_IMAGE,
    RUNC_RUNTIME, WASMEDGE_RUNTIME,
};
use containerd_shim_wasmedge::engine::slot::{InstanceSlot, SlotSpec};
use containerd_shim_wasmedge::engine::RunSpec;

#[derive(Parser)]
#[command(about = "Demo and benchmarks of containerd-shim-wasmedge on a private containerd")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the example edge function in HTTP mode under the shim and curl it.
    Demo,
    /// Container start latency and memory against runc, measured in one run.
    Bench {
        /// Interleaved rounds of the start-latency comparison.
        #[arg(long, default_value_t = 30)]
        rounds: usize,
        /// Only the in-process instance-start measurement (seconds, no containerd).
        #[arg(long)]
        instances_only: bool,
    },
}

const EDGE_IMAGE: &str = "localhost/edge-function:demo";
const EDGE_MODULE: &str = "/app/edge-function.wasm";
const HELLO_IMAGE: &str = "localhost/hello:bench";

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Demo => demo(),
        Command::Bench {
            instances_only: true,
            ..
        } => {
            let (start, cold, warm) = bench_instances()?;
            println!("instance start p50/p99 µs {start:.1?}; whole call {cold:.1?}; with a pre-created instance {warm:.1?}");
            Ok(())
        }
        Command::Bench { rounds, .. } => bench(rounds),
    }
}

fn demo() -> Result<()> {
    let node = Containerd::start();
    println!(
        "private containerd at {} (namespace {})",
        node.socket.display(),
        node.namespace
    );
    node.import(
        None,
        &images().rootfs(EDGE_IMAGE, &wasm("edge-function"), &[]),
        false,
    );

    let function = node.start_http(
        EDGE_IMAGE,
        &unique("edge"),
        &["wasmedge.io/version=v1", "wasmedge.io/policy=edge-strict"],
        &[EDGE_MODULE],
    );
    println!(
        "\nstarted {} in HTTP mode (wasmedge.io/mode=http) on 127.0.0.1:{}",
        function.id, function.port
    );
    let started = std::time::Instant::now();
    let seen = function
        .wait_ready(Duration::from_secs(120))
        .map_err(|seen| anyhow::anyhow!("never ready ({seen:?}): {}", node.log_text()))?;
    println!("/ready answered {seen:?} and was 200 after {} ms (the module is AOT-compiled before the container starts)", started.elapsed().as_millis());

    let base = function.url("");
    let transform = r#"{"action":"transform","data":"hello"}"#;
    let hash = r#"{"action":"hash","data":"hello"}"#;
    let calls: [&[&str]; 6] = [
        &["-H", "x-region: eu-west-1", "/api/v1/status?verbose=1"],
        &[
            "-H",
            "x-region: ap-east-1",
            "-X",
            "POST",
            "-d",
            transform,
            "/api/v1/process",
        ],
        &["-X", "POST", "-d", hash, "/api/v1/process"],
        &["-X", "PUT", "-d", "{}", "/api/v1/process"],
        &["/health"],
        &["/ready"],
    ];
    for call in calls {
        let (path, flags) = call.split_last().unwrap();
        let url = format!("{base}{path}");
        let mut args: Vec<&str> = vec!["-sS", "-w", "  [HTTP %{http_code}, %{time_total}s]\n"];
        args.extend_from_slice(flags);
        args.push(&url);
        println!(
            "\n$ curl {}",
            args[3..]
                .iter()
                .map(|a| if a.contains(' ') || a.contains('{') {
                    format!("'{a}'")
                } else {
                    a.to_string()
                })
                .collect::<Vec<_>>()
                .join(" ")
        );
        let out = std::process::Command::new("curl").args(&args).output()?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
    println!("\n$ curl {base}/metrics  (excerpt)");
    for line in function.get("/metrics").body.lines().filter(|l| {
        l.starts_with("wasmedge_http_requests_total")
            || l.contains("_count{")
            || l.contains("kind=\"pss\"")
    }) {
        println!("{line}");
    }
    let exit = node.stop_task(&function.id, "SIGTERM", Duration::from_secs(30));
    println!(
        "\nSIGTERM: in-flight requests drained, exit status 0{}",
        if exit.trim().is_empty() {
            String::new()
        } else {
            format!(" ({})", exit.trim())
        }
    );

    // The same module, command mode: one request on stdin, the response on stdout.
    let request = r#"{"path":"/api/v1/process","method":"POST","headers":{"x-region":"ap-east-1"},"body":"{\"action\":\"transform\",\"data\":\"hello\"}","query":{}}"#;
    let run = node.run_with_stdin(
        WASMEDGE_RUNTIME,
        EDGE_IMAGE,
        &unique("edge"),
        &[EDGE_MODULE],
        request.as_bytes(),
    );
    if run.code != 0 {
        bail!("command mode: exit {}: {}", run.code, run.stderr);
    }
    println!(
        "\nsame module in command mode (ctr run --rm, {} ms, AOT cache hit):\n{}",
        run.elapsed.as_millis(),
        run.stdout.trim()
    );
    Ok(())
}

struct Stats {
    min: f64,
    median: f64,
    p90: f64,
}

fn stats(mut ms: Vec<f64>) -> Stats {
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    Stats {
        min: ms[0],
        median: at(0.5),
        p90: at(0.9),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn bench(rounds: usize) -> Result<()> {
    let node = Containerd::start_with(Options::default());
    node.import(
        None,
        &images().rootfs(HELLO_IMAGE, &wasm("hello"), &[]),
        false,
    );
    node.import(None, &images().busybox(), false);

    // First start (AOT compile) against cached starts, each first start on an empty cache.
    let mut first = vec![];
    for _ in 0..3 {
        for entry in node.aot_entries() {
            std::fs::remove_file(entry)?;
        }
        let run = node.run_wasm(HELLO_IMAGE, &unique("first"), &[]);
        if run.code != 0 {
            bail!("hello failed: {}", run.stderr);
        }
        first.push(ms(run.elapsed));
    }

    // Interleaved so that both runtimes see the same machine state.
    let (mut wasm_ms, mut runc_ms) = (vec![], vec![]);
    for _ in 0..rounds {
        let w = node.run_wasm(HELLO_IMAGE, &unique("w"), &[]);
        let r = node.run(
            RUNC_RUNTIME,
            BUSYBOX_IMAGE,
            &unique("r"),
            &[],
            &["/bin/busybox", "true"],
        );
        if w.code != 0 || r.code != 0 {
            bail!(
                "bench run failed: wasm {} {} / runc {} {}",
                w.code,
                w.stderr,
                r.code,
                r.stderr
            );
        }
        wasm_ms.push(ms(w.elapsed));
        runc_ms.push(ms(r.elapsed));
    }
    let (w, r, f) = (stats(wasm_ms), stats(runc_ms), stats(first));

    let wasm_pss = sleeping_pss(
        &node,
        WASMEDGE_RUNTIME,
        HELLO_IMAGE,
        &["/app/hello.wasm", "sleep", "30"],
    )?;
    let runc_pss = sleeping_pss(
        &node,
        RUNC_RUNTIME,
        BUSYBOX_IMAGE,
        &["/bin/busybox", "sleep", "30"],
    )?;
    let http = bench_http(&node)?;

    println!(
        "containerd-shim-wasmedge bench ({} UTC, {rounds} interleaved rounds, {} cores)",
        now(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!();
    println!("| `ctr run --rm` start to exit | min ms | median ms | p90 ms | median vs runc |");
    println!("|---|---|---|---|---|");
    println!(
        "| runc, busybox `true` | {:.1} | {:.1} | {:.1} | 1.00 |",
        r.min, r.median, r.p90
    );
    println!(
        "| wasmedge shim, hello.wasm (AOT cached) | {:.1} | {:.1} | {:.1} | {:.2} |",
        w.min,
        w.median,
        w.p90,
        w.median / r.median
    );
    println!(
        "| wasmedge shim, hello.wasm (first start: AOT compile) | {:.1} | {:.1} | {:.1} | {:.2} |",
        f.min,
        f.median,
        f.p90,
        f.median / r.median
    );
    println!();
    println!("| memory while the workload sleeps (PSS, shim + container processes) | MB |");
    println!("|---|---|");
    println!(
        "| runc shim + busybox sleep | {:.1} |",
        runc_pss as f64 / 1024.0
    );
    println!(
        "| wasmedge shim + hello.wasm sleep | {:.1} |",
        wasm_pss as f64 / 1024.0
    );
    http.print();
    Ok(())
}

/// HTTP mode: instance start, throughput against the same handler served natively, memory.
struct HttpBench {
    /// Instance creation per request, µs: (p50, p99).
    instance_start: (f64, f64),
    /// Whole call (instance + run + response), µs, without and with a pre-created instance.
    call_cold: (f64, f64),
    call_warm: (f64, f64),
    /// (connections, wasm, native) results of wrk.
    throughput: Vec<(u32, Wrk, Wrk)>,
    containers: usize,
    pss_per_container_kb: u64,
}

impl HttpBench {
    fn print(&self) {
        println!();
        println!("HTTP function mode, edge-function (fresh instance per request)");
        println!();
        println!("| measurement | p50 | p99 | goal |");
        println!("|---|---|---|---|");
        let (p50, p99) = self.instance_start;
        println!("| instance start per request (in-process, 5000 requests) | {p50:.1} µs | {p99:.1} µs | p50 ≤ 50 µs, p99 ≤ 150 µs |");
        let (p50, p99) = self.call_cold;
        println!("| whole call: instance + handler + response | {p50:.1} µs | {p99:.1} µs | – |");
        let (p50, p99) = self.call_warm;
        println!("| whole call with a pre-created instance (warm pool) | {p50:.1} µs | {p99:.1} µs | – |");
        println!();
        println!("| wrk on loopback, GET, 5 s | wasm req/s | native req/s | wasm/native | wasm p50 / p99 ms | native p50 / p99 ms | goal |");
        println!("|---|---|---|---|---|---|---|");
        for (connections, wasm, native) in &self.throughput {
            println!(
                "| {connections} connection(s) | {:.0} | {:.0} | {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | ≥ 0.5× native |",
                wasm.requests_per_sec,
                native.requests_per_sec,
                wasm.requests_per_sec / native.requests_per_sec,
                wasm.p50_ms,
                wasm.p99_ms,
                native.p50_ms,
                native.p99_ms
            );
        }
        println!();
        println!(
            "| PSS per running HTTP-mode container ({} running, shim + container processes) | {:.1} MB | goal ≤ 10 MB |",
            self.containers,
            self.pss_per_container_kb as f64 / 1024.0
        );
        println!("|---|---|---|");
    }
}

struct Wrk {
    requests_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

const HTTP_CONTAINERS: usize = 20;
const EDGE_GET: &str = "/api/v1/process";

fn bench_http(node: &Containerd) -> Result<HttpBench> {
    let (instance_start, call_cold, call_warm) = bench_instances()?;

    node.import(
        None,
        &images().rootfs(EDGE_IMAGE, &wasm("edge-function"), &[]),
        false,
    );
    let function = node.start_http(
        EDGE_IMAGE,
        &unique("http"),
        &[
            "wasmedge.io/version=bench",
            "wasmedge.io/warm-pool=2",
            "wasmedge.io/max-concurrency=2",
        ],
        &[EDGE_MODULE],
    );
    if let Err(seen) = function.wait_ready(Duration::from_secs(120)) {
        bail!("HTTP function never ready ({seen:?}): {}", node.log_text());
    }
    let native_port = free_port();
    let mut native = std::process::Command::new(
        repo().join("examples/native-edge-server/target/release/native-edge-server"),
    )
    .arg(native_port.to_string())
    .stdout(std::process::Stdio::null())
    .spawn()?;
    std::thread::sleep(Duration::from_millis(300));
    let mut throughput = vec![];
    for connections in [1u32, 16] {
        let n = wrk(native_port, connections);
        let w = wrk(function.port, connections);
        throughput.push((connections, w?, n?));
    }
    let _ = native.kill();
    let _ = native.wait();
    node.stop_task(&function.id, "SIGTERM", Duration::from_secs(30));

    let before = node.pss_kb();
    let mut running: Vec<HttpContainer> = vec![];
    for _ in 0..HTTP_CONTAINERS {
        running.push(node.start_http(EDGE_IMAGE, &unique("pss"), &[], &[EDGE_MODULE]));
    }
    for f in &running {
        if f.wait_ready(Duration::from_secs(120)).is_err() || f.get(EDGE_GET).status != 200 {
            bail!("HTTP container {} did not serve", f.id);
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let pss = node.pss_kb().saturating_sub(before);
    for f in &running {
        node.stop_task(&f.id, "SIGTERM", Duration::from_secs(30));
    }
    node.wait_no_shims(Duration::from_secs(20));
    Ok(HttpBench {
        instance_start,
        call_cold,
        call_warm,
        throughput,
        containers: HTTP_CONTAINERS,
        pss_per_container_kb: pss / HTTP_CONTAINERS as u64,
    })
}

type Quantiles = (f64, f64);

/// Instance start and whole-call times of the engine's per-request path, in this process.
fn bench_instances() -> Result<(Quantiles, Quantiles, Quantiles)> {
    use containerd_shim_wasmedge::engine::{self, cache::AotCache};
    wasmedge_sdk::LogManager::log_off();
    let cache_dir = std::env::temp_dir().join(unique("bench-aot"));
    let cache = AotCache::open(&cache_dir, 1 << 30)?;
    let bytes = std::fs::read(wasm("edge-function"))?;
    let prepared = engine::prepare_module(
        &bytes,
        "edge-function.wasm",
        None,
        Some(&cache),
        false,
        |b| engine::aot::compile_checked(b, &cache_dir),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let module = prepared.load().map_err(|e| anyhow::anyhow!("{e}"))?;
    let spec = SlotSpec {
        run: RunSpec {
            func: "_start".into(),
            args: vec!["edge-function.wasm".into()],
            envs: vec![],
            preopens: vec![],
            max_memory_pages: 256,
            allowed_hosts: vec![],
            max_network_requests: 0,
            max_disk_bytes: 0,
            disk: None,
        },
        timeout: Duration::from_secs(5),
    };
    let request = br#"{"path":"/api/v1/process","method":"GET","headers":{"x-region":"ap-east-1"},"body":null,"query":{}}"#;
    let mut slot = InstanceSlot::new(&module, spec)?;
    let (mut starts, mut cold, mut warm) = (vec![], vec![], vec![]);
    for i in 0..5200 {
        let began = std::time::Instant::now();
        let call = slot.call(request.to_vec())?;
        let took = began.elapsed();
        if !call.stdout.starts_with(b"{\"status_code\":200") {
            bail!(
                "unexpected response: {}",
                String::from_utf8_lossy(&call.stdout)
            );
        }
        if i >= 200 {
            starts.push(call.instance_start.as_secs_f64() * 1e6);
            cold.push(took.as_secs_f64() * 1e6);
        }
    }
    for i in 0..5200 {
        slot.prepare()?;
        let began = std::time::Instant::now();
        slot.call(request.to_vec())?;
        if i >= 200 {
            warm.push(began.elapsed().as_secs_f64() * 1e6);
        }
    }
    let _ = std::fs::remove_dir_all(&cache_dir);
    Ok((p50_p99(starts), p50_p99(cold), p50_p99(warm)))
}

fn p50_p99(mut v: Vec<f64>) -> Quantiles {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

/// `wrk` for 5 s against a loopback port.
fn wrk(port: u16, connections: u32) -> Result<Wrk> {
    let out = std::process::Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{connections}"),
            "-d5s",
            "--latency",
            &format!("http://127.0.0.1:{port}{EDGE_GET}"),
        ])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_string()))
    };
    let requests_per_sec = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("wrk: {text}"))?;
    if text.contains("Non-2xx") {
        bail!("wrk saw errors against port {port}: {text}");
    }
    Ok(Wrk {
        requests_per_sec,
        p50_ms: wrk_ms(field("50%")),
        p99_ms: wrk_ms(field("99%")),
    })
}

/// wrk prints latencies as 812.00us, 1.23ms or 1.01s.
fn wrk_ms(value: Option<String>) -> f64 {
    let v = value.unwrap_or_default();
    let number = |suffix: &str| v.strip_suffix(suffix).and_then(|n| n.parse::<f64>().ok());
    number("us")
        .map(|n| n / 1000.0)
        .or_else(|| number("ms"))
        .or_else(|| number("s").map(|n| n * 1000.0))
        .unwrap_or(f64::NAN)
}

/// Starts a sleeping container, measures the PSS of its shim and processes, removes it.
fn sleeping_pss(node: &Containerd, runtime: &str, image: &str, args: &[&str]) -> Result<u64> {
    let id = unique("pss");
    let cgroup = node.cgroup_of(&id);
    let mut cmd = vec![
        "run",
        "-d",
        "--runtime",
        runtime,
        "--cgroup",
        cgroup.as_str(),
        image,
        id.as_str(),
    ];
    cmd.extend_from_slice(args);
    node.ctr_ok(&cmd);
    std::thread::sleep(Duration::from_secs(2));
    let pss = node.pss_kb();
    node.ctr_ok(&["task", "kill", "-s", "SIGKILL", &id]);
    for _ in 0..100 {
        if node.ctr(&["task", "delete", &id]).status.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    node.ctr_ok(&["container", "rm", &id]);
    node.wait_no_shims(Duration::from_secs(10));
    Ok(pss)
}

fn now() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M"])
        .output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
