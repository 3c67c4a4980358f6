#!/usr/bin/env bash
# The shim's cgroup v2 path, proven on a cgroup-v2-only kernel: boots a Linux guest with
# `cgroup_no_v1=all` (a Debian kernel, a busybox initramfs, the cached Debian 11 bullseye root
# file system of scripts/foreign-rootfs.sh unpacked into a tmpfs) and runs the integration
# suites `ctr`, `sandbox` and `reliability` in it against containerd 2.3
# (scripts/containerd-build.sh).
#
# The machine: QEMU/KVM (bookworm's qemu-system-x86, linux-image-<ver>-amd64, 2 vCPUs, 4 GiB,
# 9p shares, `-nic none`) where KVM runs on hardware virtualization; User-mode Linux (bookworm's
# user-mode-linux, the same 6.1 line, 1 CPU, 4 GiB, hostfs shares, no network device) where it
# does not: a nested KVM without it (kvm_pvm, as on this project's machines) runs only kernels
# built as PVM guests, and a Debian kernel hangs there before its first message.
# CGROUP2_VM=qemu|uml chooses.
#
# The test binaries are built here, on the host; the guest sees the repo (read-only) and the
# cache (read-only) at their host paths, so the binaries, the shim and the engine (with its own
# loader) run unchanged. Inside the guest nothing writes to the host but the run's own results
# directory. The runner lives in the leaf cgroup /runner/leaf; the containers of each test go
# below /runner (the harness's own_cgroup() on cgroup v2), whose controllers are delegated
# through cgroup.subtree_control. The guest has loopback only.
#
# Everything is cached outside the repo in $CSW_CACHE/cgroup2-guest (kernels, initramfs); each
# run leaves its console log, each suite's full output and exit code in
# $CSW_CACHE/cgroup2-guest/runs/<time>/ (the last 5 runs are kept). Prints each suite's result;
# exits non-zero if one failed, or the guest did not boot or finish in time.
#
# Environment: CSW_CACHE, CGROUP2_VM (auto), CGROUP2_SUITES (default "ctr sandbox
# reliability"), CGROUP2_TEST_THREADS (2 on qemu, 1 on uml), CGROUP2_TIMEOUT (seconds for the
# whole guest run, 3600), CGROUP2_KERNEL_PKG (the Debian kernel package, default: bookworm's
# linux-image-amd64 dependency or user-mode-linux candidate), CGROUP2_TEST_ARGS (more arguments
# for every test binary, e.g. a test name filter), CGROUP2_KERNEL_LOG (kernel log options,
# default `quiet`).
set -euo pipefail
# The whole script is one group, read before it runs: an edit during a run cannot change it.
{

log() { echo "[cgroup2-guest] $*" >&2; }
die() { echo "[cgroup2-guest] error: $*" >&2; exit 1; }

REPO=$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)
CACHE=${CSW_CACHE:-/var/cache/containerd-shim-wasmedge}
GUEST=$CACHE/cgroup2-guest
read -r -a SUITES <<<"${CGROUP2_SUITES-ctr sandbox reliability}"
THREADS=${CGROUP2_TEST_THREADS:-}
TIMEOUT=${CGROUP2_TIMEOUT:-3600}
ENGINE=$CACHE/engine/wasmedge-0.17.1
for p in "$REPO" "$CACHE"; do
  case $p in *[[:space:]]*) die "paths with white space are not supported: '$p'";; esac
done
[ "$(id -u)" = 0 ] || die "must run as root (the guest shares root-owned trees)"
mkdir -p "$GUEST"

# --- the machine: QEMU/KVM, or User-mode Linux where KVM cannot run a stock kernel ----------
# A KVM that is itself nested without hardware support (kvm_pvm: this kind of machine) runs only
# kernels built as PVM guests; a Debian kernel hangs there. User-mode Linux (Debian's
# user-mode-linux package, the same 6.1 line) needs no KVM: the guest kernel is a process.
VM=${CGROUP2_VM:-auto}
if [ "$VM" = auto ]; then
  if [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; then VM=qemu; else VM=uml; fi
fi
case $VM in
  qemu)
    [ -e /dev/kvm ] || die "/dev/kvm is missing: the qemu guest needs KVM (CGROUP2_VM=uml needs none)"
    if ! command -v qemu-system-x86_64 >/dev/null; then
      log "installing qemu-system-x86"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null
    fi
    MODULES=(virtio_pci 9pnet_virtio 9p overlay)
    PKG_PREFIX=linux-image-
    ;;
  uml)
    MODULES=(overlay)
    PKG_PREFIX=user-mode-linux=
    ;;
  *) die "CGROUP2_VM=$VM: qemu, uml or auto" ;;
