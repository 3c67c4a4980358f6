#!/usr/bin/env bash
# A one-node Kubernetes cluster for the end-to-end tests (make e2e), with this project's shim
# as RuntimeClass `wasmedge`. Undo everything with scripts/k8s-down.sh.
# K8S_VERSION (default 1.37.2) and CONTAINERD (2.3, the default, or 1.7) select the releases.
#
# Layout (all under $K8S_E2E_DIR, default /tmp/csw-k8s):
# - network namespace $K8S_NETNS: etcd, the control plane, containerd, kubelet, kube-proxy,
#   the pods' bridge cni0 (their default gateway, so pods reach Services and the API server)
#   and the Service IPs; nothing listens or routes outside it;
# - one private mount namespace for the same processes (held by a `sleep` process), so that
#   kubelet's and containerd's mounts never reach the host, and host paths the daemons hard-code
#   (/var/log, /var/lib/cni, /run/containerd/{wasmedge,s}, the kernel tunables kubelet insists on)
#   are bind-mounted from the state dir there;
# - cgroups: everything below <this script's memory cgroup>/csw-k8s (kubelet's --cgroup-root,
#   and node/ for the daemons and shims), never the host's root cgroups.
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
mkdir -p "$D"/{pids,logs,pki,etcd,bin,cni/ipam,containerd/conf.d,containerd/cni/conf,kubelet,pod-logs,images,aot-cache,policies,sysctl}
mkdir -p "$D"/host/{var-log,var-lib-cni,run-wasmedge,run-shim-sockets}
echo "$BIN" > "$D/bin-dir"
echo "$CTRD" > "$D/containerd-bin-dir"
echo "$K8S_NETNS" > "$D/netns"

# ---------------------------------------------------------------------------------------------
# cgroups: <own memory cgroup>/csw-k8s in every hierarchy; created dirs are recorded for down.
own=$(awk -F: '$2 == "memory" { print $3 }' /proc/self/cgroup)
[ -n "$own" ] || own=$(awk -F: '$1 == "0" { print $3 }' /proc/self/cgroup)
CG="${own%/}/csw-k8s"
echo "$CG" > "$D/cgroup-root"
: > "$D/cgroup-created"
node_cgroups=()
for h in $(k8s_cgroup_mounts); do
  path=$h
  for part in $(echo "$CG/node" | tr '/' ' '); do
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
  node_cgroups+=("$path")
done
export CSW_NODE_CGROUPS="${node_cgroups[*]}"
k8s_log "cgroup root $CG (kubelet --cgroup-root; daemons and shims in $CG/node)"

# Starts a daemon in the node cgroup, in its own session, and records its PID.
# The process moves itself into the cgroup before it execs, so all its children are there.
start_daemon() { # NAME CMD...
  local name=$1; shift
  setsid nohup sh -c 'for d in $CSW_NODE_CGROUPS; do echo $$ > "$d/cgroup.procs"; done; exec "$@"' sh "$@" \
    > "$D/logs/$name.log" 2>&1 < /dev/null &
  local pid=$!
  local start=""
  for _ in $(seq 100); do start=$(k8s_starttime "$pid") && [ -n "$start" ] && break; sleep 0.01; done
  echo "$pid $start" > "$D/pids/$name.pid"
}

# ---------------------------------------------------------------------------------------------
# Network namespace: loopback with the node IP, a route for the Service range (kube-proxy's
# rules rewrite it to pod IPs on cni0). Nothing connects it to the host.
ip netns add "$K8S_NETNS"
ip -n "$K8S_NETNS" link set lo up
ip -n "$K8S_NETNS" addr add "$K8S_NODE_IP/32" dev lo
ip -n "$K8S_NETNS" route add "$K8S_SERVICE_CIDR" dev lo
k8s_netns_exec sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'

# The mount namespace holder.
start_daemon holder nsenter --net="/run/netns/$K8S_NETNS" -- unshare --mount --propagation slave -- sleep infinity
holder=$(k8s_pid_alive holder)
for _ in $(seq 200); do
  [ "$(cat "/proc/$holder/comm" 2>/dev/null)" = sleep ] && break
  sleep 0.01
done
[ "$(readlink "/proc/$holder/ns/mnt")" != "$(readlink /proc/self/ns/mnt)" ] || { echo "mount namespace holder failed" >&2; exit 1; }

