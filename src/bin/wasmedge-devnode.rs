//! Developer entry points on a private containerd: `demo` (what `make demo` runs) and
//! `bench` (what `make bench` runs).

use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use containerd_shim_wasmedge::devnode::{
    images, unique, wasm, Containerd, Options, BUSYBOX_IMAGE, RUNC_RUNTIME, WASMEDGE_RUNTIME,
};

#[derive(Parser)]
#[command(about = "Demo and benchmarks of containerd-shim-wasmedge on a private containerd")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the example edge function under the shim and print its responses.
    Demo,
    /// Container start latency and memory against runc, measured in one run.
    Bench {
        /// Interleaved rounds of the start-latency comparison.
        #[arg(long, default_value_t = 30)]
        rounds: usize,
    },
}

const EDGE_IMAGE: &str = "localhost/edge-function:demo";
const EDGE_MODULE: &str = "/app/edge-function.wasm";
const HELLO_IMAGE: &str = "localhost/hello:bench";

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Demo => demo(),
        Command::Bench { rounds } => bench(rounds),
    }
}

fn demo() -> Result<()> {
    let node = Containerd::start();
    println!("private containerd at {} (namespace {})", node.socket.display(), node.namespace);
    node.import(None, &images().rootfs(EDGE_IMAGE, &wasm("edge-function"), &[]), false);
    let requests = [
        ("POST transform", r#"{"path":"/api/v1/process","method":"POST","headers":{"content-type":"application/json","x-region":"ap-east-1"},"body":"{\"action\":\"transform\",\"data\":\"hello\"}","query":{}}"#),
        ("POST hash", r#"{"path":"/api/v1/process","method":"POST","headers":{"x-region":"ap-east-1"},"body":"{\"action\":\"hash\",\"data\":\"hello\"}","query":{}}"#),
        ("GET", r#"{"path":"/api/v1/status","method":"GET","headers":{"x-region":"eu-west-1"},"query":{"verbose":"1"}}"#),
        ("DELETE", r#"{"path":"/api/v1/process","method":"DELETE","headers":{},"query":{}}"#),
    ];
    for (name, request) in requests {
        let run = node.run_with_stdin(WASMEDGE_RUNTIME, EDGE_IMAGE, &unique("edge"), &[EDGE_MODULE], request.as_bytes());
        if run.code != 0 {
            bail!("{name}: exit {}: {}", run.code, run.stderr);
        }
        println!("\n== {name} ({} ms, ctr run --rm through containerd-shim-wasmedge-v1)", run.elapsed.as_millis());
        println!("request:  {request}");
        print!("response: {}", run.stdout);
    }
    let log = node.log_text();
    println!(
        "\nAOT: compiled {} time(s), cache hits {} (the first start compiles, later ones reuse it)",
        log.matches("aot: compiled").count(),
        log.matches("aot: cache hit").count()
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
    Stats { min: ms[0], median: at(0.5), p90: at(0.9) }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn bench(rounds: usize) -> Result<()> {
    let node = Containerd::start_with(Options::default());
    node.import(None, &images().rootfs(HELLO_IMAGE, &wasm("hello"), &[]), false);
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
        let r = node.run(RUNC_RUNTIME, BUSYBOX_IMAGE, &unique("r"), &[], &["/bin/busybox", "true"]);
        if w.code != 0 || r.code != 0 {
            bail!("bench run failed: wasm {} {} / runc {} {}", w.code, w.stderr, r.code, r.stderr);
        }
        wasm_ms.push(ms(w.elapsed));
        runc_ms.push(ms(r.elapsed));
    }
    let (w, r, f) = (stats(wasm_ms), stats(runc_ms), stats(first));

    let wasm_pss = sleeping_pss(&node, WASMEDGE_RUNTIME, HELLO_IMAGE, &["/app/hello.wasm", "sleep", "30"])?;
    let runc_pss = sleeping_pss(&node, RUNC_RUNTIME, BUSYBOX_IMAGE, &["/bin/busybox", "sleep", "30"])?;

    println!("containerd-shim-wasmedge bench ({} UTC, {rounds} interleaved rounds, {} cores)", now(), std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0));
    println!();
    println!("| `ctr run --rm` start to exit | min ms | median ms | p90 ms | median vs runc |");
    println!("|---|---|---|---|---|");
    println!("| runc, busybox `true` | {:.1} | {:.1} | {:.1} | 1.00 |", r.min, r.median, r.p90);
    println!("| wasmedge shim, hello.wasm (AOT cached) | {:.1} | {:.1} | {:.1} | {:.2} |", w.min, w.median, w.p90, w.median / r.median);
    println!("| wasmedge shim, hello.wasm (first start: AOT compile) | {:.1} | {:.1} | {:.1} | {:.2} |", f.min, f.median, f.p90, f.median / r.median);
    println!();
    println!("| memory while the workload sleeps (PSS, shim + container processes) | MB |");
    println!("|---|---|");
    println!("| runc shim + busybox sleep | {:.1} |", runc_pss as f64 / 1024.0);
    println!("| wasmedge shim + hello.wasm sleep | {:.1} |", wasm_pss as f64 / 1024.0);
    Ok(())
}

/// Starts a sleeping container, measures the PSS of its shim and processes, removes it.
fn sleeping_pss(node: &Containerd, runtime: &str, image: &str, args: &[&str]) -> Result<u64> {
    let id = unique("pss");
    let cgroup = node.cgroup_of(&id);
    let mut cmd = vec!["run", "-d", "--runtime", runtime, "--cgroup", cgroup.as_str(), image, id.as_str()];
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
    let out = std::process::Command::new("date").args(["-u", "+%Y-%m-%d %H:%M"]).output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
}
