#!/bin/sh
# make install / make uninstall: put the node bundle (make bundle: the shim, the config tool and
# every library they load, in /opt/containerd-shim-wasmedge), its node config, the sandbox
# policies and the containerd drop-in on this node. Nothing from a distribution package is
# needed on the node besides containerd. Idempotent; containerd is restarted only when its
# config actually changed. POSIX sh: the node-installer DaemonSet runs the same script under
# busybox (scripts/node-installer.sh), with the node's / mounted at $HOST_ROOT; an unpacked
# bundle tarball carries it too (containerd-shim-wasmedge/install.sh install).
#
# Paths below are the node's own paths; files are written at $HOST_ROOT<path>. Commands that
# must run on the node (containerd's config dump, the restart) go through the variables
# CONTAINERD_DEFAULT, CONTAINERD_DUMP and RESTART_COMMAND.
set -eu
here=$(cd "$(dirname "$0")" && pwd)

# The bundle to install: the one this script sits in, else the repo's (make bundle).
if [ -x "$here/bin/containerd-shim-wasmedge-v1" ]; then
  BUNDLE=${BUNDLE:-$here}
else
  BUNDLE=${BUNDLE:-$here/../target/bundle/containerd-shim-wasmedge}
fi
[ -x "$BUNDLE/bin/containerd-shim-wasmedge-v1" ] || {
  echo "[install] no bundle at $BUNDLE: run make bundle (or set BUNDLE)" >&2; exit 1; }
# Where the bundle lives on the node; its binaries' loader and RPATH point here (make bundle).
BUNDLE_DIR=${BUNDLE_DIR:-/opt/containerd-shim-wasmedge}
case "$BUNDLE_DIR" in /?*) ;; *) echo "[install] BUNDLE_DIR must be an absolute directory, not '$BUNDLE_DIR'" >&2; exit 2 ;; esac
PREFIX=${PREFIX:-/usr/local}
CONTAINERD_CONFIG=${CONTAINERD_CONFIG:-/etc/containerd/config.toml}
DROPIN_DIR=${DROPIN_DIR:-/etc/containerd/conf.d}
NODE_CONFIG_DIR=${NODE_CONFIG_DIR:-/etc/containerd-shim-wasmedge}
HOST_ROOT=${HOST_ROOT:-}
RUNTIME_SNIPPET=${RUNTIME_SNIPPET:-$BUNDLE/config/wasmedge-runtime.toml}
NODE_CONFIG_SRC=${NODE_CONFIG_SRC:-$BUNDLE/config/node-config.toml}
POLICY_SRC=${POLICY_SRC:-$BUNDLE/config/policies}
CONTAINERD_DEFAULT=${CONTAINERD_DEFAULT:-containerd config default}
CONTAINERD_DUMP=${CONTAINERD_DUMP:-containerd --config $CONTAINERD_CONFIG config dump}
RESTART=${RESTART:-auto}   # auto | never
# auto: `systemctl restart containerd` when containerd is an active systemd service here.
RESTART_COMMAND=${RESTART_COMMAND:-}
log() { echo "[install] $*"; }

restart_containerd() {
  if [ "$RESTART" = never ]; then log "containerd config changed: restart containerd to apply"; return 0; fi
  if [ -n "$RESTART_COMMAND" ]; then
    log "restarting containerd: $RESTART_COMMAND (running containers keep running; see README, Operations)"
    sh -c "$RESTART_COMMAND"
  elif command -v systemctl >/dev/null && systemctl is-active --quiet containerd 2>/dev/null; then
    log "restarting containerd (running containers keep running; see README, Operations)"
    systemctl restart containerd
  else
    log "containerd is not a running systemd service here: restart it yourself to apply"
  fi
}

# put MODE SRC DST: replace DST atomically (a running shim binary keeps its old inode) unless
# it already has SRC's content.
put() {
  if cmp -s "$2" "$3"; then return 1; fi
  mkdir -p "$(dirname "$3")"
  cp "$2" "$3.tmp.$$"
  chmod "$1" "$3.tmp.$$"
  mv -f "$3.tmp.$$" "$3"
}

# The drop-in writer, run from the bundle being installed through the bundle's own loader, so
# it runs here whatever this machine's libc and wherever the bundle sits.
config_tool() {
  "$BUNDLE/lib/ld-linux-x86-64.so.2" --library-path "$BUNDLE/lib" "$BUNDLE/bin/containerd-wasmedge-config" "$@"
}

# link TARGET LINK: point LINK at TARGET, atomically.
link() {
  [ "$(readlink "$2" 2>/dev/null)" = "$1" ] && return 0
  mkdir -p "$(dirname "$2")"
  ln -sf "$1" "$2.tmp.$$"
  mv -f "$2.tmp.$$" "$2"
}

