#!/usr/bin/env python3
"""Write volpool's Grafana dashboards: pools.json ("volpool / Pools") and nodes.json
("volpool / Nodes"). The JSON files are committed; edit this script and run it again
(`dashboards/generate.py`; `--check` fails when a committed file differs; `--rules FILE` writes
every query, variables substituted, as a rule file for `promtool check rules`).

Every query filters on the dashboard variables `cluster`, `node` and `pool` (regex matchers, so
"All" is `.*` and series without a `cluster` label still match) and uses the `datasource`
variable. Pool gauges are reported by both controller replicas: `max by (pool, ...)`.
Metric names are those docs/architecture.md lists ("Metrics"); tests/tests/dashboards.rs checks
them, tests/tests/dashboards_live.rs runs every query against a real Prometheus scraping the
real agent and controller.
"""

import json
import sys
from pathlib import Path

DS = {"type": "prometheus", "uid": "${datasource}"}
C = 'cluster=~"$cluster"'
N = 'node=~"$node"'
P = 'pool=~"$pool"'


def per_volume(expr, labels="pool, path"):
    """`expr` over the per-volume families (labelled only with their `volume` key), joined with
    `volpool_volume_info` for the volume's `labels` and filtered by the pool variable."""
    return f"({expr}) * on (cluster, node, volume) group_left ({labels}) volpool_volume_info{{{C},{N},{P}}}"


class Layout:
    """Places panels left to right on Grafana's 24-column grid, wrapping rows."""

    def __init__(self):
        self.panels = []
        self.x = 0
        self.y = 0
        self.row_h = 0

    def _next_id(self):
        return len(self.panels) + 1

    def row(self, title):
        self._newline()
        self.panels.append(
            {
                "id": self._next_id(),
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
                "panels": [],
            }
        )
        self.y += 1

    def _newline(self):
        if self.x:
            self.x = 0
            self.y += self.row_h
            self.row_h = 0

    def add(self, panel, w=12, h=8):
        if self.x + w > 24:
            self._newline()
        panel["id"] = self._next_id()
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)


def targets(*queries):
    out = []
    for i, (expr, legend) in enumerate(queries):
        target = {"refId": chr(ord("A") + i), "datasource": DS, "expr": expr}
        if legend == "table":
            target.update({"format": "table", "instant": True, "legendFormat": "__auto"})
        else:
            target.update({"legendFormat": legend, "range": True})
        out.append(target)
    return out


def panel(kind, title, description, queries, defaults, options, **extra):
    """A panel of any kind: every one reads the `datasource` variable."""
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        **extra,
        "targets": targets(*queries),
    }


def field_defaults(unit, thresholds=None, mappings=None, custom=None):
    defaults = {"unit": unit}
    if custom is not None:
        defaults["custom"] = custom
    if thresholds:
        defaults["thresholds"] = thresholds
    if mappings:
        defaults["mappings"] = mappings
    return defaults


def timeseries(title, description, queries, unit="short", stack=False, thresholds=None):
    custom = {"fillOpacity": 10, "showPoints": "never", "lineWidth": 1}
    if stack:
        custom.update({"stacking": {"mode": "normal", "group": "A"}, "fillOpacity": 40})
    if thresholds:
        custom["thresholdsStyle"] = {"mode": "line"}
    options = {
        "legend": {"displayMode": "table", "placement": "right", "calcs": ["lastNotNull"]},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return panel("timeseries", title, description, queries, field_defaults(unit, thresholds, custom=custom), options)


def stat(title, description, queries, unit="short", thresholds=None, mappings=None):
    options = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "background",
        "graphMode": "none",
        "textMode": "value_and_name",
    }
    return panel("stat", title, description, queries, field_defaults(unit, thresholds, mappings), options)


