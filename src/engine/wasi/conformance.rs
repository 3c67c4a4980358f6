//! The official WASI testsuite in process: every test against this WASI implementation, no
//! containerd, interpreted (seconds). `tests/wasi_testsuite.rs` runs the same tests through the
//! shim. Skips, saying why, where the suite is absent.

use std::path::Path;
use std::time::Duration;

use wasmedge_sdk::Module;

use super::*;
use crate::devnode::wasi_testsuite::{self, Case, Tally};

/// Bounds a test that hangs (none should); the suite's tests take milliseconds.
const TIME_LIMIT: Duration = Duration::from_secs(60);

/// (exit code, stdout) of one run, or why it did not finish.
fn run_case(case: &Case, scratch: &Path) -> Result<(i32, String), String> {
    let module = Module::from_file(None, &case.wasm).map_err(|e| format!("load: {e}"))?;
    let dirs = case
        .copy_dirs(scratch)
        .map_err(|e| format!("copy dirs: {e}"))?;
    let mut args = vec![case
        .wasm
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()];
    args.extend(case.args.iter().cloned());
    let ctx = WasiCtx::new(WasiConfig {
        args,
        envs: case.env.clone(),
        preopens: dirs
            .into_iter()
            .map(|(guest, host)| Preopen {
                guest,
                host,
                readonly: false,
                bound: None,
            })
            .collect(),
        stdin: Stdio::Null,
        stdout: Stdio::Buffer(Vec::new()),
        stderr: Stdio::Buffer(Vec::new()),
        ..Default::default()
    })
    .map_err(|e| format!("ctx: {e}"))?;
    let (result, mut ctx, _) = run_with_network(
        &module,
        "_start",
        ctx,
        net::NetCtx::default(),
        None,
        Some(TIME_LIMIT),
    );
    let stdout = String::from_utf8_lossy(&ctx.take_stdout()).into_owned();
    match result {
        Ok(()) => Ok((ctx.exit_code().map_or(0, |c| c as i32), stdout)),
        Err(e) => Err(format!(
            "did not finish: {e}; stdout {stdout:?}; stderr {:?}",
            String::from_utf8_lossy(&ctx.take_stderr())
        )),
    }
}

#[test]
fn the_wasi_testsuite_passes_in_process() {
    let Some(cases) = wasi_testsuite::cases_or_skip() else {
        return;
    };
    let mut tally = Tally::default();
    for case in &cases {
        let scratch = tempfile::tempdir().unwrap();
        let verdict = run_case(case, scratch.path()).and_then(|(code, out)| case.judge(code, &out));
        tally.record(case, verdict);
    }
    eprintln!("WASI testsuite in process: {tally}");
    assert!(
        tally.failed.is_empty() && tally.passed == cases.len(),
        "{tally}"
    );
}

/// One test, for debugging: `CSW_CASE=rust/fd_readdir CSW_WASI_TRACE=1 cargo test --lib
/// one_testsuite_case -- --ignored --nocapture`.
#[test]
#[ignore]
fn one_testsuite_case() {
    let root = wasi_testsuite::root().unwrap();
    let which = std::env::var("CSW_CASE").unwrap();
    let cases = wasi_testsuite::cases(&root).unwrap();
    let case = cases.iter().find(|c| c.id == which).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    eprintln!("{:?}", run_case(case, scratch.path()));
}
