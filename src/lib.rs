//! containerd-shim-wasmedge: run AOT-compiled WebAssembly as containerd/Kubernetes containers.
//!
//! Data flows one way: `node_config` (how the node is set up) → `shim` (containerd glue,
//! OCI spec → run request) → `engine` (WasmEdge, AOT compilation and its cache); `http` (function mode: HTTP requests →
//! fresh engine instances, metrics) sits between `shim` and `engine`.
//! `controller` is the cluster side: the canary weight controller (`wasm-weight-controller`).

pub mod containerd_config;
pub mod controller;
pub mod devnode;
pub mod engine;
pub mod http;
pub mod node_config;
pub mod policy;
pub mod shim;

#[cfg(test)]
pub(crate) mod test_support {
    /// Set in a copy of the test binary that runs one test alone.
    const ALONE: &str = "CSW_TEST_ALONE";

    /// For tests that change the whole process (fork a zygote, install signal handlers): true
    /// in a fresh copy of the test binary that runs only the test `name`, where the test does
    /// its work. In the ordinary run it starts that copy, asserts it passed (within 300 s: a
    /// hang is a failure, not a stuck test run) and returns false.
    pub fn in_a_process_of_its_own(name: &str) -> bool {
        if std::env::var(ALONE).as_deref() == Ok(name) {
            return true;
        }
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--test-threads=1", "--include-ignored"])
            .env(ALONE, name)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{:?}\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        false
    }
}
