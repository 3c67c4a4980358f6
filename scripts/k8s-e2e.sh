#!/usr/bin/env bash
# make e2e: a fresh cluster (scripts/k8s-up.sh, K8S_NODES nodes), the end-to-end cases against it,
# and the cluster removed again (scripts/k8s-down.sh), also when a case fails.
#
#   E2E_REUSE=1   run the cases against the cluster that is up, and leave it up
#   E2E_ONLY="name ..."   run only these cases
set -uo pipefail
# shellcheck source=k8s-lib.sh
source "$(dirname "$0")/k8s-lib.sh"
REPO=$(k8s_repo)
cd "$REPO"
D=$K8S_E2E_DIR

if [ "${E2E_REUSE:-0}" != 1 ]; then
  trap 'K8S_KEEP_LOGS=${K8S_KEEP_LOGS:-0} bash "$REPO/scripts/k8s-down.sh"' EXIT
  bash scripts/k8s-up.sh || { echo "e2e: cluster did not come up; logs:" >&2; tail -n 20 "$D"/logs/*.log >&2; exit 1; }
fi
echo "e2e cluster: $(k8s_cluster_line)"

passed=0 failed=0 skipped=0 failures=()
ok() { echo "  ok: $*"; }
die() { echo "  FAILED: $*" >&2; return 1; }

# wait_for SECONDS DESCRIPTION COMMAND...: until COMMAND succeeds.
wait_for() {
  local secs=$1 what=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || die "timed out after ${secs}s waiting for $what" || return 1
    sleep 0.3
  done
}
jp() { kc get "$1" "$2" -o jsonpath="$3" 2>/dev/null; }
field_is() { [ "$(jp "$1" "$2" "$3")" = "$4" ]; }
is_empty() { [ -z "$("$@" 2>/dev/null)" ]; }
logs_contain() { kc logs "$1" 2>/dev/null | grep -q "$2"; }

dump_state() {
  echo "---- kubectl get pods -A -o wide" >&2
  kc get pods -A -o wide >&2 2>&1
  echo "---- kubectl get events" >&2
  kc get events -A --sort-by=.lastTimestamp 2>&1 | tail -n 25 >&2
  local i l
  for i in $(k8s_nodes); do
    for l in kubelet containerd; do echo "---- $l$(k8s_node_sfx "$i").log (tail)" >&2; tail -n 15 "$D/logs/$l$(k8s_node_sfx "$i").log" >&2; done
  done
}

# The nodes labelled for wasm, by name, sorted; and a pod's node is one of them.
wasm_node_names() { for i in $(k8s_nodes); do k8s_node_is_wasm "$i" && k8s_node_name "$i"; done | sort; }
labelled_node_names() { kc get nodes -l "$K8S_NODE_LABEL" -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}' | sort; }
on_wasm_node() { wasm_node_names | grep -qx "$(jp pod "$1" '{.spec.nodeName}')"; }

run_case() { # NAME FUNCTION
  if [ -n "${E2E_ONLY:-}" ] && ! echo " $E2E_ONLY " | grep -q " $1 "; then return; fi
  echo "== $1"
  local t0=$SECONDS rc
  # Not on the left of || : there bash would ignore set -e inside the subshell.
  ( set -e; "$2" ); rc=$?
  if [ $rc = 0 ]; then
    passed=$((passed + 1)); echo "== $1: passed ($((SECONDS - t0)) s)"
  elif [ $rc = 77 ]; then
    skipped=$((skipped + 1)); echo "== $1: SKIPPED"
  else
    failed=$((failed + 1)); failures+=("$1"); echo "== $1: FAILED ($((SECONDS - t0)) s)"; dump_state
  fi
}

# --- 1. kubectl apply -f k8s/, wasm pods Running and Ready, logs, RuntimeClass ---------------
case_apply() {
  # Every manifest in k8s/ is valid against this API server; the controller's namespace and
  # CRD first, as on a real cluster, so that its namespaced objects and the example EdgeCanary
  # can be checked.
  kc apply -f k8s/controller/namespace.yaml -f k8s/controller/crd.yaml
  kc wait --for condition=established --timeout=60s crd/edgecanaries.wasmedge.io
  kc apply --dry-run=server -R -f k8s/ >/dev/null
  ok "kubectl apply --dry-run=server -R -f k8s/ accepted every manifest"
  kc apply -f k8s/runtimeclass.yaml -f k8s/policy-configmap.yaml
  field_is runtimeclass wasmedge '{.handler}' wasmedge
  kc apply -f tests/k8s/wasm-hello.yaml -f tests/k8s/wasm-sleeper.yaml
  wait_for 120 "wasm-sleeper Running and Ready" field_is pod wasm-sleeper '{.status.conditions[?(@.type=="Ready")].status}' True
  field_is pod wasm-sleeper '{.status.phase}' Running
  kc get pod wasm-sleeper -o wide
  kc get pod wasm-sleeper -o custom-columns=NAME:.metadata.name,RUNTIMECLASS:.spec.runtimeClassName,STATUS:.status.phase,NODE:.spec.nodeName
  ok "wasm-sleeper Running and Ready"
  [ "$(jp pod wasm-sleeper '{.spec.runtimeClassName}')" = wasmedge ] || die "runtimeClassName"
  [ "$(jp pod wasm-sleeper '{.spec.nodeSelector.wasmedge\.io/runtime}')" = true ] || die "RuntimeClass nodeSelector not applied"
  ok "runtimeClassName wasmedge, RuntimeClass scheduling nodeSelector merged into the pod"
  # The module's processes sit in the pod's cgroup below kubelet's cgroup root.
  local uid root procs h
  uid=$(jp pod wasm-sleeper '{.metadata.uid}'); root=$(cat "$D/cgroup-root")
  on_wasm_node wasm-sleeper || die "wasm-sleeper on node $(jp pod wasm-sleeper '{.spec.nodeName}'), not a labelled one ($(wasm_node_names | tr '\n' ' '))"
  ok "wasm-sleeper on labelled node $(jp pod wasm-sleeper '{.spec.nodeName}') (labelled: $(labelled_node_names | tr '\n' ' '))"
  [ "$(labelled_node_names)" = "$(wasm_node_names)" ] || die "labelled nodes: $(labelled_node_names | tr '\n' ' ')"
  # (Each node's kubelet has its own cgroup root below $root: kubepods there.)
  procs=$(for h in $(k8s_cgroup_mounts); do [ -d "$h$root" ] && find "$h$root" -path "*/kubepods/*pod$uid/*" -name cgroup.procs -exec cat {} +; done | sort -u)
  [ -n "$procs" ] || die "no process of wasm-sleeper in a pod cgroup below $root"
  ok "wasm-sleeper's processes ($(echo $procs)) in its pod cgroup below $root"
  wait_for 60 "wasm-sleeper output" logs_contain wasm-sleeper 'sleeping 25'
  ok "kubectl logs wasm-sleeper: $(kc logs wasm-sleeper | head -1)"
  wait_for 120 "wasm-hello Succeeded" field_is pod wasm-hello '{.status.phase}' Succeeded
  on_wasm_node wasm-hello || die "wasm-hello on node $(jp pod wasm-hello '{.spec.nodeName}')"
  [ "$(kc logs wasm-hello)" = "hello from wasmedge" ] || die "kubectl logs wasm-hello: $(kc logs wasm-hello)"
  ok "kubectl logs wasm-hello: hello from wasmedge (pod Succeeded, exit $(jp pod wasm-hello '{.status.containerStatuses[0].state.terminated.exitCode}'))"
  kc apply -f tests/k8s/edge-function-once.yaml
  wait_for 120 "edge-function-once Succeeded" field_is pod edge-function-once '{.status.phase}' Succeeded
  kc logs edge-function-once | grep -qF '\"result\":\"HELLO\"' || die "edge function output: $(kc logs edge-function-once)"
  ok "edge function, command mode: $(kc logs edge-function-once)"
}

# --- Services inside the node's netns (the path case 4 uses), with runc pods ----------------
# Ten requests to the ClusterIP answered by two different replicas.
both_replicas_answer() {
  [ "$(for _ in $(seq 10); do k8s_netns_exec curl -sf --max-time 5 "http://$1/"; done | sort -u | grep -c echo-runc)" = 2 ]
}
case_service() {
  kc apply -f tests/k8s/service-runc.yaml
  kc rollout status deployment/echo-runc --timeout=120s
  local ip seen
  ip=$(jp service echo-runc '{.spec.clusterIP}')
  # Ready pods reach the EndpointSlice and then kube-proxy's rules one by one, a moment after
  # the rollout: wait for both endpoints, then for the rules to send requests to both.
  wait_for 120 "2 ready endpoints of echo-runc" field_is endpointslices \
    --selector=kubernetes.io/service-name=echo-runc '{range .items[*].endpoints[?(@.conditions.ready==true)]}x{end}' xx
  wait_for 120 "ClusterIP $ip to reach both replicas" both_replicas_answer "$ip"
  seen=$(for _ in $(seq 20); do k8s_netns_exec curl -sf --max-time 5 "http://$ip/"; done | sort | uniq -c)
  echo "$seen" | sed 's/^/    /'
  [ "$(echo "$seen" | grep -c echo-runc)" = 2 ] || die "20 requests to ClusterIP $ip did not reach both replicas"
  ok "ClusterIP $ip balanced 20 requests over both replicas"
  kc delete -f tests/k8s/service-runc.yaml --wait=true
}

# --- 2. Job whose module exits 3 ------------------------------------------------------------
case_job_exit_code() {
  kc apply -f tests/k8s/job-exit3.yaml
  wait_for 120 "Job wasm-exit3 Failed" field_is job wasm-exit3 '{.status.conditions[?(@.type=="Failed")].status}' True
  local reason pod code
  reason=$(jp job wasm-exit3 '{.status.conditions[?(@.type=="Failed")].reason}')
  [ "$reason" = BackoffLimitExceeded ] || die "Job failed with reason $reason"
  pod=$(kc get pods -l job-name=wasm-exit3 -o jsonpath='{.items[0].metadata.name}')
  code=$(jp pod "$pod" '{.status.containerStatuses[0].state.terminated.exitCode}')
  [ "$code" = 3 ] || die "exit code $code"
  [ "$(jp pod "$pod" '{.status.phase}')" = Failed ] || die "pod phase"
  ok "pod $pod: exitCode 3, phase Failed; Job condition Failed ($reason); logs: $(kc logs "$pod")"
}

# --- 3. bad wasmedge.io annotation ------------------------------------------------------------
case_bad_annotation() {
  kc apply -f tests/k8s/bad-annotation.yaml
  wait_for 120 "wasm-bad-annotation Failed" field_is pod wasm-bad-annotation '{.status.phase}' Failed
  local code msg
  code=$(jp pod wasm-bad-annotation '{.status.containerStatuses[0].state.terminated.exitCode}')
  msg=$(jp pod wasm-bad-annotation '{.status.containerStatuses[0].state.terminated.message}')
  [ "$code" = 78 ] || die "exit code $code"
  echo "$msg" | grep -qF 'invalid annotation wasmedge.io/max-memory-pages="lots"' || die "termination message: $msg"
  kc describe pod wasm-bad-annotation | grep -qF 'invalid annotation wasmedge.io/max-memory-pages="lots"' || die "kubectl describe lacks the reason"
  ok "exit 78, phase Failed, kubectl describe: $msg"
}

# --- 4. HTTP mode through the Service --------------------------------------------------------
metric_total() { # POD_IP: sum of wasmedge_http_requests_total over its labels
  k8s_netns_exec curl -sf --max-time 5 "http://$1:8080/metrics" | awk '/^wasmedge_http_requests_total/ { s += $NF } END { print s + 0 }'
}
# IP POD_IP...: of 10 requests to the ClusterIP, every pod served at least 3 (its metric; a
# probe adds at most one in that time).
every_edge_pod_answers() {
  local ip=$1 p; shift
  declare -A at
  for p in "$@"; do at[$p]=$(metric_total "$p"); done
  for _ in $(seq 10); do k8s_netns_exec curl -sf --max-time 5 -o /dev/null "http://$ip/api/v1/items"; done
  for p in "$@"; do [ $(( $(metric_total "$p") - ${at[$p]} )) -ge 3 ] || return 1; done
}
case_http() {
  kc apply -f k8s/edge-function.yaml
  kc rollout status deployment/edge-function --timeout=180s
  wait_for 60 "2 ready replicas" field_is deployment edge-function '{.status.readyReplicas}' 2
  local ip body pods p
  ip=$(jp service edge-function '{.spec.clusterIP}')
  wait_for 30 "ClusterIP $ip to answer" k8s_netns_exec curl -sf --max-time 5 -o /dev/null "http://$ip/api/v1/items"
  body=$(k8s_netns_exec curl -sf --max-time 5 "http://$ip/api/v1/items?id=7")
  echo "$body" | grep -q '"path"' || die "GET: $body"
  ok "GET http://$ip/api/v1/items -> $body"
  body=$(k8s_netns_exec curl -sf --max-time 5 -X POST -H 'content-type: application/json' -d '{"action":"transform","data":"hello"}' "http://$ip/api/v1/process")
  echo "$body" | grep -q 'HELLO' || die "POST transform: $body"
  ok "POST transform -> $body"
  pods=$(kc get pods -l app=edge-function -o jsonpath='{range .items[*]}{.status.podIP}{" "}{end}')
  local nodes
  nodes=$(kc get pods -l app=edge-function -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}' | sort -u)
  for p in $nodes; do wasm_node_names | grep -qx "$p" || die "an edge-function pod on node $p, not a labelled one"; done
  if [ "$(wasm_node_names | wc -l)" -ge 2 ]; then
    [ "$(echo "$nodes" | wc -l)" = 2 ] || die "both edge-function replicas on $nodes: not spread over the wasm nodes"
  fi
  ok "edge-function pods on $(echo $nodes) (labelled nodes only)"
  # As in case_service: both endpoints reach the EndpointSlice, then kube-proxy's rules, a
  # moment after the replicas are ready.
  wait_for 120 "2 ready endpoints of edge-function" field_is endpointslices \
    --selector=kubernetes.io/service-name=edge-function '{range .items[*].endpoints[?(@.conditions.ready==true)]}x{end}' xx
  # shellcheck disable=SC2086 # one argument per pod IP
  wait_for 120 "ClusterIP $ip to reach both edge-function pods" every_edge_pod_answers "$ip" $pods
  declare -A before
  for p in $pods; do before[$p]=$(metric_total "$p"); done
  for _ in $(seq 40); do k8s_netns_exec curl -sf --max-time 5 -o /dev/null "http://$ip/api/v1/items"; done
  for p in $pods; do
    local grew=$(( $(metric_total "$p") - ${before[$p]} ))
    # Probes add at most a few requests in the time 40 requests take.
    [ "$grew" -ge 5 ] || die "pod $p served $grew of 40 requests: not load-balanced"
    ok "pod $p served $grew of the 40 requests (wasmedge_http_requests_total)"
  done
  for p in $(kc get pods -l app=edge-function -o name); do
    [ "$(kc get "$p" -o jsonpath='{.status.containerStatuses[0].restartCount}')" = 0 ] || die "$p restarted: liveness /health failed"
  done
  ok "readiness /ready and liveness /health passing (Ready, no restarts)"
}

# --- node installer DaemonSet -------------------------------------------------------------------
# The DaemonSet of k8s/installer/ with its host paths moved into the state dir: its "node" is
# $D/installer-host, the dump is the cluster containerd's, and the restart only leaves a mark.
render_installer() {
  local h=$D/installer-host
  sed -e "s|^            path: /\$|            path: $h|" \
      -e "s|^      hostPID: true\$|      hostPID: false|" \
      -e 's|^              value: nsenter -t 1 -m -u -i -n -p --$|              value: ""\n            - name: CONTAINERD_DUMP\n              value: cat /host/effective.toml\n            - name: RESTART_COMMAND\n              value: date >> /host/containerd-restarts|' \
      k8s/installer/daemonset.yaml
}
# Each node's $D/installer-host is its own dir ($D/node<i>/installer-host bind-mounted there in
# node i's mount namespace), so the DaemonSet's pods install into one dir per node.
wasm_node_indexes() { for i in $(k8s_nodes); do k8s_node_is_wasm "$i" && echo "$i"; done; }
case_installer() {
  local ds=daemonset/containerd-shim-wasmedge-installer i h
  for i in $(k8s_nodes); do
    h=$(k8s_node_dir "$i")/installer-host
    mkdir -p "$h/etc/containerd"
    sed '/^imports = /d' "$(k8s_node_dir "$i")/containerd/config.toml" > "$h/etc/containerd/config.toml"
    cp "$(k8s_node_dir "$i")/containerd/effective.toml" "$h/effective.toml"
  done
  render_installer > "$D/installer.yaml"
  h=$D/installer-host
  if grep -qE '^ +path: /$|hostPID: true|nsenter -t 1' "$D/installer.yaml" || ! grep -q "path: $h" "$D/installer.yaml"; then
    die "rendering the installer for the e2e failed"
  fi
  kc apply -f "$D/installer.yaml"
  kc -n kube-system rollout status "$ds" --timeout=180s
  local want on
  want=$(wasm_node_indexes | wc -l)
  [ "$(kc -n kube-system get "$ds" -o jsonpath='{.status.desiredNumberScheduled}')" = "$want" ] || die "DaemonSet wants $(kc -n kube-system get "$ds" -o jsonpath='{.status.desiredNumberScheduled}') pods, not $want"
  on=$(kc -n kube-system get pods -l app.kubernetes.io/name=containerd-shim-wasmedge-installer -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}' | sort)
  [ "$on" = "$(wasm_node_names)" ] || die "installer pods on: $(echo $on); labelled nodes: $(wasm_node_names | tr '\n' ' ')"
  ok "installer DaemonSet: one pod on each labelled node ($(echo $on)), none elsewhere"
  local b=target/bundle/containerd-shim-wasmedge o=/opt/containerd-shim-wasmedge f p
  for i in $(wasm_node_indexes); do
    h=$(k8s_node_dir "$i")/installer-host
    for f in $(cd "$b" && find bin lib -type f); do cmp "$b/$f" "$h$o/$f"; done
    [ "$(readlink "$h/usr/local/bin/containerd-shim-wasmedge-v1")" = "$o/bin/containerd-shim-wasmedge-v1" ] || die "shim link"
    [ "$(readlink "$h/usr/local/bin/containerd-wasmedge-config")" = "$o/bin/containerd-wasmedge-config" ] || die "config tool link"
    cmp runtime-config/node-config.toml "$h/etc/containerd-shim-wasmedge/config.toml"
    for p in runtime-config/policies/*.yaml; do cmp "$p" "$h/etc/containerd-shim-wasmedge/policies/$(basename "$p")"; done
    grep -q 'runtimes.wasmedge\]' "$h/etc/containerd/conf.d/wasmedge.toml"
    grep -qF "imports = [\"/etc/containerd/conf.d/*.toml\"]" "$h/etc/containerd/config.toml"
    [ "$(wc -l < "$h/containerd-restarts")" = 1 ] || die "restart command not run once on $(k8s_node_name "$i")"
    ok "$(k8s_node_name "$i"): the node bundle (same bytes) in $o, links in /usr/local/bin, node config, policies from the ConfigMap, drop-in, imports, one restart"
  done
  for i in $(k8s_nodes); do
    k8s_node_is_wasm "$i" && continue
    h=$(k8s_node_dir "$i")/installer-host
    [ ! -e "$h$o" ] && [ ! -e "$h/containerd-restarts" ] || die "installed on unlabelled node $(k8s_node_name "$i")"
  done
  kc -n kube-system logs "$ds" | sed 's/^/    /'
  kc -n kube-system set env "$ds" ACTION=uninstall
  kc -n kube-system rollout status "$ds" --timeout=180s
  for i in $(wasm_node_indexes); do
    h=$(k8s_node_dir "$i")/installer-host
    wait_for 60 "uninstall on $(k8s_node_name "$i")" test ! -L "$h/usr/local/bin/containerd-shim-wasmedge-v1"
    [ ! -e "$h$o" ] || die "bundle left in $o"
    [ ! -e "$h/etc/containerd/conf.d/wasmedge.toml" ] || die "drop-in left"
    [ "$(wc -l < "$h/containerd-restarts")" = 2 ] || die "restart command not run on uninstall"
  done
  ok "uninstalled on every labelled node: bundle, links and drop-in removed, restart run"
  kc delete -f "$D/installer.yaml" --wait=true
}

# --- drain: a wasm node drained under a bounded load on the edge function's Service -------------
# (More than one wasm node only.) The load: sequential requests from node 0's netns to the
# ClusterIP, each with its own connection; every one must get a 200.
load_loop() { # IP OUT STOPFILE
  local n=0
  while [ ! -e "$3" ]; do
    rc=0; code=$(k8s_netns_exec curl -s --max-time 10 -o /dev/null -w '%{http_code}' "http://$1/api/v1/items?n=$n") || rc=$?
    echo "$(date +%s.%N) $code curl-exit-$rc" >> "$2"
    n=$((n + 1))
    sleep 0.05
  done
}
case_drain() {
  [ "$(wasm_node_names | wc -l)" -ge 2 ] || { echo "  skipped: fewer than 2 wasm nodes"; return 77; }
  kc apply -f k8s/runtimeclass.yaml -f k8s/edge-function.yaml
  kc rollout status deployment/edge-function --timeout=180s
  wait_for 60 "2 ready replicas" field_is deployment edge-function '{.status.readyReplicas}' 2
  local ip victim other out=$D/drain-load.txt stop=$D/drain-load.stop nodes
  nodes=$(kc get pods -l app=edge-function -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}' | sort -u)
  [ "$(echo "$nodes" | wc -l)" = 2 ] || die "edge-function replicas not on both wasm nodes: $(echo $nodes)"
  victim=$(echo "$nodes" | head -1); other=$(echo "$nodes" | tail -1)
  ip=$(jp service edge-function '{.spec.clusterIP}')
  wait_for 120 "2 ready endpoints of edge-function" field_is endpointslices \
    --selector=kubernetes.io/service-name=edge-function '{range .items[*].endpoints[?(@.conditions.ready==true)]}x{end}' xx
  rm -f "$out" "$stop"
  load_loop "$ip" "$out" "$stop" &
  local loader=$!
  sleep 5
  local t0=$SECONDS drain_start
  drain_start=$(date +%s.%N)
  kc drain "$victim" --ignore-daemonsets --delete-emptydir-data --timeout=180s
  local drained=$((SECONDS - t0))
  wait_for 180 "2 ready replicas again" field_is deployment edge-function '{.status.readyReplicas}' 2
  local now_on
  now_on=$(kc get pods -l app=edge-function -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}' | sort -u)
  sleep 5
  touch "$stop"; wait "$loader"
  kc uncordon "$victim"
  local total failed_n
  total=$(wc -l < "$out"); failed_n=$(awk '$2 != 200' "$out" | wc -l)
  [ "$now_on" = "$other" ] || die "after the drain the replicas are on: $(echo $now_on), expected $other only"
  ok "kubectl drain $victim in ${drained}s; the replacement runs on $other"
  [ "$total" -ge 20 ] || die "only $total requests sent during the drain"
  [ "$failed_n" = 0 ] || die "$failed_n of $total requests failed during the drain (status, seconds after the drain began): $(awk -v t="$drain_start" '$2 != 200 { printf "%s(%s)@%+.2fs ", $2, $3, $1 - t }' "$out")"
  ok "$total requests to ClusterIP $ip during the drain, all 200"
  kc delete -f k8s/edge-function.yaml --wait=true
}

# --- 6. start to Ready: wasm pod vs runc pod ----------------------------------------------------
case_bench() {
  bash scripts/k8s-bench.sh
}

# --- 5. kubectl delete leaves nothing -----------------------------------------------------------
case_delete() {
  kc delete job wasm-exit3 --ignore-not-found --wait=true
  kc delete -f tests/k8s/ --ignore-not-found --wait=true
  kc delete -f k8s/edge-function.yaml --ignore-not-found --wait=true
  kc delete pods -l e2e=csw --ignore-not-found --wait=true
  wait_for 120 "no pods" is_empty kc get pods -A -o name
  ok "kubectl get pods -A: no pods"
  local root daemons
  root=$(cat "$D/cgroup-root")
  daemons=" $({ for n in etcd kube-apiserver kube-controller-manager kube-scheduler; do k8s_pid_alive $n; done
    for i in $(k8s_nodes); do for n in containerd kubelet kube-proxy holder; do k8s_pid_alive "$n$(k8s_node_sfx "$i")"; done; done; } | tr '\n' ' ')"
  others() { for p in $(k8s_cgroup_pids); do case "$daemons" in *" $p "*) ;; *) echo "$p";; esac; done; }
  wait_for 60 "shims and container processes to exit" is_empty others
  ok "no shim or container process left in $root"
  pod_cgroups() { for h in $(k8s_cgroup_mounts); do [ -d "$h$root" ] && find "$h$root" -mindepth 1 -type d -path '*/kubepods/*' -name 'pod*'; done; }
  wait_for 90 "pod cgroups removed" is_empty pod_cgroups
  ok "no pod cgroup dir left under any node's kubepods below $root"
  local i holder mounts nd
  for i in $(k8s_nodes); do
    holder=$(k8s_pid_alive "holder$(k8s_node_sfx "$i")"); nd=$(k8s_node_dir "$i")
    # (kubelet's root dir is a bind mount of itself, for mount propagation: not a pod's.)
    mounts=$(k8s_mounts_under "$holder" "$nd/containerd"; k8s_mounts_under "$holder" "$nd/kubelet/root/pods"; k8s_mounts_under "$holder" "$nd/host")
    [ -z "$mounts" ] || die "mounts left on $(k8s_node_name "$i"): $mounts"
    [ -z "$(ls -A "$nd/host/run-wasmedge/k8s.io" 2>/dev/null)" ] || die "shim state left on $(k8s_node_name "$i"): $(ls "$nd/host/run-wasmedge/k8s.io")"
    [ -z "$(ls -A "$nd/host/run-shim-sockets" 2>/dev/null)" ] || die "shim sockets left on $(k8s_node_name "$i"): $(ls "$nd/host/run-shim-sockets")"
  done
  ok "no rootfs, shm, netns or volume mount left (each node's mount namespace)"
  ok "no shim state left in /run/containerd/wasmedge/k8s.io, no shim socket in /run/containerd/s (each node)"
}

# --- canary: the weight controller's rollouts on this cluster (tests/e2e_canary.rs) -------------
case_canary() {
  local bin
  # (|| true: under set -e a failed build would end the case without saying why.)
  bin=$(cargo test --release --test e2e_canary --no-run --message-format=json 2>"$D/logs/e2e_canary-build.log" \
    | jq -r 'select(.executable != null and .target.name == "e2e_canary") | .executable' | tail -n 1) || true
  [ -x "$bin" ] || { tail -n 30 "$D/logs/e2e_canary-build.log" >&2; die "the e2e_canary test binary did not build"; }
  kc apply -f k8s/runtimeclass.yaml >/dev/null
  # In the node's network namespace: the controller scrapes pod IPs, the load goes to the ClusterIP.
  # One test stops the kube-apiserver for a while (SIGSTOP); it continues it itself, and so
  # does this case whatever happens to the test.
  local apiserver rc=0
  apiserver=$(k8s_pid_alive kube-apiserver)
  k8s_netns_exec env CSW_E2E_KUBECONFIG="$D/pki/admin.kubeconfig" CSW_E2E_IMAGE=localhost/edge-function:v1 \
    CSW_E2E_APISERVER_PID="$apiserver" "$bin" --nocapture --test-threads=1 || rc=$?
  kill -CONT "$apiserver" 2>/dev/null || true
  if [ $rc != 0 ]; then
    # What a failed test left, then remove it, so that the later cases see a clean cluster.
    dump_state
    kc -n wasmedge-system logs -l app.kubernetes.io/name=wasm-weight-controller --tail=30 >&2 2>&1 || true
    local ns
    for ns in $(kc get namespace -o name | grep '/ec-e2e-'); do kc delete "$ns" --wait=true >/dev/null 2>&1 || true; done
    kc delete -f k8s/controller/deployment.yaml -f k8s/controller/rbac.yaml --ignore-not-found --wait=true >/dev/null 2>&1 || true
    die "canary rollouts failed"
  fi
}

run_case apply case_apply
run_case job-exit-code case_job_exit_code
run_case bad-annotation case_bad_annotation
run_case service case_service
run_case http case_http
run_case installer case_installer
run_case canary case_canary
run_case drain case_drain
run_case bench case_bench
run_case delete case_delete

echo
[ ${#failures[@]} = 0 ] || echo "failed cases: ${failures[*]}"
echo "e2e: $passed passed, $failed failed, $skipped skipped"
[ $failed = 0 ]
