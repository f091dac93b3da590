# shellcheck shell=bash disable=SC2034  # variables are used by the scripts that source this
# Shared by demo/up and demo/down. Sourced, not run.

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Everything the demo makes lives here (cluster state with the nodes and their disk images,
# Prometheus, logs, pids); `demo/down` deletes it. Separate from tests/cluster's default dir,
# so tests and demo coexist.
STATE=${VOLPOOL_DEMO_DIR:-/tmp/volpool-demo}
CLUSTER_DIR=$STATE/cluster
NODES=(node-1 node-2 node-3)
# Prometheus on 127.0.0.1:PORT_BASE+90.
PORT_BASE=${VOLPOOL_DEMO_PORT_BASE:-19800}
PROMETHEUS_PORT=$((PORT_BASE + 90))
CACHE_ROOT=${VOLPOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/volpool}
KUBECTL=$CACHE_ROOT/kubernetes-1.20.2/bin/kubectl
# Marks a state dir made by demo/up: demo/down deletes nothing else.
MARKER=.volpool-demo

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

# Poll `$@` every second until it succeeds (0), or give up after $1 seconds (1).
wait_until() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 1
    done
}