def table(title, description, queries, unit="short", thresholds=None, hide=(), mappings=None):
    custom = {"cellOptions": {"type": "color-background"}} if thresholds else None
    hidden = {"id": "organize", "options": {"excludeByName": {name: True for name in ("Time", *hide)}}}
    options = {"showHeader": True, "cellHeight": "sm"}
    return panel(
        "table", title, description, queries, field_defaults(unit, thresholds, mappings, custom), options,
        transformations=[hidden],
    )


def steps(*pairs):
    """Threshold steps: base colour, then (value, colour) pairs."""
    base, *rest = pairs
    return {
        "mode": "absolute",
        "steps": [{"color": base, "value": None}]
        + [{"color": colour, "value": value} for value, colour in rest],
    }


def variable_query(name, label, query, multi=True):
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": query,
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "allValue": ".*",
        "multi": multi,
        "sort": 1,
        "hide": 0,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "regex": "",
    }


def dashboard(uid, title, description, layout, variables):
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["volpool", "storage"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "timezone": "",
        "links": [
            {
                "type": "dashboards",
                "tags": ["volpool"],
                "title": "volpool",
                "asDropdown": False,
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "annotations": {"list": []},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "refresh": 1,
                    "regex": "",
                    "options": [],
                },
                *variables,
            ]
        },
        "panels": layout.panels,
    }


def variables(cluster_metric, node_metric, pool_metric):
    return [
        # NB: hidden when there is no `cluster` label; `.*` then matches the empty label.
        variable_query("cluster", "Cluster", f"label_values({cluster_metric}, cluster)", multi=False),
        variable_query("node", "Node", f"label_values({node_metric}{{{C}}}, node)"),
        variable_query("pool", "Pool", f"label_values({pool_metric}{{{C}}}, pool)"),
    ]


