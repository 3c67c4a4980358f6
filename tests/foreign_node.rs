//! The node bundle (`make bundle`) on a foreign node: a Debian 11 bullseye root file system
//! (glibc 2.31, older than the glibc the shim was built against), made by debootstrap
//! (scripts/foreign-rootfs.sh). The bundle's own installer puts it in; containerd (static, the
//! node's own) runs inside the root in a private mount namespace, and a wasm container runs
//! through the installed shim: exit code, a policy denial and the AOT cache.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{images, own_cgroup, repo, run_ok, unique};

fn script(name: &str) -> String {
    run_ok(Command::new("bash").arg(repo().join("scripts").join(name)))
        .trim()
        .to_string()
}

fn bundle() -> PathBuf {
    let b = repo().join("target/bundle/containerd-shim-wasmedge");
    assert!(
        b.join("install.sh").exists(),
        "{} is missing: run make bundle",
        b.display()
    );
    b
}

/// Removes the root file system (and the test's cgroup) even when an assertion fails.
struct Node {
    dir: PathBuf,
    cgroup: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        common::remove_cgroup_tree(&self.cgroup);
    }
}

#[test]
fn the_bundle_runs_wasm_on_a_bullseye_node() {
    let rootfs_tar = script("foreign-rootfs.sh");
    let containerd_bin = &common::ContainerdRelease::of("2.3").bin_dir;
    let bundle = bundle();
    let name = unique("foreign");
    let node = Node {
        dir: PathBuf::from("/tmp").join(&name),
        cgroup: format!("{}/{}", own_cgroup(), name),
    };
    let root = node.dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xf")
            .arg(&rootfs_tar)
            .arg("-C")
            .arg(&root),
    );
    let libc = run_ok(
        Command::new("chroot")
            .arg(&root)
            .arg("/lib/x86_64-linux-gnu/libc.so.6"),
    );
    assert!(
        libc.contains("release version 2.31"),
        "not a glibc 2.31 root: {libc}"
    );
    // The node's containerd (not part of the bundle).
    for bin in ["containerd", "ctr"] {
        std::fs::copy(
            containerd_bin.join(bin),
            root.join("usr/local/bin").join(bin),
        )
        .unwrap();
    }

    // The bundle's own installer, from outside, as the node-installer image does.
    let chroot = format!("chroot {}", root.display());
    let installed = run_ok(
        Command::new("sh")
            .arg(bundle.join("install.sh"))
            .arg("install")
            .env("HOST_ROOT", &root)
            .env("RESTART", "never")
            .env(
                "CONTAINERD_DEFAULT",
                format!("{chroot} /usr/local/bin/containerd config default"),
            )
            .env(
                "CONTAINERD_DUMP",
                format!("{chroot} /usr/local/bin/containerd --config /etc/containerd/config.toml config dump"),
            ),
    );
    assert!(
        installed.contains("bundle installed in /opt/containerd-shim-wasmedge"),
        "{installed}"
    );
    let shim = root.join("usr/local/bin/containerd-shim-wasmedge-v1");
    assert_eq!(
        std::fs::read_link(&shim).unwrap(),
        Path::new("/opt/containerd-shim-wasmedge/bin/containerd-shim-wasmedge-v1")
    );

    let hello = images().rootfs("localhost/hello:foreign", &common::wasm("hello"), &[]);
    std::fs::copy(&hello, root.join("tmp/hello.tar")).unwrap();
    let test = format!(
        r#"set -u
export PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
mount -t tmpfs tmpfs /run
ctr() {{ /usr/local/bin/ctr -n {name} "$@"; }}
setsid containerd --config /etc/containerd/config.toml >/var/log/containerd.log 2>&1 </dev/null &
i=0; until ctr version >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 600 ] || {{ echo "containerd did not start"; cat /var/log/containerd.log; exit 1; }}; sleep 0.1; done
ctr image import /tmp/hello.tar >/dev/null
run() {{ id=$1; shift; ctr run --rm --runtime io.containerd.wasmedge.v1 --cgroup {cg}/$id "$@"; }}
run first localhost/hello:foreign first /app/hello.wasm exit 7; echo "first exit=$?"
run second localhost/hello:foreign second /app/hello.wasm; echo "second exit=$?"
run denied --annotation wasmedge.io/policy=edge-lax localhost/hello:foreign denied /app/hello.wasm; echo "denied exit=$?"
ls /var/lib/containerd-shim-wasmedge/aot-cache | sed 's/^/aot entry: /'
echo "--- containerd log"
cat /var/log/containerd.log
kill %1; wait
"#,
        cg = node.cgroup,
    );
    std::fs::write(root.join("csw-foreign-test.sh"), test).unwrap();
    // Private mount and PID namespaces: the root is entered by pivot_root, as a node boots
    // into it (youki's own pivot_root needs a real root, which a chroot is not); proc, /sys,
    // /dev and the tmpfs are the namespace's own and go with it (nothing propagates to the
    // host's mounts), and every process started in there (containerd, shims) ends with it.
    let text = common::run_ok_all_output(
        Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--pid", "--fork", "--"])
        .arg("sh")
        .arg("-c")
        .arg(format!(
            "set -e; r={r}; mount --bind $r $r; mount --rbind /sys $r/sys; mount --rbind /dev $r/dev; \
             cd $r; mkdir -p .host; pivot_root . .host; \
             exec chroot . /bin/sh -c 'mount -t proc proc /proc && umount -l /.host && rmdir /.host && exec /bin/sh /csw-foreign-test.sh'",
            r = root.display()
        )),
        "the test inside the bullseye root",
    );
    assert!(text.contains("exiting with 7\nfirst exit=7"), "{text}");
    assert!(
        text.contains("hello from wasmedge\nsecond exit=0"),
        "{text}"
    );
    assert!(text.contains("denied exit=78"), "{text}");
    assert!(text.contains("unknown policy preset"), "{text}");
    assert_eq!(
        text.matches("aot: compiled /app/hello.wasm").count(),
        1,
        "{text}"
    );
    assert_eq!(
        text.matches("aot: cache hit for /app/hello.wasm").count(),
        1,
        "{text}"
    );
}
