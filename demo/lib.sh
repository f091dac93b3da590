# shellcheck shell=bash disable=SC2034  # variables are used by the scripts that source this
# Shared by demo/up and demo/down. Sourced, not run.

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Everything the demo makes lives here (cluster state, disk images, NFS export, logs, pids);
# `demo/down` deletes it. Separate from tests/cluster's default dir, so tests and demo coexist.
STATE=${VOLPOOL_DEMO_DIR:-/tmp/volpool-demo}
CLUSTER_DIR=$STATE/cluster
DISCOVERY_DIR=$STATE/mnt/disks
EXPORT_DIR=$STATE/nfs-export
NODES=(demo-node-1 demo-node-2 demo-node-3)
# Loopback ports: agents PORT_BASE+1..3, controller PORT_BASE+10, Prometheus PORT_BASE+90.
PORT_BASE=${VOLPOOL_DEMO_PORT_BASE:-19800}
CONTROLLER_PORT=$((PORT_BASE + 10))
PROMETHEUS_PORT=$((PORT_BASE + 90))
CACHE_ROOT=${VOLPOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/volpool}
KUBECTL=$CACHE_ROOT/kubernetes-1.20.2/bin/kubectl
# Marks a state dir made by demo/up: demo/down deletes nothing else.
MARKER=.volpool-demo

agent_port() { echo $((PORT_BASE + $1)); }

log() { echo "demo: $*" >&2; }
die() {
    echo "demo: error: $*" >&2
    exit 1
}

# The pid in $STATE/pids/<name>.pid if that process still runs and its command line contains
# <expected> (so a recycled pid is never signalled); else nothing.
live_pid() {
    local file=$STATE/pids/$1.pid expected=$2 pid
    [[ -r $file ]] || return 0
    pid=$(<"$file")
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF -- "$expected" || return 0
    echo "$pid"
}
