//! Multi-mode WASI test module used to exercise containerd-shim-wasmedge.
//!
//! The mode is selected by argv[1]; see `usage()` for the list.

use std::io::{self, Read, Write};
use std::process;

fn usage() -> &'static str {
    "usage: hello [MODE [ARGS...]]\n\
     modes:\n\
     \x20 (none)              print 'hello from wasmedge'\n\
     \x20 exit N              exit with code N\n\
     \x20 args A B ...        print argc and every argv element\n\
     \x20 env [NAME ...]      print selected (or all) environment variables\n\
     \x20 cat PATH            print a file's contents\n\
     \x20 write PATH TEXT     write TEXT to a file\n\
     \x20 stderr MSG          print MSG to stderr\n\
     \x20 loop                spin forever\n\
     \x20 sleep SECS          sleep for SECS seconds\n\
     \x20 compute N           deterministic CPU-bound work\n\
     \x20 grow PAGES          grow linear memory by PAGES 64KiB pages\n\
     \x20 trap                execute the wasm 'unreachable' instruction\n"
}

/// Flush both standard streams and terminate with `code`.
fn exit(code: i32) -> ! {
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    process::exit(code)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str);
    let rest: &[String] = if args.len() > 2 { &args[2..] } else { &[] };

    let code = match mode {
        None => {
            println!("hello from wasmedge");
            0
        }
        Some("exit") => cmd_exit(rest),
        Some("args") => cmd_args(&args),
        Some("env") => cmd_env(rest),
        Some("cat") => cmd_cat(rest),
        Some("write") => cmd_write(rest),
        Some("stderr") => {
            eprintln!("{}", rest.join(" "));
            0
        }
        Some("loop") => cmd_loop(),
        Some("sleep") => cmd_sleep(rest),
        Some("compute") => cmd_compute(rest),
        Some("grow") => cmd_grow(rest),
        Some("trap") => cmd_trap(),
        Some(other) => {
            eprintln!("unknown mode: {other}");
            eprint!("{}", usage());
            64
        }
    };
    exit(code)
}

fn bad_usage(msg: &str) -> i32 {
    eprintln!("{msg}");
    eprint!("{}", usage());
    64
}

fn cmd_exit(rest: &[String]) -> i32 {
    let n: i32 = match rest.first().map(|s| s.parse()) {
        Some(Ok(n)) => n,
        _ => return bad_usage("exit: expected an integer exit code"),
    };
    println!("exiting with {n}");
    n
}

fn cmd_args(args: &[String]) -> i32 {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "argc={}", args.len());
    for (i, a) in args.iter().enumerate() {
        let _ = writeln!(out, "argv[{i}]={a}");
    }
    0
}

fn cmd_env(names: &[String]) -> i32 {
    let mut out = io::stdout().lock();
    if names.is_empty() {
        let mut vars: Vec<(String, String)> = std::env::vars().collect();
        vars.sort();
        for (k, v) in &vars {
            let _ = writeln!(out, "{k}={v}");
        }
        let _ = writeln!(out, "envc={}", vars.len());
    } else {
        for name in names {
            match std::env::var(name) {
                Ok(v) => {
                    let _ = writeln!(out, "{name}={v}");
                }
                Err(_) => {
                    let _ = writeln!(out, "{name} is unset");
                }
            }
        }
    }
    0
}

fn cmd_cat(rest: &[String]) -> i32 {
    let Some(path) = rest.first() else {
        return bad_usage("cat: expected PATH");
    };
    let mut buf = Vec::new();
    let res = std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut buf));
    match res {
        Ok(_) => {
            let mut out = io::stdout().lock();
            let _ = out.write_all(&buf);
            0
        }
        Err(e) => {
            eprintln!("cat {path}: {e}");
            2
        }
    }
}

fn cmd_write(rest: &[String]) -> i32 {
    let (Some(path), Some(text)) = (rest.first(), rest.get(1)) else {
        return bad_usage("write: expected PATH TEXT");
    };
    match std::fs::write(path, text.as_bytes()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("write {path}: {e}");
            2
        }
    }
}

fn cmd_loop() -> i32 {
    println!("looping");
    let _ = io::stdout().flush();
    let mut counter: u64 = 0;
    loop {
        counter = std::hint::black_box(counter.wrapping_add(1));
    }
}

fn cmd_sleep(rest: &[String]) -> i32 {
    let secs: f64 = match rest.first().map(|s| s.parse()) {
        Some(Ok(s)) if s >= 0.0 && f64::is_finite(s) => s,
        _ => return bad_usage("sleep: expected a non-negative number of seconds"),
    };
    println!("sleeping {}", rest[0]);
    let _ = io::stdout().flush();
    std::thread::sleep(std::time::Duration::from_secs_f64(secs));
    println!("slept");
    0
}

/// Deterministic CPU-bound mixing: xorshift64* over a small state array.
fn compute(n: u64) -> u64 {
    let mut state = [
        0x9E37_79B9_7F4A_7C15u64,
        0xBF58_476D_1CE4_E5B9,
        0x94D0_49BB_1331_11EB,
        0x2545_F491_4F6C_DD1D,
        0x0123_4567_89AB_CDEF,
        0xFEDC_BA98_7654_3210,
        0x0F0F_0F0F_F0F0_F0F0,
        0x5555_AAAA_3333_CCCC,
    ];
    let mut x: u64 = 0x853C_49E6_748F_EA9B;
    for i in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let idx = (x as usize) & (state.len() - 1);
        state[idx] = (state[idx] ^ x ^ i).rotate_left(23).wrapping_mul(0x2545_F491_4F6C_DD1D);
        x = x.wrapping_add(state[(idx + 3) & (state.len() - 1)]);
        // Second dependent round (splitmix64 finalizer) to lengthen the chain.
        x ^= x >> 30;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^= x >> 27;
        x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
    }
    state.iter().fold(x, |acc, &s| acc.rotate_left(7) ^ s)
}

fn cmd_compute(rest: &[String]) -> i32 {
    let n: u64 = match rest.first().map(|s| s.replace('_', "").parse()) {
        Some(Ok(n)) => n,
        _ => return bad_usage("compute: expected a non-negative integer N"),
    };
    let result = compute(std::hint::black_box(n));
    println!("compute {n} = {result}");
    0
}

#[cfg(target_arch = "wasm32")]
fn cmd_grow(rest: &[String]) -> i32 {
    let pages: usize = match rest.first().map(|s| s.parse()) {
        Some(Ok(p)) => p,
        _ => return bad_usage("grow: expected a number of 64KiB pages"),
    };
    let old = core::arch::wasm32::memory_grow(0, pages);
    if old == usize::MAX {
        println!("grow failed");
        1
    } else {
        println!("grow ok {old}");
        0
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn cmd_grow(_rest: &[String]) -> i32 {
    eprintln!("grow: only supported on wasm32");
    1
}

#[cfg(target_arch = "wasm32")]
fn cmd_trap() -> i32 {
    let _ = io::stdout().flush();
    core::arch::wasm32::unreachable()
}

#[cfg(not(target_arch = "wasm32"))]
fn cmd_trap() -> i32 {
    let _ = io::stdout().flush();
    process::abort()
}
