# Shared by scripts/k8s-*.sh (sourced, not run): where the e2e cluster lives and how to
# reach it. Everything of the cluster is inside network namespace $K8S_NETNS and a private
# mount namespace held by one process; no cluster or pod address exists outside them.

K8S_E2E_DIR=${K8S_E2E_DIR:-/tmp/csw-k8s}
K8S_NETNS=${K8S_NETNS:-csw-k8s}
K8S_NODE_NAME=${K8S_NODE_NAME:-csw-node}
# Addresses inside the netns only: the node (on its loopback), pods (bridge cni0), services.
K8S_NODE_IP=10.200.0.1
K8S_POD_SUBNET=10.244.0.0/24
K8S_CLUSTER_CIDR=10.244.0.0/16
K8S_SERVICE_CIDR=10.96.0.0/24
K8S_API_SERVICE_IP=10.96.0.1
K8S_NODE_LABEL=wasmedge.io/runtime=true
# Nodes: K8S_NODES of them (1 or more). Node 0 holds the control plane and is the one above
# ($K8S_NETNS, $K8S_NODE_IP); node i > 0 has netns $K8S_NETNS-i, IP 10.200.0.(i+1) and pod subnet
# 10.244.i.0/24, joined to node 0 by a veth on bridge k8sbr0 there, with routes to every other
# node's pod subnet. With more than one node, only the nodes in K8S_WASM_NODES (indexes) carry
# $K8S_NODE_LABEL and the wasmedge runtime.
K8S_NODES=${K8S_NODES:-3}
K8S_WASM_NODES=${K8S_WASM_NODES:-1 2}
# The releases the cluster runs: Kubernetes K8S_VERSION (built by k8s-build.sh) on containerd
# CONTAINERD (2.3: built by containerd-build.sh, config version 3; 1.7: Debian's /usr/bin, config
# version 2). Tested pairs: 1.37.2 + 2.3 (the default) and 1.34.4 + 1.7.
K8S_VERSION=${K8S_VERSION:-1.37.2}
K8S_VERSION=${K8S_VERSION#v}
CONTAINERD=${CONTAINERD:-2.3}
export K8S_VERSION CONTAINERD

# Per node I (0-based): name, pid-name suffix, netns, IP, state dir, pod subnet.
k8s_nodes() { local n; n=$(cat "$K8S_E2E_DIR/nodes" 2>/dev/null || echo "$K8S_NODES"); seq 0 $((n - 1)); }
k8s_node_name() { if [ "$(k8s_nodes | wc -l)" = 1 ]; then echo "$K8S_NODE_NAME"; else echo "$K8S_NODE_NAME-$1"; fi; }
k8s_node_sfx() { [ "$1" = 0 ] || echo "-$1"; }
k8s_node_netns() { echo "$K8S_NETNS$(k8s_node_sfx "$1")"; }
k8s_node_ip() { echo "10.200.0.$(($1 + 1))"; }
k8s_node_dir() { if [ "$1" = 0 ]; then echo "$K8S_E2E_DIR"; else echo "$K8S_E2E_DIR/node$1"; fi; }
k8s_node_pod_subnet() { echo "10.244.$1.0/24"; }
k8s_node_is_wasm() { [ "$(k8s_nodes | wc -l)" = 1 ] || echo " $K8S_WASM_NODES " | grep -q " $1 "; }

k8s_repo() { cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd; }

k8s_log() { echo "[k8s] $*" >&2; }

# Pid files hold "PID STARTTIME" so that a recycled PID is never mistaken for ours.
k8s_starttime() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null; }

k8s_pid_alive() { # NAME -> prints the pid if the recorded process still runs
  local f="$K8S_E2E_DIR/pids/$1.pid" pid start
  [ -f "$f" ] || return 1
  read -r pid start < "$f"
  [ -n "$pid" ] && [ "$(k8s_starttime "$pid")" = "$start" ] || return 1
  echo "$pid"
}

# Runs a command in the cluster's network and mount namespaces (where kubelet and containerd
# see the same mounts).
k8s_node_exec() { k8s_node_exec_on 0 "$@"; }
k8s_node_exec_on() { # NODE CMD...
  local holder name="holder$(k8s_node_sfx "$1")"; shift
  holder=$(k8s_pid_alive "$name") || { echo "e2e cluster is not up (no $K8S_E2E_DIR/pids/$name.pid)" >&2; return 1; }
  nsenter -t "$holder" -m -n -- "$@"
}

# Runs a command in the cluster's network namespace only (curl to pod and Service IPs).
k8s_netns_exec() { nsenter --net="/run/netns/$K8S_NETNS" -- "$@"; }

k8s_bin() { cat "$K8S_E2E_DIR/bin-dir"; }

# The dir of the node's containerd, ctr and containerd-shim-runc-v2 (recorded by k8s-up.sh).
k8s_containerd_bin() { cat "$K8S_E2E_DIR/containerd-bin-dir"; }

# The cluster as the API reports it: "3 nodes Ready: kubelet v1.37.2, containerd v2.3.7".
k8s_cluster_line() {
  kc get nodes -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status} {.status.nodeInfo.kubeletVersion} {.status.nodeInfo.containerRuntimeVersion}{"\n"}{end}' |
    awk '{ n++; if ($1 == "True") r++; k[$2]; sub(/^containerd:\/\//, "", $3); sub(/^v?/, "v", $3); c[$3] }
      END { for (x in k) kl = kl (kl ? "/" : "") x; for (x in c) cl = cl (cl ? "/" : "") x
        printf "%d node%s%s: kubelet %s, containerd %s\n", n, n == 1 ? "" : "s", r == n ? " Ready" : " (" r + 0 " Ready)", kl, cl }'
}

kc() { k8s_netns_exec "$(k8s_bin)/kubectl" --kubeconfig "$K8S_E2E_DIR/pki/admin.kubeconfig" "$@"; }

# The cgroup hierarchies: every v1 mount point and the unified one (kubelet and the runtimes
# also make their dirs in the unified hierarchy of a hybrid host).
k8s_cgroup_mounts() { awk '$3 == "cgroup" || $3 == "cgroup2" { print $2 }' /proc/self/mounts; }

# Every process in the cluster's cgroup subtree (daemons, shims, containers), by any hierarchy.
k8s_cgroup_pids() {
  local root; root=$(cat "$K8S_E2E_DIR/cgroup-root" 2>/dev/null) || return 0
  local h
  for h in $(k8s_cgroup_mounts); do
    [ -d "$h$root" ] && find "$h$root" -name cgroup.procs -exec cat {} + 2>/dev/null
  done | sort -un
}

# Mount points at or below a directory, deepest first, as process PID sees them.
k8s_mounts_under() { # PID DIR
  awk -v d="$2" '$5 == d || index($5, d "/") == 1 { print $5 }' "/proc/$1/mountinfo" 2>/dev/null | awk '{ print length, $0 }' | sort -rn | cut -d' ' -f2-
}
