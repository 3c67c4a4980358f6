#!/usr/bin/env bash
# A Kubernetes cluster of K8S_NODES nodes (default 3; 1 gives the one-node layout) for the
# end-to-end tests (make e2e), with this project's shim as RuntimeClass `wasmedge` on the nodes
# of K8S_WASM_NODES. Undo everything with scripts/k8s-down.sh.
# K8S_VERSION (default 1.37.2) and CONTAINERD (2.3, the default, or 1.7) select the releases.
#
# Layout (all under $K8S_E2E_DIR, default /tmp/csw-k8s; node 0's state there, node i's in node<i>/):
# - per node a network namespace ($K8S_NETNS for node 0, $K8S_NETNS-i for node i) with its
#   containerd, kubelet, kube-proxy, the pods' bridge cni0 (their default gateway, so pods reach
#   Services and the API server) and the Service IPs; node 0 also runs etcd and the control
#   plane and has bridge k8sbr0, to which every other node's veth is attached; each node routes
#   the other nodes' pod subnets to them; nothing listens or routes outside these namespaces;
# - per node one private mount namespace for its processes (held by a `sleep` process), so that
#   kubelet's and containerd's mounts never reach the host, and host paths the daemons hard-code
#   (/var/log, /var/lib/cni, /run/containerd/{wasmedge,s}, the kernel tunables kubelet insists on)
#   are bind-mounted from the node's state dir there;
# - cgroups: everything below <this script's memory cgroup>/csw-k8s (node 0's kubelet
#   --cgroup-root; node i's is csw-k8s/n<i>; node/ below each for its daemons and shims), never
#   the host's root cgroups.
set -euo pipefail
# shellcheck source=k8s-lib.sh
source "$(dirname "$0")/k8s-lib.sh"
REPO=$(k8s_repo)
cd "$REPO"
D=$K8S_E2E_DIR
T0=$(date +%s.%N)

[ "$(id -u)" = 0 ] || { echo "k8s-up.sh must run as root" >&2; exit 1; }
for f in target/release/containerd-shim-wasmedge-v1 target/release/wasm-oci target/release/containerd-wasmedge-config target/release/wasm-weight-controller target/images/pause target/wasm/hello.wasm target/wasm/edge-function.wasm; do
  [ -e "$f" ] || { echo "$f missing: run \`make build wasm images\` first" >&2; exit 1; }
done
for c in ip nsenter unshare openssl iptables /usr/lib/cni/bridge /bin/busybox; do
  command -v "$c" >/dev/null || { echo "$c missing: run \`make setup\`" >&2; exit 1; }
done

# A cluster left from an earlier run goes first.
if [ -e "$D/cgroup-root" ] || [ -d "$D/pids" ] || ip netns list | grep -qw "^$K8S_NETNS"; then
  k8s_log "removing the previous cluster"
  bash "$REPO/scripts/k8s-down.sh"
fi

BIN=$(K8S_VERSION=$K8S_VERSION bash "$REPO/scripts/k8s-build.sh")
# The node's containerd, always by path (PATH may hold another release first).
case "$CONTAINERD" in
  2.3) CTRD=$(bash "$REPO/scripts/containerd-build.sh"); CTRD_CONFIG=src/devnode/containerd.toml ;;
  1.7) CTRD=/usr/bin; CTRD_CONFIG=src/devnode/containerd-1.7.toml ;;
  *) echo "CONTAINERD=$CONTAINERD: supported are 2.3 (the default) and 1.7" >&2; exit 1 ;;
esac
for c in containerd ctr containerd-shim-runc-v2; do
  [ -x "$CTRD/$c" ] || { echo "$CTRD/$c missing (CONTAINERD=$CONTAINERD)" >&2; exit 1; }
done
ctrd_version=$("$CTRD/containerd" --version | awk '{ print $3 }')
case "$ctrd_version" in
  "$CONTAINERD".*|"v$CONTAINERD".*) ;;
  *) echo "$CTRD/containerd is $ctrd_version, not containerd $CONTAINERD" >&2; exit 1 ;;