def pools():
    l = Layout()
    l.row("Pools")
    l.add(
        stat(
            "Available volumes",
            "PVs ready to bind, per pool. 0 with Pending claims of the pool's class: the pool is exhausted.",
            [(f'max by (pool) (volpool_pool_volumes{{{C},{P},phase="available"}})', "{{pool}}")],
            thresholds=steps("red", (1, "green")),
        ),
        12,
        4,
    )
    l.add(
        stat(
            "Unhealthy volumes",
            "Bound PVs whose volume is missing, replaced or on a gone node (label volpool.io/health).",
            [(f'max by (pool) (volpool_pool_volumes{{{C},{P},phase="unhealthy"}})', "{{pool}}")],
            thresholds=steps("green", (1, "red")),
        ),
        12,
        4,
    )
    l.add(
        timeseries(
            "Volumes by phase",
            "PVs of each pool: available, bound, released (kept or in the grace period), cleaning, unhealthy.",
            [(f"max by (pool, phase) (volpool_pool_volumes{{{C},{P}}})", "{{pool}} {{phase}}")],
            stack=True,
        ),
    )
    l.add(
        timeseries(
            "Capacity offered, bound and free",
            "Offered: all Available and Bound PVs. Free: the Available ones. Local PVs advertise their disk's size; NFS PVs the pool's volumeSize.",
            [
                (f"sum by (pool) (max by (pool, phase) (volpool_pool_capacity_bytes{{{C},{P}}}))", "{{pool}} offered"),
                (f'max by (pool) (volpool_pool_capacity_bytes{{{C},{P},phase="bound"}})', "{{pool}} bound"),
                (f'max by (pool) (volpool_pool_capacity_bytes{{{C},{P},phase="available"}})', "{{pool}} free"),
            ],
            unit="bytes",
        ),
    )
    l.add(
        timeseries(
            "NFS export space",
            "Size and free space of each NFS pool's export, as the server reports it (FSSTAT). PV sizes are not enforced by NFS: free space is what all its PVs share.",
            [
                (f"max by (pool) (volpool_pool_export_size_bytes{{{C},{P}}})", "{{pool}} size"),
                (f"max by (pool) (volpool_pool_export_available_bytes{{{C},{P}}})", "{{pool}} free"),
            ],
            unit="bytes",
        ),
    )
    l.add(
        timeseries(
            "Volumes reported per node",
            "Volumes the agents measure, per node and pool (local pools: one per mount point in the discovery dir).",
            [(f"count by (node, pool) ({per_volume(f'volpool_volume_capacity_bytes{{{C},{N}}}', 'pool')})", "{{node}} {{pool}}")],
            stack=True,
        ),
    )
    l.row("Claims")
    l.add(
        timeseries(
            "Pending claims",
            "Claims of each pool's StorageClass waiting for a volume. `kubectl describe pvc` shows a NoMatchingVolume Event saying why when volpool cannot serve one.",
            [(f"max by (pool) (volpool_pool_claims_pending{{{C},{P}}})", "{{pool}}")],
        ),
    )
    l.add(
        timeseries(
            "Time to bind a claim",
            "From a claim's creation to Bound, as the controller sees it, over the controller's life: median and 90th percentile (bursts are rare, so a rate window would mostly be empty).",
            [
                (
                    f"histogram_quantile(0.5, sum by (pool, le) (max by (pool, le, instance) (volpool_claim_bind_seconds_bucket{{{C},{P}}})))",
                    "{{pool}} p50",
                ),
                (
                    f"histogram_quantile(0.9, sum by (pool, le) (max by (pool, le, instance) (volpool_claim_bind_seconds_bucket{{{C},{P}}})))",
                    "{{pool}} p90",
                ),
            ],
            unit="s",
        ),
    )
    l.row("Cleanups")
    l.add(
        timeseries(
            "Cleanups finished",
            "Scrubs of released volumes per minute, by result (local: by the node's agent; NFS: by the controller).",
            [
                (
                    f"60 * sum by (pool, result) (rate(volpool_cleanup_duration_seconds_count{{{C},{P}}}[$__rate_interval]))",
                    "{{pool}} {{result}}",
                )
            ],
            unit="short",
        ),
    )
    l.add(
        timeseries(
            "Cleanup duration",
            "From a PV's release to the end of its scrub (grace period included): median and 90th percentile.",
            [
                (
                    f"histogram_quantile(0.5, sum by (pool, le) (rate(volpool_cleanup_duration_seconds_bucket{{{C},{P}}}[$__rate_interval])))",
                    "{{pool}} p50",
                ),
                (
                    f"histogram_quantile(0.9, sum by (pool, le) (rate(volpool_cleanup_duration_seconds_bucket{{{C},{P}}}[$__rate_interval])))",
                    "{{pool}} p90",
                ),
            ],
            unit="s",
        ),
    )
    l.row("Controller")
    l.add(
        stat(
            "Leaders",
            "Replicas holding the leader Lease. 1 is healthy; 0 means nothing keeps the PVs true.",
            [(f"sum(volpool_controller_leader{{{C}}})", "leaders")],
            thresholds=steps("red", (1, "green"), (2, "orange")),
        ),
        6,
        8,
    )
    l.add(
        timeseries(
            "Leader by replica",
            "Which replica leads over time; a change is a failover.",
            [(f"max by (instance) (volpool_controller_leader{{{C}}})", "{{instance}}")],
        ),
        6,
        8,
    )
    l.add(
        timeseries(
            "Pass duration",
            "Duration of one plan-and-apply pass (90th percentile and mean).",
            [
                (
                    f"histogram_quantile(0.9, sum by (le) (rate(volpool_controller_reconcile_duration_seconds_bucket{{{C}}}[$__rate_interval])))",
                    "p90",
                ),
                (
                    f"sum(rate(volpool_controller_reconcile_duration_seconds_sum{{{C}}}[$__rate_interval])) / sum(rate(volpool_controller_reconcile_duration_seconds_count{{{C}}}[$__rate_interval]))",
                    "mean",
                ),
            ],
            unit="s",
        ),
    )
    l.add(
        timeseries(
            "Errors by category",
            "Controller errors per second, by category (API, NFS, validation...). See the controller's log and the pools' Degraded condition.",
            [(f"sum by (category) (rate(volpool_controller_errors_total{{{C}}}[$__rate_interval]))", "{{category}}")],
            unit="ops",
        ),
    )
    l.add(
        timeseries(
            "API writes",
            "Writes to the apiserver per second, by verb and resource. An idle controller writes nothing.",
            [(f"sum by (verb, resource) (rate(volpool_controller_api_writes_total{{{C}}}[$__rate_interval]))", "{{verb}} {{resource}}")],
            unit="ops",
        ),
    )
    return dashboard(
        "volpool-pools",
        "volpool / Pools",
        "VolumePools: volumes by phase, capacity, NFS export space, claims, cleanups, controller health. Generated by dashboards/generate.py.",
        l,
        variables("volpool_pool_volumes", "volpool_agent_build_info", "volpool_pool_volumes"),
    )


