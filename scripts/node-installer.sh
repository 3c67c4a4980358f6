#!/bin/sh
# Entry point of the node-installer image (k8s/installer/): runs the install.sh of the node
# bundle the image carries (/opt/containerd-shim-wasmedge) against the node's / mounted at
# /host, then stays up so that the DaemonSet shows the node as done.
# ACTION=install|uninstall. Commands that must run on the node itself go through HOST_EXEC
# (default: enter PID 1's namespaces, which needs hostPID and privileged); each can also be
# set whole: CONTAINERD_DEFAULT, CONTAINERD_DUMP, RESTART_COMMAND.
/bin/busybox --install -s /bin
/bin/busybox mkdir -p /tmp
export PATH=/bin
ACTION=${ACTION:-install}
HOST_EXEC=${HOST_EXEC-nsenter -t 1 -m -u -i -n -p --}
export HOST_ROOT=${HOST_ROOT:-/host}
export POLICY_SRC=${POLICY_SRC:-/policies}
export CONTAINERD_DEFAULT=${CONTAINERD_DEFAULT:-$HOST_EXEC containerd config default}
export CONTAINERD_DUMP=${CONTAINERD_DUMP:-$HOST_EXEC containerd --config ${CONTAINERD_CONFIG:-/etc/containerd/config.toml} config dump}
export RESTART_COMMAND=${RESTART_COMMAND:-$HOST_EXEC systemctl restart containerd}
sh /opt/containerd-shim-wasmedge/install.sh "$ACTION" || { echo "[node-installer] $ACTION failed" >&2; exit 1; }
echo "$ACTION" > /tmp/done
echo "[node-installer] $ACTION done on $(hostname)"
trap 'exit 0' TERM INT
while :; do sleep 3600 & wait $!; done