# kubelet refuses to start unless these kernel tunables have its values, and sets them itself
# otherwise (protectKernelDefaults: false). Neither may happen to this shared host: inside the
# node's mount namespace the files are bind-mounted from the state dir with kubelet's values.
declare -A tunables=([vm/overcommit_memory]=1 [vm/panic_on_oom]=0 [kernel/panic]=10 [kernel/panic_on_oops]=1 [kernel/keys/root_maxkeys]=1000000 [kernel/keys/root_maxbytes]=25000000)
for t in "${!tunables[@]}"; do
  f="$D/sysctl/${t//\//.}"
  echo "${tunables[$t]}" > "$f"
  k8s_node_exec mount --bind "$f" "/proc/sys/$t"
done
# Host paths the daemons hard-code, redirected into the state dir (targets created if missing,
# recorded, removed by down when still empty).
: > "$D/host-created"
for pair in "var-log:/var/log" "var-lib-cni:/var/lib/cni" "run-wasmedge:/run/containerd/wasmedge" "run-shim-sockets:/run/containerd/s"; do
  src="$D/host/${pair%%:*}"; dst="${pair#*:}"
  dir=""
  for part in $(echo "$dst" | tr '/' ' '); do
    dir="$dir/$part"
    [ -d "$dir" ] || { mkdir "$dir"; echo "$dir" >> "$D/host-created"; }
  done
  k8s_node_exec mount --bind "$src" "$dst"
done
k8s_log "netns $K8S_NETNS, mount namespace of pid $holder"

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
cert kubelet "/O=system:nodes/CN=system:node:$K8S_NODE_NAME" clientAuth,serverAuth "DNS:$K8S_NODE_NAME,IP:$K8S_NODE_IP"
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
for n in admin controller-manager scheduler kube-proxy kubelet; do kubeconfig "$n"; done

# ---------------------------------------------------------------------------------------------
# Control plane, all inside the node's namespaces.
start_daemon etcd nsenter -t "$holder" -m -n -- "$BIN/etcd" --name csw --data-dir "$D/etcd" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster csw=http://127.0.0.1:2380 --unsafe-no-fsync --log-level warn
start_daemon kube-apiserver nsenter -t "$holder" -m -n -- "$BIN/kube-apiserver" \
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

start_daemon kube-controller-manager nsenter -t "$holder" -m -n -- "$BIN/kube-controller-manager" \
  --kubeconfig="$P/controller-manager.kubeconfig" --authentication-kubeconfig="$P/controller-manager.kubeconfig" \
  --authorization-kubeconfig="$P/controller-manager.kubeconfig" --bind-address=127.0.0.1 \
  --service-account-private-key-file="$P/sa.key" --root-ca-file="$P/ca.crt" --use-service-account-credentials=true \
  --cluster-signing-cert-file="$P/ca.crt" --cluster-signing-key-file="$P/ca.key" \
  --service-cluster-ip-range="$K8S_SERVICE_CIDR" --allocate-node-cidrs=false --leader-elect=false --profiling=false --v=1
start_daemon kube-scheduler nsenter -t "$holder" -m -n -- "$BIN/kube-scheduler" \
  --kubeconfig="$P/scheduler.kubeconfig" --authentication-kubeconfig="$P/scheduler.kubeconfig" \
  --authorization-kubeconfig="$P/scheduler.kubeconfig" --bind-address=127.0.0.1 --leader-elect=false --profiling=false --v=1

# ---------------------------------------------------------------------------------------------
# containerd: own root, state, socket; the project's drop-in written the `make install` way.
C=$D/containerd
install -m 0755 target/release/containerd-shim-wasmedge-v1 "$D/bin/containerd-shim-wasmedge-v1"
sed -e "s|@DIR@|$C|g" -e "s|@CNI_BIN_DIR@|/usr/lib/cni|" -e "s|@PAUSE_IMAGE@|localhost/pause:3.10|" \
  "$CTRD_CONFIG" > "$C/config.toml"
"$CTRD/containerd" --config "$C/config.toml" config dump > "$C/effective.toml"
target/release/containerd-wasmedge-config --effective "$C/effective.toml" \
  --runtime runtime-config/wasmedge-runtime.toml --out "$C/conf.d/wasmedge.toml"