esac
k8s_log "Kubernetes v$K8S_VERSION ($BIN), containerd $ctrd_version ($CTRD)"
NODES=$K8S_NODES
[ "$NODES" -ge 1 ] && [ "$NODES" -le 9 ] || { echo "K8S_NODES=$NODES: 1 to 9" >&2; exit 1; }
mkdir -p "$D"/{pids,logs,pki,etcd,bin,images,policies}
echo "$NODES" > "$D/nodes"
for i in $(k8s_nodes); do
  ND=$(k8s_node_dir "$i")
  mkdir -p "$ND"/{cni/ipam,containerd/conf.d,containerd/cni/conf,kubelet,pod-logs,aot-cache,sysctl,installer-host}
  mkdir -p "$ND"/host/{var-log,var-lib-cni,run-wasmedge,run-shim-sockets}
done
echo "$BIN" > "$D/bin-dir"
echo "$CTRD" > "$D/containerd-bin-dir"
: > "$D/netns"

# ---------------------------------------------------------------------------------------------
# cgroups: <own memory cgroup>/csw-k8s in every hierarchy; created dirs are recorded for down.
own=$(awk -F: '$2 == "memory" { print $3 }' /proc/self/cgroup)
[ -n "$own" ] || own=$(awk -F: '$1 == "0" { print $3 }' /proc/self/cgroup)
CG="${own%/}/csw-k8s"
echo "$CG" > "$D/cgroup-root"
: > "$D/cgroup-created"
# Node 0's kubelet has cgroup root $CG, node i's $CG/n<i>; each node's daemons and shims sit in
# <its root>/node.
node_cg_root() { if [ "$1" = 0 ]; then echo "$CG"; else echo "$CG/n$1"; fi; }
declare -A NODE_CGROUPS
for i in $(k8s_nodes); do
  dirs=()
  for h in $(k8s_cgroup_mounts); do
    path=$h
    for part in $(echo "$(node_cg_root "$i")/node" | tr '/' ' '); do
      parent=$path; path="$path/$part"
      if [ ! -d "$path" ]; then
        mkdir "$path"
        echo "$path" >> "$D/cgroup-created"
        # A new cpuset cgroup has no CPUs or memory nodes: inherit the parent's.
        if [ -f "$parent/cpuset.cpus" ]; then
          cat "$parent/cpuset.cpus" > "$path/cpuset.cpus"
          cat "$parent/cpuset.mems" > "$path/cpuset.mems"
        fi
      fi
    done
    dirs+=("$path")
  done
  NODE_CGROUPS[$i]="${dirs[*]}"
done
k8s_log "cgroup root $CG (kubelet --cgroup-root of node 0; node i: $CG/n<i>; daemons and shims in <root>/node)"

# Starts a daemon in node NODE's cgroup, in its own session, and records its PID.
# The process moves itself into the cgroup before it execs, so all its children are there.
start_daemon() { # NODE NAME CMD...
  local name=$2
  export CSW_NODE_CGROUPS="${NODE_CGROUPS[$1]}"
  shift 2
  setsid nohup sh -c 'for d in $CSW_NODE_CGROUPS; do echo $$ > "$d/cgroup.procs"; done; exec "$@"' sh "$@" \
    > "$D/logs/$name.log" 2>&1 < /dev/null &
  local pid=$!
  local start=""
  for _ in $(seq 100); do start=$(k8s_starttime "$pid") && [ -n "$start" ] && break; sleep 0.01; done
  echo "$pid $start" > "$D/pids/$name.pid"
}

# ---------------------------------------------------------------------------------------------
# Network namespaces, one per node. One node: the node IP on its loopback. More: node 0 has
# bridge k8sbr0 with its IP, node i a veth (eth0 there, vn<i> on k8sbr0) with its own; each node
# routes the other nodes' pod subnets to them. In every node a route for the Service range
# (kube-proxy's rules rewrite it to pod IPs). Nothing connects them to the host.
for i in $(k8s_nodes); do
  ns=$(k8s_node_netns "$i")
  ip netns add "$ns"
  echo "$ns" >> "$D/netns"
  ip -n "$ns" link set lo up
  ip -n "$ns" route add "$K8S_SERVICE_CIDR" dev lo 2>/dev/null || true
  nsenter --net="/run/netns/$ns" -- sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'
