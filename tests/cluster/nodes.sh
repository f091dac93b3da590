# shellcheck shell=bash disable=SC2034  # sourced by tests/cluster/{up,down,node-exec}
# Real worker nodes beside the control plane: `tests/cluster/up --nodes N`. See README.md.
#
#   host netns ── bridge vpn<S>br 10.253.<S>.1 (the apiserver advertises this address)
#                   │ veth
#   node-<i>: net+mount+uts+pid namespaces, PID 1 = node-init (reaps, holds the namespaces)
#             eth0 10.253.<S>.<10+i>, pods on bridge cni0 10.244.<i>.0/24 (masqueraded)
#             / rshared (only in here); own /run (tmpfs); /var/lib and /mnt are overlays of the
#             host's (writes stay in the node dir); /var/log is the node dir's log/
#             containerd (socket <node dir>/containerd.sock) ── kubelet ── kube-proxy (iptables)
#
# Killing a node's PID 1 kills everything in its PID namespace (containerd, shims, containers,
# kubelet) and with the last process its mounts and network namespace go too.

NODE_PACKAGES=(containerd runc containernetworking-plugins iptables conntrack socat busybox-static gcc libc6-dev
    debootstrap)
NODE_NET_PREFIX=10.253
POD_NET_PREFIX=10.244
# The kubelet sets these machine-wide sysctls (it has no warn-only mode); `up` records them
# before the first node of any cluster starts and `down` of the last such cluster puts them back.
KUBELET_SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
    kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
# Shared by every cluster with nodes on this machine: bridge slots and the recorded sysctls.
NODES_SHARED=${TMPDIR:-/tmp}/volpool-nodes

node_dir() { echo "$CLUSTER_DIR/nodes/$1"; }
node_name() { echo "node-$1"; }
node_ip() { echo "$NODE_NET_PREFIX.$NODE_SLOT.$((10 + $1))"; }
node_gateway() { echo "$NODE_NET_PREFIX.$NODE_SLOT.1"; }
node_bridge() { echo "vpn${NODE_SLOT}br"; }
# Each node's pods go under their own cgroup root in every v1 hierarchy.
node_cgroup_root() { echo "/volpool-nodes/c$NODE_SLOT/$1"; }

# PID (as the host sees it) of the node's PID 1, if it still runs.
node_init_pid() {
    local dir pid
    dir=$(node_dir "$1")
    [[ -r $dir/init.pid ]] || return 0
    pid=$(<"$dir/init.pid")
    [[ -d /proc/$pid && $(readlink "/proc/$pid/ns/pid" 2>/dev/null) == "$(<"$dir/pidns")" ]] || return 0
    echo "$pid"
}

# Run a command inside a node: its mount, network, uts and pid namespaces.
in_node() {
    local name=$1 pid
    shift
    pid=$(node_init_pid "$name")
    [[ -n $pid ]] || die "node $name is not running"
    nsenter -t "$pid" -m -n -u -p --wd=/ -- "$@"
}

# ---------------------------------------------------------------- shared state

# Pick a free bridge slot 1..250 (under a lock shared by all clusters) and make the bridge.
make_node_network() {
    mkdir -p "$NODES_SHARED"
    (
        flock 7
        local s
        for s in $(seq 1 250); do
            ip link show "vpn${s}br" >/dev/null 2>&1 && continue
            ip link add "vpn${s}br" type bridge
            ip addr add "$NODE_NET_PREFIX.$s.1/24" dev "vpn${s}br"
            ip link set "vpn${s}br" up
            echo "$s"
            exit 0
        done
        exit 1
    ) 7>"$NODES_SHARED/slots.lock" || die "no free slot for a node bridge (vpn1br..vpn250br all exist)"
}

# The host ends of the nodes' veths go with their namespaces, but a dead namespace can linger
# in the kernel for a while (sockets closing): delete them here rather than wait.
remove_node_network() {
    [[ -n ${NODE_SLOT:-} ]] || return 0
    local link
    for link in $(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -x "vpn${NODE_SLOT}n[0-9]*"); do
        ip link delete "$link" 2>/dev/null || true
    done
    ip link delete "$(node_bridge)" 2>/dev/null || true
}

