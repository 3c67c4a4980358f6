//! A module that attacks its sandbox, one attack per mode. The shim's tests run it under each
//! policy and check that every attack is stopped and reported.

use std::io::Write;

#[link(wasm_import_module = "edge_http")]
extern "C" {
    /// Outbound HTTP through the host. `req` is `METHOD URL` (body after a newline);
    /// writes the response body into `out` and returns its length, or a negative error:
    /// -1 host not allowed, -2 request limit reached, -3 network failure, -4 bad request.
    fn fetch(req: *const u8, req_len: u32, out: *mut u8, out_cap: u32) -> i32;
}

fn http(method: &str, url: &str) -> Result<String, i32> {
    let req = format!("{method} {url}");
    let mut out = vec![0u8; 64 * 1024];
    let n = unsafe { fetch(req.as_ptr(), req.len() as u32, out.as_mut_ptr(), out.len() as u32) };
    if n < 0 {
        return Err(n);
    }
    out.truncate(n as usize);
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Never reached; read as volatile so that the recursion below cannot be folded away.
static mut DEPTH_LIMIT: u64 = u64::MAX;

/// Recursion that no optimizer turns into a loop: `f(x) = f(x + 1) - x`. It keeps nothing in
/// linear memory (no shadow-stack frame), so it runs out of the native stack of AOT code.
#[inline(never)]
fn deep(x: u64) -> u64 {
    // SAFETY: a plain read of a static nobody writes.
    if x == unsafe { std::ptr::read_volatile(std::ptr::addr_of!(DEPTH_LIMIT)) } {
        return 0;
    }
    deep(x + 1).wrapping_sub(x)
}

/// Writes `mib` MiB to stdout, the same buffer again and again.
fn flood_stdout(mib: usize) {
    let block = vec![b'x'; 1 << 20];
    let mut out = std::io::stdout().lock();
    for _ in 0..mib {
        let _ = out.write_all(&block);
    }
    let _ = out.flush();
}

#[link(wasm_import_module = "wasi_snapshot_preview1")]
extern "C" {
    /// WASI's own; std has no way to call it.
    fn fd_allocate(fd: i32, offset: i64, len: i64) -> i32;
}

/// Appends 64 KiB blocks to `path` until a write fails; says how far it got and why.
fn fill_disk(path: &str) -> String {
    let mut file = match std::fs::OpenOptions::new().create(true).append(true).open(path) {
        Ok(f) => f,
        Err(e) => return format!("wrote 0 bytes, then: {e}"),
    };
    let block = vec![b'd'; 64 * 1024];
    let mut total = 0u64;
    loop {
        match file.write(&block) {
            Ok(0) => return format!("wrote {total} bytes, then: a write of 0 bytes"),
            Ok(n) => total += n as u64,
            Err(e) => return format!("wrote {total} bytes, then: {e}"),
        }
    }
}

/// The attacks on the quota beside plain writes: reserve blocks, a sparse size, and
/// files kept open after their name is gone (each round: write 512 KiB, keep it open, unlink).
fn disk_tricks(dir: &str) -> String {
    use std::os::fd::AsRawFd;
    let mut said = Vec::new();
    let path = format!("{dir}/reserve");
    match std::fs::File::create(&path) {
        Ok(f) => {
            // SAFETY: a WASI call on a descriptor we own.
            let e = unsafe { fd_allocate(f.as_raw_fd(), 0, 256 << 20) };
            said.push(format!("fd_allocate 256 MiB: errno {e}"));
            match f.set_len(1 << 40) {
                Ok(()) => said.push("set_len 1 TiB: ok".to_string()),
                Err(e) => said.push(format!("set_len 1 TiB: {e}")),
            }
        }
        Err(e) => said.push(format!("create {path}: {e}")),
    }
    let _ = std::fs::remove_file(&path);
    let mut kept = Vec::new();
    let block = vec![b'k'; 512 * 1024];
    for round in 0..8 {
        let path = format!("{dir}/kept-{round}");
        let outcome = std::fs::File::create(&path).and_then(|mut f| {
            f.write_all(&block)?;
            std::fs::remove_file(&path)?;
            Ok(f)
        });
        match outcome {
            Ok(f) => kept.push(f),
            Err(e) => {
                said.push(format!("unlinked-but-open: {} rounds, then: {e}", round));
                break;
            }
        }
    }
    said.join("; ")
}

/// Marks left in the instance by a request; a fresh instance shows none of them.
static mut CALLS: u32 = 0;
static mut SCRATCH: [u8; 4096] = [0; 4096];

/// HTTP mode (`hostile serve` with `wasmedge.io/mode: http`): one attack or probe per path.
fn serve(req: edge_sdk::EdgeRequest) -> edge_sdk::EdgeResponse {
    use edge_sdk::EdgeResponse;
    let q = |k: &str| req.query.get(k).cloned().unwrap_or_default();
    match req.path.as_str() {
        "/trap" => core::arch::wasm32::unreachable(),
        "/spin" => loop {
            std::hint::black_box(());
        },
        "/membomb" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                let mut block = vec![0u8; 1 << 20];
                block[0] = 1;
                hoard.push(block);
            }
        }
        "/exit" => std::process::exit(q("code").parse().unwrap_or(1)),
        "/sleep" => {
            std::thread::sleep(std::time::Duration::from_millis(q("ms").parse().unwrap_or(1000)));
            EdgeResponse::json(200, &serde_json::json!({ "slept": q("ms") }))
        }
        "/recurse" => EdgeResponse::json(200, &serde_json::json!({ "depth": deep(0) })),
        // A response far larger than the module's memory (stdout is not the guest's memory).
        "/bigout" => {
            flood_stdout(q("mib").parse().unwrap_or(1024));
            std::process::exit(0)
        }
        "/garbage" => {
            println!("this is not JSON");
            std::process::exit(0)
        }
        // What an earlier request left behind, then leave marks and stay a while (so that
        // concurrent requests overlap); the id proves each response belongs to its request.
        "/state" => {
            // SAFETY: single-threaded guest.
            let (calls, dirty) = unsafe {
                CALLS += 1;
                let scratch = &mut *std::ptr::addr_of_mut!(SCRATCH);
                let dirty = scratch.iter().filter(|b| **b != 0).count();
                scratch.fill(0xAB);
                (CALLS, dirty)
            };
            let ms: u64 = q("ms").parse().unwrap_or(0);
            if ms > 0 {
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
            EdgeResponse::json(200, &serde_json::json!({ "id": q("id"), "calls": calls, "dirty": dirty }))
        }
        "/read" => match std::fs::read_to_string(q("path")) {
            Ok(text) => EdgeResponse::json(200, &serde_json::json!({ "text": text })),
            Err(e) => EdgeResponse::error(403, &format!("read {}: {e}", q("path"))),
        },
        "/fill" => EdgeResponse::json(200, &serde_json::json!({ "fill": fill_disk(&q("path")) })),
        "/fetch" => match http("GET", &q("url")) {
            Ok(body) => EdgeResponse::json(200, &serde_json::json!({ "fetched": body })),
            Err(code) => EdgeResponse::error(502, &format!("fetch failed: {code}")),
        },
        _ => EdgeResponse::json(200, &serde_json::json!({ "path": req.path, "method": req.method, "body": req.body })),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("");
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let code = match mode {
        // Allocate 1 MiB blocks until the allocator fails (the runtime must stop us).
        "membomb" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                let mut block = vec![0u8; 1 << 20];
                block[0] = 1;
                hoard.push(block);
                if hoard.len() % 64 == 0 {
                    println!("holding {} MiB", hoard.len());
                }
            }
        }
        "spin" => {
            println!("spinning");
            let _ = std::io::stdout().flush();
            let mut x: u64 = 0;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        "read" => match std::fs::read_to_string(arg(2)) {
            Ok(text) => {
                print!("{text}");
                0
            }
            Err(e) => {
                eprintln!("read {}: {e}", arg(2));
                2
            }
        },
        "write" => match std::fs::write(arg(2), arg(3)) {
            Ok(()) => {
                println!("wrote {}", arg(2));
                0
            }
            Err(e) => {
                eprintln!("write {}: {e}", arg(2));
                2
            }
        },
        "env" => {
            let mut vars: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
            vars.sort();
            for v in &vars {
                println!("{v}");
            }
            0
        }
        "fetch" => match http("GET", &arg(2)) {
            Ok(body) => {
                println!("fetched: {body}");
                0
            }
            Err(e) => {
                eprintln!("fetch {} failed: {e}", arg(2));
                3
            }
        },
        // Request the URL N times; report how many went through.
        "flood" => {
            let n: u32 = arg(3).parse().unwrap_or(100);
            let (mut ok, mut refused) = (0, 0);
            for _ in 0..n {
                match http("GET", &arg(2)) {
                    Ok(_) => ok += 1,
                    Err(_) => refused += 1,
                }
            }
            println!("flood: {ok} ok, {refused} refused");
            0
        }
        "sleep" => {
            println!("sleeping");
            let _ = std::io::stdout().flush();
            std::thread::sleep(std::time::Duration::from_millis(arg(2).parse().unwrap_or(1000)));
            println!("woke up");
            0
        }
        "recurse" => {
            println!("depth {}", deep(0));
            0
        }
        "fill" => {
            println!("{}", fill_disk(&arg(2)));
            0
        }
        "disk-tricks" => {
            println!("{}", disk_tricks(&arg(2)));
            0
        }
        "serve" => {
            edge_sdk::serve(serve);
            0
        }
        _ => {
            eprintln!("usage: hostile membomb|spin|sleep MS|recurse|fill PATH|disk-tricks DIR|read PATH|write PATH TEXT|env|fetch URL|flood URL N|serve");
            64
        }
    };
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}