done
if [ "$NODES" = 1 ]; then
  ip -n "$K8S_NETNS" addr add "$K8S_NODE_IP/32" dev lo
else
  ip -n "$K8S_NETNS" link add k8sbr0 type bridge
  ip -n "$K8S_NETNS" addr add "$K8S_NODE_IP/24" dev k8sbr0
  ip -n "$K8S_NETNS" link set k8sbr0 up
  for i in $(k8s_nodes); do
    [ "$i" = 0 ] && continue
    ns=$(k8s_node_netns "$i")
    ip -n "$ns" link add eth0 type veth peer name "vn$i" netns "$K8S_NETNS"
    ip -n "$ns" addr add "$(k8s_node_ip "$i")/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$K8S_NETNS" link set "vn$i" master k8sbr0 up
  done
  for i in $(k8s_nodes); do
    for j in $(k8s_nodes); do
      [ "$i" = "$j" ] || ip -n "$(k8s_node_netns "$i")" route add "$(k8s_node_pod_subnet "$j")" via "$(k8s_node_ip "$j")"
    done
  done
fi

# kubelet refuses to start unless these kernel tunables have its values, and sets them itself
# otherwise (protectKernelDefaults: false). Neither may happen to this shared host: inside each
# node's mount namespace the files are bind-mounted from the state dir with kubelet's values.
declare -A tunables=([vm/overcommit_memory]=1 [vm/panic_on_oom]=0 [kernel/panic]=10 [kernel/panic_on_oops]=1 [kernel/keys/root_maxkeys]=1000000 [kernel/keys/root_maxbytes]=25000000)
: > "$D/host-created"
for i in $(k8s_nodes); do
  ns=$(k8s_node_netns "$i"); ND=$(k8s_node_dir "$i"); sfx=$(k8s_node_sfx "$i")
  # The mount namespace holder of the node.
  start_daemon "$i" "holder$sfx" nsenter --net="/run/netns/$ns" -- unshare --mount --propagation slave -- sleep infinity
  holder=$(k8s_pid_alive "holder$sfx")
  for _ in $(seq 200); do
    [ "$(cat "/proc/$holder/comm" 2>/dev/null)" = sleep ] && break
    sleep 0.01
  done
  [ "$(readlink "/proc/$holder/ns/mnt")" != "$(readlink /proc/self/ns/mnt)" ] || { echo "mount namespace holder failed" >&2; exit 1; }
  for t in "${!tunables[@]}"; do
    f="$ND/sysctl/${t//\//.}"
    echo "${tunables[$t]}" > "$f"
    k8s_node_exec_on "$i" mount --bind "$f" "/proc/sys/$t"
  done
  # Host paths the daemons hard-code, redirected into the node's state dir (targets created if
  # missing, recorded, removed by down when still empty).
  for pair in "var-log:/var/log" "var-lib-cni:/var/lib/cni" "run-wasmedge:/run/containerd/wasmedge" "run-shim-sockets:/run/containerd/s"; do
    src="$ND/host/${pair%%:*}"; dst="${pair#*:}"
    dir=""
    for part in $(echo "$dst" | tr '/' ' '); do
      dir="$dir/$part"
      [ -d "$dir" ] || { mkdir "$dir"; echo "$dir" >> "$D/host-created"; }
    done
    k8s_node_exec_on "$i" mount --bind "$src" "$dst"
  done
  # The installer case's "node root" ($D/installer-host) is each node's own.
  [ "$i" = 0 ] || k8s_node_exec_on "$i" mount --bind "$ND/installer-host" "$D/installer-host"
  k8s_log "node $i: netns $ns, IP $(k8s_node_ip "$i"), mount namespace of pid $holder"
done
holder=$(k8s_pid_alive holder)