esac
# Two test threads on two vCPUs; one on User-mode Linux's one CPU (two there starve each other
# past the suites' time bounds: a SIGTERM within 2 s, a cgroup removed within containerd's 5 s).
[ -n "$THREADS" ] || { [ "$VM" = qemu ] && THREADS=2 || THREADS=1; }

# --- kernel: a Debian package (linux-image-<ver> / user-mode-linux), the kernel and the few
# modules the guest loads --------------------------------------------------------------------
KPKG=${CGROUP2_KERNEL_PKG:-}
if [ -z "$KPKG" ] && [ -f "$GUEST/$VM.package" ]; then KPKG=$(cat "$GUEST/$VM.package"); fi
if [ -z "$KPKG" ]; then
  if [ "$VM" = qemu ]; then
    KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
  else
    v=$(apt-cache policy user-mode-linux 2>/dev/null | awk '/Candidate:/ {print $2}')
    [ -n "$v" ] && [ "$v" != "(none)" ] && KPKG="user-mode-linux=$v"
  fi
  [ -n "$KPKG" ] || die "cannot resolve the $VM kernel package (run apt-get update)"
fi
KDIR=$GUEST/kernel/${KPKG//[=:]/_}
if [ ! -f "$KDIR/kernel" ]; then
  log "fetching $KPKG (once)"
  work=$(mktemp -d "$GUEST/kernel.XXXXXX")
  (cd "$work" && apt-get download "$KPKG" >/dev/null 2>"$work/apt.err") \
    || { cat "$work/apt.err" >&2; rm -rf "$work"; die "apt-get download $KPKG failed"; }
  dpkg-deb -x "$work"/*.deb "$work/x"
  if [ "$VM" = qemu ]; then
    kver=${KPKG#linux-image-}
    mdir=$work/x/lib/modules/$kver
    /bin/busybox depmod -b "$work/x" "$kver"
    # The uncompressed ELF image, booted through its PVH entry point (no decompressor).
    python3 - "$work/x/boot/vmlinuz-$kver" "$work/kernel" <<'PY'
import lzma, sys
d = open(sys.argv[1], "rb").read()
i = d.find(b"\xfd7zXZ\x00")
assert i >= 0, "no xz stream in " + sys.argv[1]
open(sys.argv[2], "wb").write(lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(d[i:]))
PY
  else
    mdir=$(echo "$work"/x/usr/lib/uml/modules/*)
    kver=${mdir##*/}
    cp "$work/x/usr/bin/linux.uml" "$work/kernel"
  fi
  mkdir -p "$work/out/modules"
  for m in "${MODULES[@]}"; do
    line=$(grep -E "/$m\.ko(\.xz|\.zst)?:" "$mdir/modules.dep") || { rm -rf "$work"; die "module $m not in $KPKG"; }
    for f in ${line/:/}; do
      mkdir -p "$work/out/modules/$(dirname "$f")"
      cp "$mdir/$f" "$work/out/modules/$f"
    done
  done
  mv "$work/kernel" "$work/out/kernel"
  echo "$kver" >"$work/out/release"
  rm -rf "$KDIR" && mkdir -p "$(dirname "$KDIR")" && mv "$work/out" "$KDIR"
  rm -rf "$work"
fi
echo "$KPKG" >"$GUEST/$VM.package"
KVER=$(cat "$KDIR/release")

# --- the initramfs: busybox, the modules, /init (rebuilt when this script changes it) ------
read -r -d '' INIT <<'INIT' || true
#!/bin/busybox sh
# Stage 1 of the cgroup2 guest (scripts/cgroup2-guest.sh): mounts the shares, unpacks the root
# file system into a tmpfs and hands over to busybox init in it.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() { echo "csw-guest: boot failed: $*"; poweroff -f; sleep 5; }
for kv in $(cat /proc/cmdline); do
  case $kv in csw_*=*) export "$kv" ;; esac
done
[ -n "$csw_repo" ] && [ -n "$csw_cache" ] && [ -n "$csw_run" ] && [ -n "$csw_rootfs" ] || fail "csw_* missing from the kernel command line"
# share HOST_PATH 9P_TAG OPTIONS DEST: the host directory at DEST (9p over virtio, or hostfs).
if [ "$csw_fs" = 9p ]; then
  modprobe -a virtio_pci 9pnet_virtio 9p overlay || fail "modprobe"
  share() { mount -t 9p -o "trans=virtio,version=9p2000.L,msize=262144,$3" "$2" "$4"; }
