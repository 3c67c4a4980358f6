#!/usr/bin/env bash
# make install / make uninstall: put the shim, its node config and the containerd drop-in on
# this node. Idempotent; containerd is restarted only when its config actually changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX=${PREFIX:-/usr/local}
CONTAINERD_CONFIG=${CONTAINERD_CONFIG:-/etc/containerd/config.toml}
DROPIN_DIR=${DROPIN_DIR:-/etc/containerd/conf.d}
NODE_CONFIG_DIR=${NODE_CONFIG_DIR:-/etc/containerd-shim-wasmedge}
RESTART=${RESTART:-auto}   # auto | never
log() { echo "[install] $*"; }

restart_containerd() {
  if [ "$RESTART" = never ]; then log "containerd config changed: restart containerd to apply"; return; fi
  if command -v systemctl >/dev/null && systemctl is-active --quiet containerd 2>/dev/null; then
    log "restarting containerd (running containers keep running; see README, Operations)"
    systemctl restart containerd
  else
    log "containerd is not a running systemd service here: restart it yourself to apply"
  fi
}

do_install() {
  install -D -m 0755 target/release/containerd-shim-wasmedge-v1 "$PREFIX/bin/containerd-shim-wasmedge-v1"
  install -D -m 0755 target/release/containerd-wasmedge-config "$PREFIX/bin/containerd-wasmedge-config"
  log "shim installed at $PREFIX/bin/containerd-shim-wasmedge-v1"
  if [ ! -f "$NODE_CONFIG_DIR/config.toml" ]; then
    install -D -m 0644 runtime-config/node-config.toml "$NODE_CONFIG_DIR/config.toml"
    log "node config installed at $NODE_CONFIG_DIR/config.toml"
  fi
  if [ -d runtime-config/policies ]; then
    mkdir -p "$NODE_CONFIG_DIR/policies"
    cp -f runtime-config/policies/*.toml "$NODE_CONFIG_DIR/policies/" 2>/dev/null || true
  fi
  mkdir -p "$(dirname "$CONTAINERD_CONFIG")" "$DROPIN_DIR"
  [ -f "$CONTAINERD_CONFIG" ] || containerd config default > "$CONTAINERD_CONFIG"
  if ! grep -qF "$DROPIN_DIR/*.toml" "$CONTAINERD_CONFIG"; then
    local entry="\"$DROPIN_DIR/*.toml\""
    if grep -qE '^imports = \[\]\s*$' "$CONTAINERD_CONFIG"; then
      sed -i -E "s|^imports = \[\]\s*$|imports = [$entry]|" "$CONTAINERD_CONFIG"
    elif grep -qE '^imports = \[.+\]\s*$' "$CONTAINERD_CONFIG"; then
      sed -i -E "s|^imports = \[(.+)\]\s*$|imports = [\1, $entry]|" "$CONTAINERD_CONFIG"
    elif grep -qE '^\s*imports\s*=' "$CONTAINERD_CONFIG"; then
      echo "[install] cannot edit the imports of $CONTAINERD_CONFIG; add $entry to it" >&2
      exit 1
    else
      # imports must come before any table in TOML.
      { echo "imports = [$entry]"; cat "$CONTAINERD_CONFIG"; } > "$CONTAINERD_CONFIG.tmp"
      mv "$CONTAINERD_CONFIG.tmp" "$CONTAINERD_CONFIG"
    fi
    log "added imports of $DROPIN_DIR to $CONTAINERD_CONFIG"
  fi
  local effective; effective=$(mktemp)
  # The effective config without our own drop-in, so that re-running stays idempotent.
  mv -f "$DROPIN_DIR/wasmedge.toml" "$DROPIN_DIR/wasmedge.toml.previous" 2>/dev/null || true
  containerd --config "$CONTAINERD_CONFIG" config dump > "$effective"
  "$PREFIX/bin/containerd-wasmedge-config" --effective "$effective" --runtime runtime-config/wasmedge-runtime.toml --out "$DROPIN_DIR/wasmedge.toml"
  rm -f "$effective"
  if cmp -s "$DROPIN_DIR/wasmedge.toml" "$DROPIN_DIR/wasmedge.toml.previous"; then
    log "containerd drop-in unchanged"
    rm -f "$DROPIN_DIR/wasmedge.toml.previous"
  else
    rm -f "$DROPIN_DIR/wasmedge.toml.previous"
    log "containerd drop-in written: $DROPIN_DIR/wasmedge.toml"
    restart_containerd
  fi
}

do_uninstall() {
  local changed=0
  if [ -f "$DROPIN_DIR/wasmedge.toml" ]; then rm -f "$DROPIN_DIR/wasmedge.toml"; changed=1; log "removed $DROPIN_DIR/wasmedge.toml"; fi
  rm -f "$PREFIX/bin/containerd-shim-wasmedge-v1" "$PREFIX/bin/containerd-wasmedge-config"
  log "removed the shim binaries (node config in $NODE_CONFIG_DIR and the AOT cache are kept)"
  [ $changed = 1 ] && restart_containerd
  return 0
}

case "${1:-}" in
  install) do_install ;;
  uninstall) do_uninstall ;;
  *) echo "usage: $0 install|uninstall" >&2; exit 2 ;;
esac