# ---------------------------------------------------------------------------------------------
# PKI: a CA, serving and client certificates, the service-account key pair.
P=$D/pki
ossl() { openssl "$@" 2>>"$D/logs/openssl.log"; }
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$P/ca.key" -out "$P/ca.crt" -days 7 -subj "/CN=csw-k8s-ca"
cert() { # NAME SUBJECT EXTENDED_KEY_USAGE [SUBJECT_ALT_NAMES]
  ossl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$P/$1.key" -out "$P/$1.csr" -subj "$2"
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$3"
    [ -z "${4:-}" ] || echo "subjectAltName=$4"
  } > "$P/$1.ext"
  ossl x509 -req -in "$P/$1.csr" -CA "$P/ca.crt" -CAkey "$P/ca.key" -CAcreateserial -days 7 -out "$P/$1.crt" -extfile "$P/$1.ext"
}
cert apiserver "/CN=kube-apiserver" serverAuth "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:$K8S_NODE_IP,IP:$K8S_API_SERVICE_IP,IP:127.0.0.1"
cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
cert admin "/O=system:masters/CN=csw-admin" clientAuth
cert controller-manager "/CN=system:kube-controller-manager" clientAuth
cert scheduler "/CN=system:kube-scheduler" clientAuth
cert kube-proxy "/CN=system:kube-proxy" clientAuth
for i in $(k8s_nodes); do
  n=$(k8s_node_name "$i")
  cert "kubelet$(k8s_node_sfx "$i")" "/O=system:nodes/CN=system:node:$n" clientAuth,serverAuth "DNS:$n,IP:$(k8s_node_ip "$i")"
