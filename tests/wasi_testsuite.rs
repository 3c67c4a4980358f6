//! The official WASI testsuite through the shim, as a user runs a module: every test in its own
//! container under a private containerd, its dirs copied to a temp dir, bind-mounted and granted
//! by `wasmedge.io/allowed-dirs` under the test's own (relative) guest name, its env passed and
//! granted by `wasmedge.io/allowed-env`. A run passes as with upstream's runner: the exit code,
//! and stdout where the test gives it. Skips, saying why, where `../shared` is absent.

mod common;

use common::wasi_testsuite as suite;
use common::{images, unique, Containerd, Options, WASMEDGE_RUNTIME};

const IMAGE: &str = "localhost/wasi-testsuite:test";

/// Where the module of `case` is in the image.
fn module_path(case: &suite::Case) -> String {
    format!("/wasi-testsuite/{}.wasm", case.id)
}

/// Where a test dir is mounted in the container (and granted from).
fn mount_point(name: &str) -> String {
    format!("/{name}")
}

#[test]
fn the_wasi_testsuite_passes_through_the_shim() {
    let Some(cases) = suite::cases_or_skip() else {
        return;
    };

    // A node ceiling that grants exactly what the tests need, as an admin would.
    let mut env_names: Vec<&str> = cases.iter().flat_map(|c| c.env_names()).collect();
    env_names.sort();
    env_names.dedup();
    let mut dir_names: Vec<&str> = cases
        .iter()
        .flat_map(|c| c.dirs.iter().map(|d| d.name.as_str()))
        .collect();
    dir_names.sort();
    dir_names.dedup();
    let quoted = |names: &[&str]| {
        names
            .iter()
            .map(|n| format!("{n:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let dirs: Vec<String> = dir_names
        .iter()
        .map(|n| {
            format!(
                "{{ hostPath = {:?}, guestPath = {n:?}, readonly = false }}",
                mount_point(n)
            )
        })
        .collect();
    let ceiling = format!(
        "[ceiling]\nmaxMemoryPages = 512\nexecutionTimeoutMs = 30000\nallowedHosts = [\"api.example.com\"]\nallowedEnvVars = [\"APP_MODE\", \"REGION\", {}]\nallowedDirs = [{{ hostPath = \"/app/config\", guestPath = \"/config\", readonly = true }}, {}]\nmaxNetworkRequests = 50\n",
        quoted(&env_names),
        dirs.join(", ")
    );
    let c = Containerd::start_with(Options {
        node_config_extra: ceiling,
        ..Default::default()
    });

    // One image with every module.
    let modules: Vec<(String, Vec<u8>)> = cases
        .iter()
        .map(|case| (module_path(case), std::fs::read(&case.wasm).unwrap()))
        .collect();
    let mut entries: Vec<common::image::Entry> = modules
        .iter()
        .map(|(path, bytes)| common::image::Entry::File {
            path,
            bytes: bytes.clone(),
            mode: 0o644,
        })
        .collect();
    let points: Vec<String> = dir_names.iter().map(|n| mount_point(n)).collect();
    entries.extend(points.iter().map(|p| common::image::Entry::Dir(p)));
    let archive = common::image::build(&images().dir, IMAGE, &entries, &[modules[0].0.as_str()]);
    c.import(None, &archive, false);

    let mut tally = suite::Tally::default();
    for case in &cases {
        let scratch = tempfile::tempdir_in(&c.dir).unwrap();
        let dirs = case.copy_dirs(scratch.path()).unwrap();
        let mut flags: Vec<String> = vec![
            "--annotation".into(),
            "wasmedge.io/execution-timeout-ms=30000".into(),
            "--annotation".into(),
            format!(
                "wasmedge.io/allowed-dirs={}",
                dirs.iter()
                    .map(|(name, _)| format!("{}:{name}:rw", mount_point(name)))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            "--annotation".into(),
            format!("wasmedge.io/allowed-env={}", case.env_names().join(",")),
        ];
        for (name, host) in &dirs {
            flags.push("--mount".into());
            flags.push(format!(
                "type=bind,src={},dst={},options=rbind:rw",
                host.display(),
                mount_point(name)
            ));
        }
        for (k, v) in &case.env {
            flags.push("--env".into());
            flags.push(format!("{k}={v}"));
        }
        let mut args = vec![module_path(case)];
        args.extend(case.args.iter().cloned());
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = c.run(WASMEDGE_RUNTIME, IMAGE, &unique("wasi"), &flags, &args);
        let verdict = case
            .judge(r.code, &r.stdout)
            .map_err(|why| format!("{why}; stderr {:?}", r.stderr));
        tally.record(case, verdict);
    }
    eprintln!("WASI testsuite through the shim: {tally}");
    assert!(
        tally.failed.is_empty() && tally.passed == cases.len(),
        "{tally}"
    );
    c.assert_clean();
}
