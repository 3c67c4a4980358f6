//! A module that attacks its sandbox, one attack per mode. The shim's tests run it under each
//! policy and check that every attack is stopped and reported.

use std::io::Write;

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
        _ => {
            eprintln!("usage: hostile membomb|spin|read PATH|write PATH TEXT|env");
            64
        }
    };
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}