# Record the kubelet's sysctls when no cluster on this machine runs nodes yet; count users.
register_sysctl_user() {
    mkdir -p "$NODES_SHARED/sysctl-users"
    (
        flock 7
        prune_sysctl_users
        if [[ ! -s $NODES_SHARED/sysctl-orig ]]; then
            sysctl -e "${KUBELET_SYSCTLS[@]}" >"$NODES_SHARED/sysctl-orig.new"
            mv "$NODES_SHARED/sysctl-orig.new" "$NODES_SHARED/sysctl-orig"
        fi
        echo "$CLUSTER_DIR" >"$NODES_SHARED/sysctl-users/$(sysctl_user_id)"
    ) 7>"$NODES_SHARED/sysctl.lock"
}

# Drop this cluster; the last one out restores the recorded values.
release_sysctls() {
    [[ -d $NODES_SHARED/sysctl-users ]] || return 0
    (
        flock 7
        rm -f "$NODES_SHARED/sysctl-users/$(sysctl_user_id)"
        prune_sysctl_users
        [[ -z $(ls -A "$NODES_SHARED/sysctl-users") && -s $NODES_SHARED/sysctl-orig ]] || exit 0
        local line
        while IFS= read -r line; do
            sysctl -q -w "${line// /}" || echo "cluster: warning: could not restore $line" >&2
        done <"$NODES_SHARED/sysctl-orig"
        echo "cluster: restored $(sed 's/ = /=/' "$NODES_SHARED/sysctl-orig" | paste -sd' ')" >&2
        rm -f "$NODES_SHARED/sysctl-orig"
    ) 7>"$NODES_SHARED/sysctl.lock"
}

sysctl_user_id() { echo "$CLUSTER_DIR" | md5sum | cut -c1-16; }

