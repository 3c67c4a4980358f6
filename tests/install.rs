//! `make install` / `make uninstall` on a node, redirected into a temp prefix.

mod common;

use std::process::Command;

fn install(prefix: &std::path::Path, action: &str) -> String {
    let out = Command::new("bash")
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
        .current_dir(common::repo())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "install.sh {action}: {text}");
    text
}

#[test]
fn install_is_idempotent_and_keeps_the_nodes_cri_settings() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let first = install(p, "install");
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

    let second = install(p, "install");
    assert!(
        second.contains("drop-in unchanged"),
        "second install must change nothing: {second}"
    );
    assert!(
        second.contains("bundle installed") && second.contains("(files changed: 1)"),
        "{second}"
    );
    assert!(!bundle.join("lib/libstale.so.1").exists());
    let third = install(p, "install");
    assert!(third.contains("bundle unchanged"), "{third}");
    let config = std::fs::read_to_string(p.join("etc/containerd/config.toml")).unwrap();
    assert_eq!(config.matches("conf.d/*.toml").count(), 1, "{config}");

    let dump = Command::new("containerd")
        .arg("--config")
        .arg(p.join("etc/containerd/config.toml"))
        .args(["config", "dump"])
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

    install(p, "uninstall");
    assert!(std::fs::symlink_metadata(p.join("usr/bin/containerd-shim-wasmedge-v1")).is_err());
    assert!(!bundle.exists(), "the bundle must go on uninstall");
    assert!(!p.join("etc/containerd/conf.d/wasmedge.toml").exists());
    install(p, "uninstall");
}