else
  modprobe overlay || fail "modprobe overlay"
  share() { mount -t hostfs -o "$3,$1" none "$4"; }
fi
mkdir -p /newroot /mnt/cache
share "$csw_cache" cswcache ro /mnt/cache || fail "mount of the cache share"
mount -t tmpfs -o mode=0755,size=1g rootfs /newroot || fail "tmpfs root"
tar -xf "/mnt/cache/$csw_rootfs" -C /newroot || fail "unpacking $csw_rootfs"
mkdir -p "/newroot/.csw" "/newroot$csw_cache" "/newroot$csw_repo"
cp /bin/busybox /newroot/.csw/busybox
mount --move /mnt/cache "/newroot$csw_cache" || fail "moving the cache share"
share "$csw_repo" cswrepo ro "/newroot$csw_repo" || fail "mount of the repo share"
share "$csw_run" cswrun rw "/newroot$csw_run" || fail "mount of the run share"
ip link set lo up || fail "loopback"
echo csw-guest >/proc/sys/kernel/hostname
printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n127.0.1.1 csw-guest\n' >/newroot/etc/hosts
: >/newroot/etc/resolv.conf
echo csw-guest >/newroot/etc/hostname
printf '::once:/usr/bin/bash %s/stage2.sh\n' "$csw_run" >/newroot/etc/inittab
echo "csw-guest: stage 1 done ($(uname -r))"
mount --move /dev /newroot/dev
mount --move /sys /newroot/sys
mount --move /proc /newroot/proc
exec switch_root /newroot /.csw/busybox init
INIT
INITRD=$GUEST/initramfs-$VM-$KVER.cpio.gz
if [ ! -f "$INITRD" ] || [ "$(cat "$INITRD.init" 2>/dev/null)" != "$INIT" ]; then
  log "building the initramfs"
  stage=$(mktemp -d "$GUEST/initramfs.XXXXXX")
  mkdir -p "$stage"/{bin,dev,proc,sys,mnt,newroot,lib/modules/"$KVER"}
  cp /bin/busybox "$stage/bin/busybox"
  cp -r "$KDIR/modules/." "$stage/lib/modules/$KVER/"
  /bin/busybox depmod -b "$stage" "$KVER"
  mknod "$stage/dev/console" c 5 1
  printf '%s\n' "$INIT" >"$stage/init"
  chmod 755 "$stage/init"
  (cd "$stage" && find . | /bin/busybox cpio -o -H newc 2>/dev/null | gzip -1) >"$INITRD.tmp"
  mv "$INITRD.tmp" "$INITRD"
  printf '%s' "$INIT" >"$INITRD.init"
  rm -rf "$stage"
fi