done
ossl ecparam -name prime256v1 -genkey -noout -out "$P/sa.key"
ossl ec -in "$P/sa.key" -pubout -out "$P/sa.pub"
chmod 600 "$P"/*.key
kubeconfig() { # NAME
  cat > "$P/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: csw-k8s
  cluster:
    certificate-authority: $P/ca.crt
    server: https://$K8S_NODE_IP:6443
users:
- name: $1
  user:
    client-certificate: $P/$1.crt
    client-key: $P/$1.key
contexts:
- name: csw-k8s
  context: {cluster: csw-k8s, user: $1}
current-context: csw-k8s
EOF
}
for n in admin controller-manager scheduler kube-proxy; do kubeconfig "$n"; done
for i in $(k8s_nodes); do kubeconfig "kubelet$(k8s_node_sfx "$i")"; done

# ---------------------------------------------------------------------------------------------
# Control plane, all inside the node's namespaces.
start_daemon 0 etcd nsenter -t "$holder" -m -n -- "$BIN/etcd" --name csw --data-dir "$D/etcd" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster csw=http://127.0.0.1:2380 --unsafe-no-fsync --log-level warn
start_daemon 0 kube-apiserver nsenter -t "$holder" -m -n -- "$BIN/kube-apiserver" \
  --advertise-address="$K8S_NODE_IP" --bind-address="$K8S_NODE_IP" --secure-port=6443 \
  --etcd-servers=http://127.0.0.1:2379 --service-cluster-ip-range="$K8S_SERVICE_CIDR" \
  --cert-dir="$D/pki/apiserver-generated" --tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key" \
  --client-ca-file="$P/ca.crt" --kubelet-client-certificate="$P/apiserver-kubelet-client.crt" \
  --kubelet-client-key="$P/apiserver-kubelet-client.key" --kubelet-preferred-address-types=InternalIP \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$P/sa.pub" --service-account-signing-key-file="$P/sa.key" \
  --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction --allow-privileged=true \
  --profiling=false --v=1

for _ in $(seq 600); do
  kc get --raw /readyz >/dev/null 2>&1 && break
  sleep 0.1
done
kc get --raw /readyz >/dev/null || { tail -30 "$D/logs/kube-apiserver.log" >&2; echo "kube-apiserver did not become ready" >&2; exit 1; }
k8s_log "kube-apiserver ready at https://$K8S_NODE_IP:6443 (inside netns $K8S_NETNS)"

start_daemon 0 kube-controller-manager nsenter -t "$holder" -m -n -- "$BIN/kube-controller-manager" \
  --kubeconfig="$P/controller-manager.kubeconfig" --authentication-kubeconfig="$P/controller-manager.kubeconfig" \
  --authorization-kubeconfig="$P/controller-manager.kubeconfig" --bind-address=127.0.0.1 \
  --service-account-private-key-file="$P/sa.key" --root-ca-file="$P/ca.crt" --use-service-account-credentials=true \
  --cluster-signing-cert-file="$P/ca.crt" --cluster-signing-key-file="$P/ca.key" \
  --service-cluster-ip-range="$K8S_SERVICE_CIDR" --allocate-node-cidrs=false --leader-elect=false --profiling=false --v=1
start_daemon 0 kube-scheduler nsenter -t "$holder" -m -n -- "$BIN/kube-scheduler" \
  --kubeconfig="$P/scheduler.kubeconfig" --authentication-kubeconfig="$P/scheduler.kubeconfig" \
  --authorization-kubeconfig="$P/scheduler.kubeconfig" --bind-address=127.0.0.1 --leader-elect=false --profiling=false --v=1

# ---------------------------------------------------------------------------------------------
# containerd on every node: own root, state, socket; on wasm nodes the project's drop-in
# written the `make install` way.
install -m 0755 target/release/containerd-shim-wasmedge-v1 "$D/bin/containerd-shim-wasmedge-v1"
bash "$REPO/scripts/k8s-images.sh" "$D/images"
for i in $(k8s_nodes); do
  ND=$(k8s_node_dir "$i"); sfx=$(k8s_node_sfx "$i"); C=$ND/containerd
  sed -e "s|@DIR@|$C|g" -e "s|@CNI_BIN_DIR@|/usr/lib/cni|" -e "s|@PAUSE_IMAGE@|localhost/pause:3.10|" \
    "$CTRD_CONFIG" > "$C/config.toml"
  "$CTRD/containerd" --config "$C/config.toml" config dump > "$C/effective.toml"
  if k8s_node_is_wasm "$i"; then
    target/release/containerd-wasmedge-config --effective "$C/effective.toml" \
      --runtime runtime-config/wasmedge-runtime.toml --out "$C/conf.d/wasmedge.toml"
  fi
  # The test node's admin allows the edge function's fault-injection variables (canary e2e) on
  # top of edge-moderate, the default ceiling.
  cat > "$ND/shim-config.toml" <<EOF
aot_cache_dir = "$ND/aot-cache"
aot_cache_max_bytes = 1073741824
policy_dir = "$D/policies"

[ceiling]
maxMemoryPages = 512
executionTimeoutMs = 30000
allowedHosts = ["api.example.com", "cdn.example.com"]
allowedEnvVars = ["APP_MODE", "REGION", "LOG_LEVEL", "FAILURE_PERCENT", "DELAY_MS"]
allowedDirs = [{ hostPath = "/app/config", guestPath = "/config", readonly = true }, { hostPath = "/app/cache", guestPath = "/cache", readonly = false }]
maxNetworkRequests = 200
EOF
  cat > "$C/cni/conf/10-csw-k8s.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "csw-k8s",
  "plugins": [
    {
      "type": "bridge", "bridge": "cni0", "isGateway": true, "isDefaultGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": { "type": "host-local", "ranges": [[{ "subnet": "$(k8s_node_pod_subnet "$i")" }]], "dataDir": "$ND/cni/ipam" }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
EOF
  # Its runc shim is the same release's (first on its PATH, after this project's shim).
  start_daemon "$i" "containerd$sfx" env PATH="$D/bin:$CTRD:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    CONTAINERD_SHIM_WASMEDGE_CONFIG="$ND/shim-config.toml" \
    nsenter -t "$(k8s_pid_alive "holder$sfx")" -m -n -- "$CTRD/containerd" --config "$C/config.toml"
done
for i in $(k8s_nodes); do
  C=$(k8s_node_dir "$i")/containerd
  ctr_k8s() { "$CTRD/ctr" --address "$C/c.sock" -n k8s.io "$@"; }
  for _ in $(seq 300); do ctr_k8s version >/dev/null 2>&1 && break; sleep 0.1; done
  ctr_k8s version >/dev/null || { tail -30 "$D/logs/containerd$(k8s_node_sfx "$i").log" >&2; exit 1; }
  # Images (no registry here): built with wasm-oci, imported into k8s.io, used with
  # imagePullPolicy: Never.
  for tar in "$D"/images/*.tar; do ctr_k8s image import "$tar" >/dev/null; done
  k8s_log "node $i images: $(ctr_k8s image ls -q | grep ^localhost/ | tr '\n' ' ')"
done

# ---------------------------------------------------------------------------------------------
# kubelet and kube-proxy on every node.
printf '# e2e cluster: no DNS server\noptions ndots:1\n' > "$D/resolv.conf"
for i in $(k8s_nodes); do
  ND=$(k8s_node_dir "$i"); sfx=$(k8s_node_sfx "$i"); C=$ND/containerd
  name=$(k8s_node_name "$i"); ip=$(k8s_node_ip "$i"); holder=$(k8s_pid_alive "holder$sfx")
  labels=()
  if k8s_node_is_wasm "$i"; then labels=(--node-labels="$K8S_NODE_LABEL"); fi
  cat > "$ND/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $ip
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $P/ca.crt}
authorization: {mode: AlwaysAllow}
tlsCertFile: $P/kubelet$sfx.crt
tlsPrivateKeyFile: $P/kubelet$sfx.key
containerRuntimeEndpoint: unix://$C/c.sock
cgroupDriver: cgroupfs
cgroupsPerQOS: true
cgroupRoot: $(node_cg_root "$i")
enforceNodeAllocatable: [pods]
failSwapOn: false
# The host is cgroup v1 (hybrid): kubelet 1.35+ refuses it unless told otherwise.
failCgroupV1: false
protectKernelDefaults: true
localStorageCapacityIsolation: false
resolvConf: $D/resolv.conf
podLogsDir: $ND/pod-logs
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, nodefs.inodesFree: 1%, imagefs.available: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
nodeStatusReportFrequency: 10s
EOF
  start_daemon "$i" "kubelet$sfx" nsenter -t "$holder" -m -n -- "$BIN/kubelet" --config="$ND/kubelet/config.yaml" \
    --kubeconfig="$P/kubelet$sfx.kubeconfig" --root-dir="$ND/kubelet/root" --hostname-override="$name" \
    --node-ip="$ip" "${labels[@]}" --v=1
  cat > "$ND/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $P/kube-proxy.kubeconfig}
mode: iptables
clusterCIDR: $K8S_CLUSTER_CIDR
hostnameOverride: $name
bindAddress: $ip
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
iptables: {localhostNodePorts: false}
nodePortAddresses: [primary]
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  start_daemon "$i" "kube-proxy$sfx" nsenter -t "$holder" -m -n -- "$BIN/kube-proxy" --config="$ND/kube-proxy.yaml" --v=1
done

for i in $(k8s_nodes); do
  name=$(k8s_node_name "$i"); ready=""
  for _ in $(seq 600); do
    ready=$(kc get node "$name" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)
    [ "$ready" = True ] && break
    sleep 0.2
  done
  [ "$ready" = True ] || { tail -40 "$D/logs/kubelet$(k8s_node_sfx "$i").log" >&2; echo "node $name did not become Ready" >&2; exit 1; }
done
# Pods need the namespace's default ServiceAccount and kube-root-ca.crt (projected token).
for _ in $(seq 300); do
  kc -n default get serviceaccount default >/dev/null 2>&1 && kc -n default get configmap kube-root-ca.crt >/dev/null 2>&1 && break
  sleep 0.2
done
kc -n default get serviceaccount default >/dev/null
k8s_log "$(k8s_cluster_line)"
k8s_log "$NODES node(s) Ready in $(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s; kubectl: scripts/k8s-kubectl.sh"