# A user whose cluster dir is gone (removed by hand, machine rebooted) is gone. NB: not "has no
# running node": a cluster registers before its first node starts.
prune_sysctl_users() {
    local f dir
    for f in "$NODES_SHARED"/sysctl-users/*; do
        [[ -e $f ]] || continue
        dir=$(<"$f")
        [[ -e $dir/$MARKER ]] || rm -f "$f"
    done
}

# ---------------------------------------------------------------- certificates

# <file stem> <subject>: an EC key and a client certificate signed by the cluster CA.
make_client_cert() {
    local pki=$CLUSTER_DIR/pki
    (
        cd "$pki"
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout "$1.key" -out "$1.csr" -subj "$2"
        printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' >"$1.ext"
        openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
            -days 3650 -sha256 -extfile "$1.ext" -out "$1.crt"
        chmod 600 "$1.key"
    ) >>"$CLUSTER_DIR/logs/openssl.log" 2>&1 || die "making the certificate $1 failed (see logs/openssl.log)"
}

# <file> <user> <cert stem>: a kubeconfig that reaches the apiserver over the node bridge.
write_node_kubeconfig() {
    local pki=$CLUSTER_DIR/pki
    cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: volpool
  cluster:
    server: https://$(node_gateway):$APISERVER_PORT
    certificate-authority: $pki/ca.crt
users:
- name: $2
  user:
    client-certificate: $pki/$3.crt
    client-key: $pki/$3.key
contexts:
- name: volpool
  context: {cluster: volpool, user: $2}
current-context: volpool
EOF
    chmod 600 "$1"
}

# ---------------------------------------------------------------- one node

start_node() {
    local i=$1 name dir ip init holder
    name=$(node_name "$i")
    dir=$(node_dir "$name")
    ip=$(node_ip "$i")
    rm -rf -- "$dir"
    mkdir -p "$dir"/{logs,pids,log,varlib/upper,varlib/work,mnt/upper,mnt/work,cni,kubelet,disks}
    make_client_cert "$name" "/O=system:nodes/CN=system:node:$name"
    write_node_kubeconfig "$dir/kubelet.kubeconfig" "system:node:$name" "$name"
    write_node_kubeconfig "$dir/kube-proxy.kubeconfig" system:kube-proxy kube-proxy
    write_node_configs "$i"
    make_cgroup_root "$(node_cgroup_root "$name")"

    log "$name: namespaces, $ip"
    setsid unshare --net --mount --uts --pid --fork --mount-proc --propagation private \
        python3 "$here/node-init" "$name" "$dir" </dev/null >"$dir/logs/init.log" 2>&1 8>&- 9>&- &
    holder=$!
    echo "$holder" >"$dir/holder.pid"
    init=
    for _ in $(seq 100); do
        [[ -e $dir/ready ]] && init=$(cut -d' ' -f1 "/proc/$holder/task/$holder/children" 2>/dev/null) && break
        kill -0 "$holder" 2>/dev/null || break
        sleep 0.05
    done
    [[ -n $init ]] || { cat "$dir/logs/init.log" >&2; die "the namespaces of $name did not come up"; }
    echo "$init" >"$dir/init.pid"
    readlink "/proc/$init/ns/pid" >"$dir/pidns"

    local veth="vpn${NODE_SLOT}n$i"
    ip link add "$veth" type veth peer name eth0 netns "$init"
    ip link set "$veth" master "$(node_bridge)" up
    in_node "$name" sh -c "ip link set lo up && ip addr add $ip/24 dev eth0 && ip link set eth0 up &&
        ip route add default via $(node_gateway) dev eth0 && sysctl -q -w net.ipv4.ip_forward=1"

    node_daemon "$name" containerd containerd --config "$dir/containerd.toml"
}

# Files every node daemon reads: containerd, CNI, kubelet and kube-proxy configuration.
write_node_configs() {
    local i=$1 name dir ip
    name=$(node_name "$i")
    dir=$(node_dir "$name")
    ip=$(node_ip "$i")
    cat >"$dir/containerd.toml" <<EOF
version = 2
root = "$dir/containerd"
state = "/run/containerd"
[grpc]
  address = "$dir/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = false
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/containerd/opt"
EOF
    cat >"$dir/cni/10-volpool.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "volpool", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_NET_PREFIX.$i.0/24"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
EOF
    cat >"$dir/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $ip
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $CLUSTER_DIR/pki/ca.crt}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
cgroupRoot: $(node_cgroup_root "$name")
failSwapOn: false
# The first Ready status goes out at once instead of after the default 10 s.
nodeStatusUpdateFrequency: 2s
# The pause image cannot be pulled again: never collect images.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# The machine's disk is shared with everything else on it and may be nearly full: no disk
# pressure, no evictions, and (under pressure the kubelet deletes unused images) the pause
# image stays. Only memory is watched.
evictionHard: {memory.available: 50Mi}
serializeImagePulls: false
EOF
    cat >"$dir/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $dir/kube-proxy.kubeconfig}
mode: iptables
bindAddress: $ip
hostnameOverride: $name
clusterCIDR: $POD_NET_PREFIX.0.0/16
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# nf_conntrack_max is machine-wide and read-only outside the first network namespace.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
}

# <node> <log name> <command...>: start a daemon inside the node; nsenter stays its parent, so
# its pid file names a process that lives exactly as long as the daemon.
node_daemon() {
    local name=$1 what=$2 dir pid
    shift 2
    dir=$(node_dir "$name")
    pid=$(node_init_pid "$name")
    # AWS_EC2_METADATA_DISABLED: the kubelet's legacy AWS credential provider probes EC2
    # metadata for ~6 s otherwise.
    setsid nsenter -t "$pid" -m -n -u -p --wd=/ -- env AWS_EC2_METADATA_DISABLED=true "$@" \
        </dev/null >"$dir/logs/$what.log" 2>&1 8>&- 9>&- &
    echo $! >"$dir/pids/$what.pid"
}

node_daemon_alive() {
    local file
    file=$(node_dir "$1")/pids/$2.pid
    [[ -r $file ]] && kill -0 "$(<"$file")" 2>/dev/null
}

# <node> <daemon> <what> <check...>: poll until the check passes, or fail with the log.
wait_node() {
    local name=$1 what=$2 desc=$3 deadline=$((SECONDS + TIMEOUT))
    shift 3
    until "$@" >/dev/null 2>&1; do
        if ! node_daemon_alive "$name" "$what" || ((SECONDS >= deadline)); then
            echo "cluster: error: $name: no $desc; last lines of $(node_dir "$name")/logs/$what.log:" >&2
            tail -n 30 "$(node_dir "$name")/logs/$what.log" >&2
            exit 1
        fi
        sleep 0.2
    done
}

ctr_node() {
    ctr --address "$(node_dir "$1")/containerd.sock" -n k8s.io "${@:2}"
}

# Import docker-archive/OCI tarballs into a node's containerd (the CRI's namespace).
import_images() {
    local name=$1 tarball
    shift
    for tarball in "$@"; do
        ctr_node "$name" images import "$tarball" >>"$(node_dir "$name")/logs/images.log" 2>&1 ||
            { tail -n 20 "$(node_dir "$name")/logs/images.log" >&2; die "$name: importing $tarball failed"; }
    done
}

start_node_agents() {
    local i=$1 name dir
    name=$(node_name "$i")
    dir=$(node_dir "$name")
    wait_node "$name" containerd "containerd socket" ctr_node "$name" version
    import_images "$name" "${NODE_IMAGES[@]}"
    node_daemon "$name" kubelet "$KUBE_BIN/kubelet" \
        --config="$dir/kubelet.yaml" \
        --kubeconfig="$dir/kubelet.kubeconfig" \
        --container-runtime=remote \
        --container-runtime-endpoint="unix://$dir/containerd.sock" \
        --root-dir="$dir/kubelet" \
        --cert-dir="$dir/kubelet/pki" \
        --volume-plugin-dir="$dir/kubelet/volume-plugins" \
        --hostname-override="$name" \
        --node-ip="$(node_ip "$i")" \
        --v=1
    node_daemon "$name" kube-proxy "$KUBE_BIN/kube-proxy" --config="$dir/kube-proxy.yaml"
}

node_ready() {
    api "/api/v1/nodes/$1" |
        jq -e '.status.conditions[] | select(.type == "Ready") | .status == "True"'
}

# ---------------------------------------------------------------- cgroups

# Create <path> in every cgroup v1 hierarchy; cpuset needs its cpus and mems filled in.
make_cgroup_root() {
    local hier d part
    for hier in /sys/fs/cgroup/*/; do
        [[ -e $hier/cgroup.procs && $hier != */unified/ ]] || continue
        d=${hier%/}
        for part in ${1//\// }; do
            d=$d/$part
            mkdir -p "$d"
            if [[ -e $d/cpuset.cpus && -z $(<"$d/cpuset.cpus") ]]; then
                cat "$(dirname "$d")/cpuset.cpus" >"$d/cpuset.cpus"
                cat "$(dirname "$d")/cpuset.mems" >"$d/cpuset.mems"
            fi
        done
    done
}

# Remove a cgroup subtree (deepest first) from every hierarchy; the processes are gone by now.
remove_cgroup_tree() {
    local hier
    for hier in /sys/fs/cgroup/*/; do
        [[ -d $hier${1#/} ]] || continue
        find "$hier${1#/}" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
}

# ---------------------------------------------------------------- stopping

# Kill every node's PID 1 (the kernel then kills the rest of its PID namespace), wait until
# all of them are gone, then remove what lives outside the namespaces.
stop_nodes() {
    local dir name pid pids=() holders=() alive=
    for dir in "$CLUSTER_DIR"/nodes/*/; do
        [[ -d $dir ]] || continue
        name=$(basename "$dir")
        pid=$(node_init_pid "$name")
        if [[ -n $pid ]]; then
            log "stopping $name (everything in its namespaces)"
            kill -KILL "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
        [[ -r $dir/holder.pid ]] && holders+=("$(<"$dir/holder.pid")")
        for pid in "$dir"/pids/*.pid; do
            [[ -r $pid ]] && holders+=("$(<"$pid")")
        done
    done
    local i
    for ((i = 0; i < 100; i++)); do
        alive=
        for pid in "${pids[@]}" "${holders[@]}"; do
            kill -0 "$pid" 2>/dev/null && alive+=" $pid"
        done
        [[ -z $alive ]] && break
        sleep 0.1
    done
    [[ -z $alive ]] || die "node processes still running after SIGKILL:$alive"
    detach_loops
    if [[ -n ${NODE_SLOT:-} ]]; then
        remove_cgroup_tree "/volpool-nodes/c$NODE_SLOT"
        rmdir /sys/fs/cgroup/*/volpool-nodes 2>/dev/null || true
    fi
    remove_node_network
    release_sysctls
}

# Loop devices whose backing file lives in the cluster dir (disks the tests gave the nodes).
detach_loops() {
    local dev file tries
    while read -r dev file; do
        [[ $file == "$CLUSTER_DIR"/* ]] || continue
        for tries in 1 2 3 4 5 6 7 8 9 10; do
            losetup -d "$dev" 2>/dev/null && break
            sleep 0.2
        done
        losetup "$dev" >/dev/null 2>&1 && ! losetup -l -n -O AUTOCLEAR "$dev" | grep -q 1 &&
            echo "cluster: warning: could not detach $dev ($file)" >&2
    done < <(losetup -l -n -O NAME,BACK-FILE 2>/dev/null)
}
