# shellcheck shell=bash disable=SC2034  # variables are used by the scripts that source this
# Shared by tests/cluster/up and tests/cluster/down. Sourced, not run.

KUBE_VERSION=1.20.2
CLUSTER_DIR=${VOLPOOL_CLUSTER_DIR:-/tmp/volpool-cluster}
CACHE_ROOT=${VOLPOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/volpool}
KUBE_DIR=$CACHE_ROOT/kubernetes-$KUBE_VERSION
KUBE_BIN=$KUBE_DIR/bin

# Start order; stopping goes in reverse so etcd outlives its clients.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler)

# Written by `up` into a state dir it owns; nothing else is ever deleted.
MARKER=.volpool-cluster

# Serialises `up` and `down` on one state dir: a second `up` waits and then
# finds the first one's cluster instead of taking it for stale state. The lock
# lives beside the state dir because `down` deletes the dir itself.
lock_cluster_dir() {
    mkdir -p "$(dirname "$CLUSTER_DIR")"
    exec 8>"${CLUSTER_DIR%/}.lock"
    flock 8
}

log() { echo "cluster: $*" >&2; }
die() { echo "cluster: error: $*" >&2; exit 1; }

# The pid of a component if it is still the process `up` started, else nothing.
# Checking the process group and command line guards against a recycled pid.
component_pid() {
    local file=$CLUSTER_DIR/pids/$1.pid pid argv0
    [[ -r $file ]] || return 0
    pid=$(<"$file")
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    [[ $(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ') == "$pid" ]] || return 0
    argv0=$({ tr '\0' '\n' <"/proc/$pid/cmdline"; } 2>/dev/null | head -n 1) || true
    [[ ${argv0##*/} == "$1" ]] || return 0
    echo "$pid"
}

# Wait up to $1 tenths of a second for every component to exit; the names of those still
# running are left in the caller's $alive.
wait_stopped() {
    local i name
    for ((i = 0; i < $1; i++)); do
        alive=
        for name in "${COMPONENTS[@]}"; do
            [[ -n $(component_pid "$name") ]] && alive+=" $name"
        done
        [[ -z $alive ]] && return 0
        sleep 0.1
    done
    return 1
}

# SIGTERM every component's process group, give them ~10 s, then SIGKILL.
stop_components() {
    local name pid alive i
    for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
        name=${COMPONENTS[i]}
        pid=$(component_pid "$name")
        [[ -n $pid ]] || continue
        log "stopping $name (pid $pid)"
        kill -TERM -- "-$pid" 2>/dev/null || true
    done
    wait_stopped 100 && return 0
    for name in $alive; do
        pid=$(component_pid "$name")
        [[ -n $pid ]] || continue
        log "$name did not stop on SIGTERM, killing it"
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
    wait_stopped 50 && return 0
    die "still running after SIGKILL:$alive"
}

# Refuse to delete a directory that `up` did not create.
remove_state_dir() {
    [[ -e $CLUSTER_DIR ]] || return 0
    if [[ ! -e $CLUSTER_DIR/$MARKER ]] && [[ -n $(ls -A "$CLUSTER_DIR") ]]; then
        die "$CLUSTER_DIR is not empty and was not made by tests/cluster/up; not deleting it"
    fi
    rm -rf -- "$CLUSTER_DIR"
}