# --- the root file system: Debian bullseye minbase (scripts/foreign-rootfs.sh) -------------
ROOTFS=$(bash "$REPO/scripts/foreign-rootfs.sh")
case $ROOTFS in "$CACHE"/*) ;; *) die "$ROOTFS is not below $CACHE";; esac

# --- what the suites need, built on the host ----------------------------------------------
cd "$REPO"
[ -d "$ENGINE/lib" ] || bash scripts/engine.sh >/dev/null
CONTAINERD_BIN=$(bash scripts/containerd-build.sh)
if ! ls target/wasm/{hello,edge-function,hostile}.wasm >/dev/null 2>&1 || [ ! -x target/images/pause ]; then
  make wasm images
fi
for b in containerd-shim-wasmedge-v1 containerd-wasmedge-config wasm-oci; do
  [ -x "target/release/$b" ] || { cargo build --release --bins; break; }
done
mkdir -p target/test-images
args=()
for s in "${SUITES[@]}"; do args+=(--test "$s"); done
declare -A EXE
json=
if [ ${#SUITES[@]} -gt 0 ]; then
  log "building the test binaries: ${SUITES[*]}"
  json=$(cargo test --release --no-run "${args[@]}" --message-format=json) || die "cargo test --no-run failed"
fi
for s in "${SUITES[@]}"; do
  EXE[$s]=$(jq -r --arg s "$s" 'select(.reason == "compiler-artifact" and .target.name == $s and .profile.test == true and .executable != null) | .executable' <<<"$json" | tail -1)
  [ -x "${EXE[$s]}" ] || die "no test executable for $s"
  case ${EXE[$s]} in "$REPO"/*) ;; *) die "${EXE[$s]} is not below $REPO";; esac
done

# --- this run's directory: the guest's stage 2 script, its results -----------------------
mkdir -p "$GUEST/runs"
RUN=$(mktemp -d "$GUEST/runs/$(date -u +%Y%m%dT%H%M%SZ).XXXX")
chmod 755 "$RUN"
# wasm-oci may be linked to the machine's loader (`make build`); the guest's glibc is older, so
# the guest gets a copy on the engine's loader and libraries, bound over it inside the guest.
cp target/release/wasm-oci "$RUN/wasm-oci"
patchelf --set-interpreter "$ENGINE/lib/ld-linux-x86-64.so.2" --set-rpath "$ENGINE/lib" "$RUN/wasm-oci"
{
  printf 'REPO=%q\nCACHE=%q\nRUN=%q\nTHREADS=%q\nCONTAINERD_BIN=%q\n' "$REPO" "$CACHE" "$RUN" "$THREADS" "$CONTAINERD_BIN"
  printf 'TEST_ARGS=%q\n' "${CGROUP2_TEST_ARGS:-}"
  printf 'SUITES=(%s)\n' "${SUITES[*]}"
  for s in "${SUITES[@]}"; do printf 'EXE_%s=%q\n' "$s" "${EXE[$s]}"; done
} >"$RUN/env"
cat >"$RUN/stage2.sh" <<'STAGE2'
# Stage 2 of the cgroup2 guest, run by busybox init in the bullseye root: the cgroup v2 tree,
# the suites, the results; then power off.
set -u
. "$(dirname "$0")/env"
bb=/.csw/busybox
off() { sync; $bb poweroff -f; }
trap off EXIT
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup || { echo "csw-guest: no cgroup2"; exit 1; }
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs -o mode=1777 shm /dev/shm
# The harness's images (target/test-images) stay in the guest; wasm-oci on the engine's loader.
mount -t tmpfs -o mode=0755 tmpfs "$REPO/target/test-images"
mount --bind "$RUN/wasm-oci" "$REPO/target/release/wasm-oci"
# No internal processes: the runner in a leaf, the containers' subtree beside it (/runner).
cg=/sys/fs/cgroup
mkdir -p $cg/runner/leaf
echo $$ >$cg/runner/leaf/cgroup.procs
for c in $(cat $cg/cgroup.controllers); do echo "+$c" >$cg/cgroup.subtree_control; done
for c in $(cat $cg/runner/cgroup.controllers); do echo "+$c" >$cg/runner/cgroup.subtree_control; done
{
  echo "kernel: $(uname -r) ($(cat /proc/cmdline))"
  echo "distribution: $(. /etc/os-release; echo "$PRETTY_NAME"), glibc $(getconf GNU_LIBC_VERSION)"
  echo "/sys/fs/cgroup: $(stat -fc %T /sys/fs/cgroup); v1 hierarchies: $(grep -c ' cgroup ' /proc/mounts)"
  echo "runner cgroup: $(cat /proc/self/cgroup); /runner subtree_control: $(cat $cg/runner/cgroup.subtree_control)"
  echo "containerd: $("$CONTAINERD_BIN/containerd" --version)"
  echo "cpus: $(nproc), memory: $(awk '/MemTotal/ {print $2 " kB"}' /proc/meminfo)"
} | tee "$RUN/guest-info.txt"
echo booted >"$RUN/booted"
cd "$REPO"
for s in "${SUITES[@]}"; do
  exe_var=EXE_$s
  echo "csw-guest: === suite $s: ${!exe_var} --test-threads=$THREADS $TEST_ARGS"
  start=$(date +%s)
  # shellcheck disable=SC2086
  env CONTAINERD=2.3 RUST_BACKTRACE=1 KEEP_TEST_DIRS=1 "${!exe_var}" --test-threads="$THREADS" $TEST_ARGS 2>&1 | tee "$RUN/$s.log"
  rc=${PIPESTATUS[0]}
  echo "$rc $(($(date +%s) - start))" >"$RUN/$s.rc"
  echo "csw-guest: === suite $s: exit $rc after $(($(date +%s) - start)) s"
  for d in $(find $cg/runner -mindepth 1 -type d ! -path $cg/runner/leaf | sort -r); do
    echo "csw-guest: cgroup left after $s: $d (procs: $(tr '\n' ' ' <"$d/cgroup.procs"); $(tr '\n' ' ' <"$d/cgroup.events"))"
  done
  # The harness's containerd logs (KEEP_TEST_DIRS keeps their directories) of a failed suite.
  if [ "$rc" != 0 ]; then
    for l in /tmp/csw-*/containerd.log; do
      [ -f "$l" ] && mkdir -p "$RUN/logs/$s" && cp "$l" "$RUN/logs/$s/$(basename "$(dirname "$l")").log"
    done
  fi
  rm -rf /tmp/csw-*
