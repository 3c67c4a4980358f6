//! `make install` / `make uninstall` on a node, redirected into a temp prefix.

mod common;

use std::process::Command;

/// install.sh as a node with containerd `line` runs it: that release's `config default` and
/// `config dump`.
fn install(prefix: &std::path::Path, action: &str, line: &str) -> String {
    install_with(prefix, action, &containerd_envs(prefix, line))
}

fn containerd_envs(prefix: &std::path::Path, line: &str) -> [(&'static str, String); 2] {
    let containerd = common::ContainerdRelease::of(line).containerd();
    [
        (
            "CONTAINERD_DEFAULT",
            format!("{} config default", containerd.display()),
        ),
        ("CONTAINERD_DUMP", dump_command(prefix, line)),
    ]
}

fn dump_command(prefix: &std::path::Path, line: &str) -> String {
    format!(
        "{} --config {} config dump",
        common::ContainerdRelease::of(line).containerd().display(),
        prefix.join("etc/containerd/config.toml").display()
    )
}

fn install_with(prefix: &std::path::Path, action: &str, envs: &[(&str, String)]) -> String {
    common::run_ok_all_output(
        Command::new("bash")
            .arg(common::repo().join("scripts/install.sh"))
            .arg(action)
            .env("PREFIX", prefix.join("usr"))
            .env("BUNDLE_DIR", prefix.join("opt/containerd-shim-wasmedge"))
            .env(
                "CONTAINERD_CONFIG",
                prefix.join("etc/containerd/config.toml"),
            )
            .env("DROPIN_DIR", prefix.join("etc/containerd/conf.d"))
            .env(
                "NODE_CONFIG_DIR",
                prefix.join("etc/containerd-shim-wasmedge"),
            )
            .env("RESTART", "never")
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .current_dir(common::repo()),
        &format!("install.sh {action}"),
    )
}

#[test]
fn install_on_containerd_1_7_is_idempotent_and_keeps_the_nodes_cri_settings() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let first = install(p, "install", "1.7");
    assert!(first.contains("drop-in written"), "{first}");
    let bundle = p.join("opt/containerd-shim-wasmedge");
    assert_eq!(
        std::fs::read_link(p.join("usr/bin/containerd-shim-wasmedge-v1")).unwrap(),
        bundle.join("bin/containerd-shim-wasmedge-v1")
    );
    for f in [
        "bin/containerd-shim-wasmedge-v1",
        "lib/libwasmedge.so.0",
        "lib/libc.so.6",
        "lib/ld-linux-x86-64.so.2",
    ] {
        assert!(bundle.join(f).is_file(), "{f} not installed: {first}");
    }
    assert!(p.join("etc/containerd-shim-wasmedge/config.toml").exists());
    // A library an older bundle had goes on the next install.
    std::fs::write(bundle.join("lib/libstale.so.1"), b"old").unwrap();

    let second = install(p, "install", "1.7");
    assert!(
        second.contains("drop-in unchanged"),
        "second install must change nothing: {second}"
    );
    assert!(
        second.contains("bundle installed") && second.contains("(files changed: 1)"),
        "{second}"
    );
    assert!(!bundle.join("lib/libstale.so.1").exists());
    let third = install(p, "install", "1.7");
    assert!(third.contains("bundle unchanged"), "{third}");
    let config = std::fs::read_to_string(p.join("etc/containerd/config.toml")).unwrap();
    assert_eq!(config.matches("conf.d/*.toml").count(), 1, "{config}");

    let dump = Command::new("sh")
        .arg("-c")
        .arg(dump_command(p, "1.7"))
        .output()
        .unwrap();
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.contains(r#"[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]"#),
        "runc lost:\n{dump}"
    );
    assert!(
        dump.contains(r#"[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.wasmedge]"#),
        "wasmedge missing:\n{dump}"
    );
    assert!(dump.contains(r#"runtime_type = "io.containerd.wasmedge.v1""#));

    install(p, "uninstall", "1.7");
    assert!(std::fs::symlink_metadata(p.join("usr/bin/containerd-shim-wasmedge-v1")).is_err());
    assert!(!bundle.exists(), "the bundle must go on uninstall");
    assert!(!p.join("etc/containerd/conf.d/wasmedge.toml").exists());
    install(p, "uninstall", "1.7");
}

/// containerd 2.3 (config version 3 and later): the drop-in holds the runtime alone, in the
/// runtime plugin, and the containerd that reads it has both runtimes.
#[test]
fn install_on_containerd_2_writes_a_drop_in_of_its_config_version() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let dump = dump_command(p, "2.3");
    let envs = containerd_envs(p, "2.3");
    let first = install_with(p, "install", &envs);
    assert!(first.contains("drop-in written"), "{first}");
    let dropin = std::fs::read_to_string(p.join("etc/containerd/conf.d/wasmedge.toml")).unwrap();
    assert!(
        dropin.contains("io.containerd.cri.v1.runtime")
            && !dropin.contains("io.containerd.grpc.v1.cri"),
        "{dropin}"
    );
    let second = install_with(p, "install", &envs);
    assert!(second.contains("drop-in unchanged"), "{second}");

    let out = Command::new("sh").arg("-c").arg(&dump).output().unwrap();
    let effective = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let effective: toml::Table = toml::from_str(&effective).unwrap();
    let runtimes = &effective["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"];
    assert_eq!(
        runtimes["wasmedge"]["runtime_type"].as_str(),
        Some("io.containerd.wasmedge.v1")
    );
    assert_eq!(
        runtimes["runc"]["runtime_type"].as_str(),
        Some("io.containerd.runc.v2"),
        "runc lost"
    );
    install_with(p, "uninstall", &envs);
    assert!(!p.join("etc/containerd/conf.d/wasmedge.toml").exists());
}