# The test node's admin allows the edge function's fault-injection variables (canary e2e) on
# top of edge-moderate, the default ceiling.
cat > "$D/shim-config.toml" <<EOF
aot_cache_dir = "$D/aot-cache"
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
      "ipam": { "type": "host-local", "ranges": [[{ "subnet": "$K8S_POD_SUBNET" }]], "dataDir": "$D/cni/ipam" }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
EOF
# Its runc shim is the same release's (first on its PATH, after this project's shim).
start_daemon containerd env PATH="$D/bin:$CTRD:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
  CONTAINERD_SHIM_WASMEDGE_CONFIG="$D/shim-config.toml" \
  nsenter -t "$holder" -m -n -- "$CTRD/containerd" --config "$C/config.toml"
ctr_k8s() { "$CTRD/ctr" --address "$C/c.sock" -n k8s.io "$@"; }
for _ in $(seq 300); do ctr_k8s version >/dev/null 2>&1 && break; sleep 0.1; done
ctr_k8s version >/dev/null || { tail -30 "$D/logs/containerd.log" >&2; exit 1; }

# Images (no registry here): built with wasm-oci, imported into k8s.io, used with
# imagePullPolicy: Never.
bash "$REPO/scripts/k8s-images.sh" "$D/images"
for tar in "$D"/images/*.tar; do ctr_k8s image import "$tar" >/dev/null; done
k8s_log "images: $(ctr_k8s image ls -q | grep ^localhost/ | tr '\n' ' ')"

# ---------------------------------------------------------------------------------------------
# kubelet and kube-proxy.
printf '# e2e cluster: no DNS server\noptions ndots:1\n' > "$D/resolv.conf"
cat > "$D/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $K8S_NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $P/ca.crt}
authorization: {mode: AlwaysAllow}
tlsCertFile: $P/kubelet.crt
tlsPrivateKeyFile: $P/kubelet.key
containerRuntimeEndpoint: unix://$C/c.sock
cgroupDriver: cgroupfs
cgroupsPerQOS: true
cgroupRoot: $CG
enforceNodeAllocatable: [pods]
failSwapOn: false
# The host is cgroup v1 (hybrid): kubelet 1.35+ refuses it unless told otherwise.
failCgroupV1: false
protectKernelDefaults: true
localStorageCapacityIsolation: false
resolvConf: $D/resolv.conf
podLogsDir: $D/pod-logs
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, nodefs.inodesFree: 1%, imagefs.available: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
nodeStatusReportFrequency: 10s
EOF
start_daemon kubelet nsenter -t "$holder" -m -n -- "$BIN/kubelet" --config="$D/kubelet/config.yaml" \
  --kubeconfig="$P/kubelet.kubeconfig" --root-dir="$D/kubelet/root" --hostname-override="$K8S_NODE_NAME" \
  --node-ip="$K8S_NODE_IP" --node-labels="$K8S_NODE_LABEL" --v=1
cat > "$D/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $P/kube-proxy.kubeconfig}
mode: iptables
clusterCIDR: $K8S_CLUSTER_CIDR
hostnameOverride: $K8S_NODE_NAME
bindAddress: $K8S_NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
iptables: {localhostNodePorts: false}
nodePortAddresses: [primary]
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
start_daemon kube-proxy nsenter -t "$holder" -m -n -- "$BIN/kube-proxy" --config="$D/kube-proxy.yaml" --v=1

ready=""
for _ in $(seq 600); do
  ready=$(kc get node "$K8S_NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)
  [ "$ready" = True ] && break
  sleep 0.2
done
[ "$ready" = True ] || { tail -40 "$D/logs/kubelet.log" >&2; echo "node $K8S_NODE_NAME did not become Ready" >&2; exit 1; }
# Pods need the namespace's default ServiceAccount and kube-root-ca.crt (projected token).
for _ in $(seq 300); do
  kc -n default get serviceaccount default >/dev/null 2>&1 && kc -n default get configmap kube-root-ca.crt >/dev/null 2>&1 && break
  sleep 0.2
done
kc -n default get serviceaccount default >/dev/null
k8s_log "$(k8s_cluster_line)"
k8s_log "node $K8S_NODE_NAME Ready in $(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s; kubectl: scripts/k8s-kubectl.sh"
