#!/usr/bin/env bash
# Removes the e2e cluster of scripts/k8s-up.sh: its processes (by the PIDs it recorded, and
# what is left in its own cgroup subtree: shims and containers), its mounts, its network
# namespace, its cgroups and its state dir. Safe to run twice, or after a failed k8s-up.
# K8S_KEEP_LOGS=1 keeps $K8S_E2E_DIR/logs.
set -uo pipefail
# shellcheck source=k8s-lib.sh
source "$(dirname "$0")/k8s-lib.sh"
D=$K8S_E2E_DIR
[ "$(id -u)" = 0 ] || { echo "k8s-down.sh must run as root" >&2; exit 1; }
[ -d "$D" ] || { k8s_log "nothing to remove ($D absent)"; exit 0; }

# stop NAME...: SIGTERM, then SIGKILL after 10 s, to recorded processes only.
stop() {
  local name pid pids=()
  for name in "$@"; do
    pid=$(k8s_pid_alive "$name") && { kill -TERM "$pid" 2>/dev/null; pids+=("$pid"); }
  done
  running() {
    for pid in "${pids[@]}"; do [ -d "/proc/$pid" ] && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] && return 0; done
    return 1
  }
  for _ in $(seq 100); do running || break; sleep 0.1; done
  if running; then
    k8s_log "SIGKILL to $* (still running 10 s after SIGTERM)"
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null; done
    for _ in $(seq 50); do running || break; sleep 0.1; done
  fi
  for name in "$@"; do rm -f "$D/pids/$name.pid"; done
}

# Every node's daemons: NAME, NAME-1, NAME-2, ... (suffixes of the nodes k8s-up recorded).
sfxs=()
for i in $(k8s_nodes); do sfxs+=("$(k8s_node_sfx "$i")"); done
all() { local n s; for n in "$@"; do for s in "${sfxs[@]}"; do echo "$n$s"; done; done; }

# 1. kubelet and kube-proxy first, so that nothing restarts containers.
# shellcheck disable=SC2046
stop $(all kubelet kube-proxy)

# 2. Every task and container of the cluster's containerd: shims exit after their last delete.
ctr_bin=$(k8s_containerd_bin 2>/dev/null || echo /usr/bin)/ctr
for i in $(k8s_nodes); do
  sock=$(k8s_node_dir "$i")/containerd/c.sock
  if k8s_pid_alive "containerd$(k8s_node_sfx "$i")" >/dev/null && [ -S "$sock" ]; then
    ctrk() { timeout 20 "$ctr_bin" --address "$sock" -n k8s.io "$@"; }
    for id in $(ctrk task ls -q 2>/dev/null); do ctrk task kill -s SIGKILL "$id" >/dev/null 2>&1; done
    for id in $(ctrk task ls -q 2>/dev/null); do
      for _ in $(seq 50); do ctrk task delete "$id" >/dev/null 2>&1 && break; sleep 0.1; done
    done
    for id in $(ctrk container ls -q 2>/dev/null); do ctrk container rm "$id" >/dev/null 2>&1; done
  fi
done

# 3. The rest of the daemons, the API server's clients before it, etcd last.
# shellcheck disable=SC2046
stop $(all containerd) kube-scheduler kube-controller-manager
stop kube-apiserver
stop etcd

# 4. Whatever is still in the cluster's cgroup subtree (shims, container processes) is the
#    cluster's: nothing else is ever put below it.
holders=$(for s in "${sfxs[@]}"; do k8s_pid_alive "holder$s"; done)
for _ in $(seq 20); do
  left=$(k8s_cgroup_pids | grep -vxF "${holders:-none}")
  [ -z "$left" ] && break
  k8s_log "killing processes left in the cluster's cgroups: $(for p in $left; do echo -n "$p($(cat /proc/$p/comm 2>/dev/null)) "; done)"
  for pid in $left; do kill -KILL "$pid" 2>/dev/null; done
  sleep 0.5
done

# 5. Mounts: those in the node's mount namespace go with it, but are unmounted first,
#    deepest first; then any under the state dir in this (the host's) namespace.
for s in "${sfxs[@]}"; do
  if holder=$(k8s_pid_alive "holder$s"); then
    for m in $(k8s_mounts_under "$holder" "$D"); do nsenter -t "$holder" -m -- umount -l "$m" 2>/dev/null; done
    stop "holder$s"
  fi
done
for m in $(k8s_mounts_under $$ "$D"); do umount -l "$m" 2>/dev/null; done

# 6. The network namespace (veths, bridge, iptables rules and Service IPs go with it).
for ns in $(cat "$D/netns" 2>/dev/null); do
  if ip netns list | grep -q "^$ns\( \|$\)"; then ip netns del "$ns"; fi
done

# 7. cgroups, bottom-up: everything below the cluster's root, then the dirs k8s-up created.
root=$(cat "$D/cgroup-root" 2>/dev/null || true)
if [ -n "$root" ]; then
  for h in $(k8s_cgroup_mounts); do
    [ -d "$h$root" ] && find "$h$root" -mindepth 1 -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  [ -f "$D/cgroup-created" ] && tac "$D/cgroup-created" | while read -r d; do rmdir "$d" 2>/dev/null; done
  left=$(for h in $(k8s_cgroup_mounts); do [ -d "$h$root" ] && echo "$h$root"; done)
  [ -z "$left" ] || echo "[k8s] cgroup dirs left (busy?): $left" >&2
fi

# 8. Host dirs created as bind-mount targets, if still empty.
[ -f "$D/host-created" ] && tac "$D/host-created" | while read -r d; do rmdir "$d" 2>/dev/null || true; done

# 9. The state dir, unless something is still mounted below it.
left=$(k8s_mounts_under $$ "$D")
if [ -n "$left" ]; then
  echo "[k8s] mounts left under $D, not removing it: $left" >&2
  exit 1
fi
if [ "${K8S_KEEP_LOGS:-0}" = 1 ]; then
  find "$D" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf {} +
  k8s_log "cluster removed; logs kept in $D/logs"
else
  rm -rf "$D"
  k8s_log "cluster removed"
fi