# A check's value: 1 OK, 0 not OK, -1 unknown (the NFS client and network checks).
CHECK_MAPPINGS = [
    {
        "type": "value",
        "options": {
            "-1": {"text": "unknown", "color": "orange"},
            "0": {"text": "not OK", "color": "red"},
            "1": {"text": "OK", "color": "green"},
        },
    }
]


def nodes():
    l = Layout()
    v = f"{C},{N}"
    l.row("Volumes")
    l.add(
        timeseries(
            "Volume space used",
            "Used share of each volume's space (the non-root view, like df).",
            [(per_volume(f"1 - volpool_volume_available_bytes{{{v}}} / volpool_volume_capacity_bytes{{{v}}}"), "{{node}} {{path}}")],
            unit="percentunit",
            thresholds=steps("green", (0.8, "orange"), (0.9, "red")),
        ),
    )
    l.add(
        timeseries(
            "Volume bytes used",
            "Bytes used on each volume.",
            [(per_volume(f"volpool_volume_used_bytes{{{v}}}"), "{{node}} {{path}}")],
            unit="bytes",
        ),
    )
    l.add(
        timeseries(
            "Inodes used",
            "Used share of each volume's inodes.",
            [(per_volume(f"1 - volpool_volume_inodes_free{{{v}}} / volpool_volume_inodes{{{v}}}"), "{{node}} {{path}}")],
            unit="percentunit",
            thresholds=steps("green", (0.8, "orange"), (0.9, "red")),
        ),
    )
    l.add(
        timeseries(
            "Discovery entries by state",
            "Entries in each pool's discovery dir: Ready ones are offered; NotMountPoint, TooSmall, Stuck and Error ones are reported, never offered.",
            [(f"sum by (node, pool, state) (volpool_discovery_entries{{{v},{P}}})", "{{node}} {{pool}} {{state}}")],
        ),
    )
    l.row("Probes")
    l.add(
        stat(
            "Stuck probes",
            "Mounts whose statvfs has not returned within the deadline (a hung NFS server, a wedged FUSE daemon). The agent keeps answering; the volume is not offered.",
            [(f"sum by (node) ({per_volume(f'volpool_volume_stuck{{{v}}}', 'pool')})", "{{node}}")],
            thresholds=steps("green", (1, "red")),
        ),
        8,
        8,
    )
    l.add(
        timeseries(
            "Probe success",
            "1 when the last statvfs of the volume answered in time.",
            [(f"min by (node, path) ({per_volume(f'volpool_volume_probe_success{{{v}}}')})", "{{node}} {{path}}")],
        ),
        8,
        8,
    )
    l.add(
        timeseries(
            "Probe duration",
            "How long the last statvfs took.",
            [(f"max by (node, path) ({per_volume(f'volpool_volume_probe_duration_seconds{{{v}}}')})", "{{node}} {{path}}")],
            unit="s",
        ),
        8,
        8,
    )
    l.row("NFS client")
    l.add(
        stat(
            "NFS client ready",
            "Whether the node can mount NFS (label volpool.io/nfs-client). NFS PVs are only scheduled on ready nodes.",
            [(f"max by (node) (volpool_nfs_client_ready{{{C},{N}}})", "{{node}}")],
            thresholds=steps("red", (1, "green")),
            mappings=[{"type": "value", "options": {"0": {"text": "missing"}, "1": {"text": "ready"}}}],
        ),
        8,
        8,
    )
    l.add(
        table(
            "NFS client checks",
            "Each prerequisite on each node (mount helper, kernel module, rpc.statd...): 1 = OK, 0 = not OK, -1 = unknown. `kubectl get nodevolumes <node> -o yaml` has the messages.",
            [(f"max by (node, check) (volpool_nfs_client_check{{{C},{N}}})", "table")],
            thresholds=steps("orange", (0, "red"), (1, "green")),
            mappings=CHECK_MAPPINGS,
        ),
        8,
        8,
    )
    l.add(
        table(
            "NFS servers reachable",
            "Whether each node reaches the NFS servers of the pools that select it (portmap and MOUNT): 1 = reachable.",
            [(f"max by (node, pool, server) (volpool_nfs_server_reachable{{{v}}})", "table")],
            thresholds=steps("red", (1, "green")),
        ),
        8,
        8,
    )
    l.row("Cluster network")
    l.add(
        stat(
            "Nodes where the Service IP does not answer",
            "Nodes whose agent gets no TCP+TLS answer from the kubernetes Service's ClusterIP:443 (alert VolpoolServiceIPUnreachable). Pods there cannot reach the apiserver; the agent goes around through its kubelet kubeconfig's apiserver URL.",
            [(f'sum(max by (node) (volpool_network_check{{{C},{N},check="kubernetes-service"}}) == bool 0)', "nodes")],
            thresholds=steps("green", (1, "red")),
        ),
        8,
        8,
    )
    l.add(
        table(
            "Network checks",
            "Each node's view of the cluster network: kubernetes-service (the Service answers), kube-proxy-rules (kube-proxy programmed it), cni-config, pod-cidr (spec.podCIDR inside the CNI network). 1 = OK, 0 = not OK, -1 = unknown. `volpool-agent check-network` or `kubectl get nodevolumes <node> -o yaml` has the messages and the fix.",
            [(f"max by (node, check) (volpool_network_check{{{C},{N}}})", "table")],
            thresholds=steps("orange", (0, "red"), (1, "green")),
            mappings=CHECK_MAPPINGS,
        ),
        8,
        8,
    )
    l.add(
        table(
            "Apiserver path",
            "How each agent reaches the apiserver: service (the kubernetes Service), kubelet-kubeconfig (the Service does not answer; the URL of the node's kubelet kubeconfig, with the agent's own token) or kubeconfig (run outside a pod). 1 = the path in use answers.",
            [(f"max by (node, via) (volpool_apiserver_reachable{{{C},{N}}})", "table")],
            thresholds=steps("red", (1, "green")),
            mappings=[{"type": "value", "options": {"0": {"text": "not in use", "color": "text"}, "1": {"text": "in use", "color": "green"}}}],
        ),
        8,
        8,
    )
    l.row("Limits (memlock, nofile, nproc, max_map_count)")
    l.add(
        stat(
            "vm.max_map_count",
            "Per node. Elasticsearch needs at least 262144 (sysctl -w vm.max_map_count=262144).",
            [(f"max by (node) (volpool_sysctl_vm_max_map_count{{{C},{N}}})", "{{node}}")],
            thresholds=steps("red", (262144, "green")),
        ),
        8,
        8,
    )
    l.add(
        table(
            "Container runtime limits",
            "Soft and hard limits of the container runtime, which its containers inherit (Kubernetes has no ulimit field). Unlimited shows as +Inf.",
            [(f"max by (node, runtime, resource, kind) (volpool_runtime_limit{{{C},{N}}})", "table")],
        ),
        16,
        8,
    )
    l.add(
        table(
            "Container soft limits",
            "memlock, nofile and nproc soft limits of each container. Elasticsearch needs memlock unlimited (+Inf), nofile >= 65535 and nproc >= 4096.",
            [(f'max by (node, namespace, pod, container, resource) (volpool_container_limit{{{C},{N},kind="soft"}})', "table")],
        ),
        16,
        8,
    )
    l.add(
        timeseries(
            "Locked memory",
            "Memory locked by each container (VmLck) and by the whole node (Mlocked).",
            [
                (f"max by (node, namespace, pod, container) (volpool_container_locked_memory_bytes{{{C},{N}}})", "{{node}} {{namespace}}/{{pod}}/{{container}}"),
                (f"max by (node) (volpool_node_locked_memory_bytes{{{C},{N}}})", "{{node}} total"),
            ],
            unit="bytes",
        ),
        8,
        8,
    )
    l.add(
        table(
            "Requirements per container",
            "Whether each container gets what it needs (the elasticsearch profile: memlock unlimited when it locks memory, nofile >= 65535, nproc >= 4096, vm.max_map_count >= 262144; or the pod's volpool.io/require-* annotations). An Event on the pod says how to fix one that is not met.",
            [(f"min by (node, namespace, pod, container, requirement) (volpool_workload_requirement_met{{{C},{N}}})", "table")],
            thresholds=steps("red", (1, "green")),
            mappings=[{"type": "value", "options": {"0": {"text": "not met", "color": "red"}, "1": {"text": "met", "color": "green"}}}],
        ),
        24,
        8,
    )
    l.row("Agents")
    l.add(
        timeseries(
            "Scan duration",
            "How long each agent's last scan took.",
            [(f"max by (node) (volpool_agent_scan_duration_seconds{{{C},{N}}})", "{{node}}")],
            unit="s",
        ),
    )
    l.add(
        table(
            "Agent versions",
            "Agents per version; more than one version is a rollout in progress.",
            [(f"count by (version) (volpool_agent_build_info{{{C},{N}}})", "table")],
        ),
    )
    return dashboard(
        "volpool-nodes",
        "volpool / Nodes",
        "Per node: volume usage, stuck probes, NFS client readiness and checks, the cluster network (Service IP, kube-proxy, CNI, pod CIDR) and the apiserver path, runtime and container limits, requirements per container, max_map_count. Generated by dashboards/generate.py.",
        l,
        variables("volpool_agent_build_info", "volpool_agent_build_info", "volpool_volume_info"),
    )