done
echo done >"$RUN/done"
STAGE2

# --- boot ---------------------------------------------------------------------------------
cmdline="${CGROUP2_KERNEL_LOG-quiet} panic=-1 cgroup_no_v1=all systemd.unified_cgroup_hierarchy=1"
cmdline+=" csw_repo=$REPO csw_cache=$CACHE csw_run=$RUN csw_rootfs=${ROOTFS#"$CACHE"/}"
set +e
if [ "$VM" = qemu ]; then
  log "booting linux $KVER under QEMU/KVM (cgroup v2 only, 2 vCPUs, 4 GiB) for ${SUITES[*]}; results in $RUN (timeout ${TIMEOUT} s)"
  # The host CPU, less IA32_ARCH_CAPABILITIES: a nested KVM may refuse the MSR ("failed to
  # set MSR 0x10a") and QEMU aborts.
  timeout --kill-after=10 "$TIMEOUT" qemu-system-x86_64 \
    -name csw-cgroup2-guest -enable-kvm -cpu "${CGROUP2_QEMU_CPU:-host,-arch-capabilities}" \
    -smp 2 -m 4096 -nographic -no-reboot -nic none \
    -kernel "$KDIR/kernel" -initrd "$INITRD" -append "console=ttyS0 $cmdline csw_fs=9p" \
    -virtfs "local,path=$REPO,mount_tag=cswrepo,security_model=none,readonly=on,multidevs=remap" \
    -virtfs "local,path=$CACHE,mount_tag=cswcache,security_model=none,readonly=on,multidevs=remap" \
    -virtfs "local,path=$RUN,mount_tag=cswrun,security_model=passthrough" \
    </dev/null 2>"$RUN/vm.err" | tee "$RUN/console.log"
  qrc=${PIPESTATUS[0]}
else
  log "booting linux $KVER as User-mode Linux (cgroup v2 only, 1 CPU, 4 GiB) for ${SUITES[*]}; results in $RUN (timeout ${TIMEOUT} s)"
  # No block or network device: hostfs shares only (same paths), loopback only. Guest memory is
  # a file in TMPDIR; /dev/shm keeps it in RAM.
  TMPDIR=/dev/shm timeout --kill-after=10 "$TIMEOUT" "$KDIR/kernel" \
    umid="csw-cgroup2-$$" mem=4G initrd="$INITRD" con0=fd:0,fd:1 con=null $cmdline csw_fs=hostfs \
    </dev/null 2>"$RUN/vm.err" | tee "$RUN/console.log"
  qrc=${PIPESTATUS[0]}
fi
set -e

# --- results -----------------------------------------------------------------------------
(cd "$GUEST/runs" && ls -1d */ | sort | head -n -5 | xargs -r rm -rf)
timed_out=0
if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then timed_out=1; fi
if [ ! -f "$RUN/booted" ]; then
  if [ "$timed_out" = 1 ]; then
    echo "[cgroup2-guest] FAILED: the guest did not boot within $TIMEOUT s (CGROUP2_TIMEOUT)" >&2
  else
    echo "[cgroup2-guest] FAILED: the guest did not boot ($VM exit $qrc)" >&2
  fi
  cat "$RUN/vm.err" >&2
  echo "[cgroup2-guest] last console lines ($RUN/console.log):" >&2
  tail -20 "$RUN/console.log" >&2
  exit 1
fi
if [ "$timed_out" = 1 ]; then
  echo "[cgroup2-guest] FAILED: the guest did not finish within $TIMEOUT s (CGROUP2_TIMEOUT); console: $RUN/console.log" >&2
fi
failed=0
echo
echo "cgroup v2 guest: $(head -2 "$RUN/guest-info.txt" | tr '\n' ';')"
for s in "${SUITES[@]}"; do
  if [ -f "$RUN/$s.rc" ]; then
    read -r rc secs <"$RUN/$s.rc"
    summary=$(grep -E '^test result:' "$RUN/$s.log" | tail -1)
    echo "  $s: exit $rc, ${secs} s: ${summary:-no test result line}"
    [ "$rc" = 0 ] || failed=1
  else
    echo "  $s: not run"
    failed=1
  fi
done
echo "  full output: $RUN/<suite>.log, console: $RUN/console.log"
[ "$failed" = 0 ] && [ "$qrc" = 0 ]
exit
}