install_bundle() {
  local dst="$HOST_ROOT$BUNDLE_DIR" changed=0 f rel
  for f in $(cd "$BUNDLE" && find bin lib share config install.sh BUNDLE.txt -type f); do
    if put 0755 "$BUNDLE/$f" "$dst/$f"; then changed=$((changed + 1)); fi
  done
  # Libraries a previous bundle had and this one has not.
  for f in "$dst"/lib/*; do
    [ -e "$f" ] || continue
    rel=${f#"$dst"/}
    [ -e "$BUNDLE/$rel" ] || { rm -f "$f"; changed=$((changed + 1)); }
  done
  link "$BUNDLE_DIR/bin/containerd-shim-wasmedge-v1" "$HOST_ROOT$PREFIX/bin/containerd-shim-wasmedge-v1"
  link "$BUNDLE_DIR/bin/containerd-wasmedge-config" "$HOST_ROOT$PREFIX/bin/containerd-wasmedge-config"
  if [ "$changed" = 0 ]; then log "bundle unchanged in $BUNDLE_DIR"; else log "bundle installed in $BUNDLE_DIR (files changed: $changed)"; fi
  log "shim installed at $PREFIX/bin/containerd-shim-wasmedge-v1 -> $BUNDLE_DIR/bin/containerd-shim-wasmedge-v1"
}

do_install() {
  install_bundle
  if [ ! -f "$HOST_ROOT$NODE_CONFIG_DIR/config.toml" ]; then
    put 0644 "$NODE_CONFIG_SRC" "$HOST_ROOT$NODE_CONFIG_DIR/config.toml" || true
    log "node config installed at $NODE_CONFIG_DIR/config.toml"
  fi
  for f in "$POLICY_SRC"/*.yaml; do
    [ -f "$f" ] || continue
    if put 0644 "$f" "$HOST_ROOT$NODE_CONFIG_DIR/policies/$(basename "$f")"; then
      log "policy $(basename "$f" .yaml) installed in $NODE_CONFIG_DIR/policies"
    fi
  done
  local config="$HOST_ROOT$CONTAINERD_CONFIG" dropin="$HOST_ROOT$DROPIN_DIR/wasmedge.toml"
  mkdir -p "$(dirname "$config")" "$HOST_ROOT$DROPIN_DIR"
  [ -f "$config" ] || sh -c "$CONTAINERD_DEFAULT" > "$config"
  if ! grep -qF "$DROPIN_DIR/*.toml" "$config"; then
    local entry="\"$DROPIN_DIR/*.toml\""
    if grep -qE '^imports = \[\][[:space:]]*$' "$config"; then
      sed -i -E "s|^imports = \[\][[:space:]]*$|imports = [$entry]|" "$config"
    elif grep -qE '^imports = \[.+\][[:space:]]*$' "$config"; then
      sed -i -E "s|^imports = \[(.+)\][[:space:]]*$|imports = [\1, $entry]|" "$config"
    elif grep -qE '^[[:space:]]*imports[[:space:]]*=' "$config"; then
      echo "[install] cannot edit the imports of $CONTAINERD_CONFIG; add $entry to it" >&2
      exit 1
    else
      # imports must come before any table in TOML.
      { echo "imports = [$entry]"; cat "$config"; } > "$config.tmp"
      mv "$config.tmp" "$config"
    fi
    log "added imports of $DROPIN_DIR to $CONTAINERD_CONFIG"
  fi
  local effective; effective=$(mktemp)
  # The effective config without our own drop-in, so that re-running stays idempotent.
  mv -f "$dropin" "$dropin.previous" 2>/dev/null || true
  if ! sh -c "$CONTAINERD_DUMP" > "$effective"; then
    mv -f "$dropin.previous" "$dropin" 2>/dev/null || true
    echo "[install] failed: $CONTAINERD_DUMP" >&2
    exit 1
  fi
  config_tool --effective "$effective" --runtime "$RUNTIME_SNIPPET" --out "$dropin"
  rm -f "$effective"
  if cmp -s "$dropin" "$dropin.previous"; then
    log "containerd drop-in unchanged"
    rm -f "$dropin.previous"
  else
    rm -f "$dropin.previous"
    log "containerd drop-in written: $DROPIN_DIR/wasmedge.toml"
    restart_containerd
  fi
}

do_uninstall() {
  local changed=0
  if [ -f "$HOST_ROOT$DROPIN_DIR/wasmedge.toml" ]; then
    rm -f "$HOST_ROOT$DROPIN_DIR/wasmedge.toml"; changed=1; log "removed $DROPIN_DIR/wasmedge.toml"
  fi
  rm -f "$HOST_ROOT$PREFIX/bin/containerd-shim-wasmedge-v1" "$HOST_ROOT$PREFIX/bin/containerd-wasmedge-config"
  # A running shim keeps its mapped files; new containers can no longer start one.
  rm -rf "$HOST_ROOT$BUNDLE_DIR"
  log "removed the bundle and the shim links (node config and policies in $NODE_CONFIG_DIR and the AOT cache are kept)"
  [ $changed = 0 ] || restart_containerd
  return 0
}

case "${1:-}" in
  install) do_install ;;
  uninstall) do_uninstall ;;
  *) echo "usage: $0 install|uninstall" >&2; exit 2 ;;
esac