def as_rules(boards):
    """Every panel and variable query as recording rules (JSON is YAML), Grafana variables
    replaced by what they expand to, so promtool can check the PromQL."""
    substitutions = {"$__rate_interval": "5m", "$cluster": ".*", "$node": ".*", "$pool": ".*"}
    exprs = []
    for board in boards:
        for panel in board["panels"]:
            exprs.extend(t["expr"] for t in panel.get("targets", []))
        for variable in board["templating"]["list"]:
            if variable["type"] == "query":
                query = variable["query"]
                exprs.append(query[len("label_values(") : query.rindex(",")])
    rules = []
    for i, expr in enumerate(exprs):
        for name, value in substitutions.items():
            expr = expr.replace(name, value)
        rules.append({"record": f"dashboard:query{i}", "expr": expr})
    return {"groups": [{"name": "dashboards", "rules": rules}]}


def main():
    here = Path(__file__).resolve().parent
    args = sys.argv[1:]
    check = "--check" in args
    if "--rules" in args:
        boards = [pools(), nodes()]
        Path(args[args.index("--rules") + 1]).write_text(json.dumps(as_rules(boards), indent=1))
        return
    stale = []
    for name, board in (("pools.json", pools()), ("nodes.json", nodes())):
        text = json.dumps(board, indent=2) + "\n"
        path = here / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        sys.exit(f"stale: {', '.join(stale)}; run dashboards/generate.py")


if __name__ == "__main__":
    main()
