//! `NodeVolumes/<node>`: the one object through which an agent and the controller talk.
//! The agent writes `status` (what the node has); the controller writes `spec.cleanups`
//! (what the agent must scrub).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::pool::{CleanupMethod, VolumeMode};

/// Scrub requests from the controller to the agent of one node.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "volpool.io",
    version = "v1alpha1",
    kind = "NodeVolumes",
    plural = "nodevolumes",
    status = "NodeVolumesStatus",
    shortname = "nv",
    category = "volpool",
    printcolumn = r#"{"name":"Agent","type":"string","jsonPath":".status.agentVersion"}"#,
    printcolumn = r#"{"name":"NFS-Client","type":"boolean","jsonPath":".status.nfsClient.ready"}"#,
    printcolumn = r#"{"name":"Network","type":"boolean","jsonPath":".status.network.ready"}"#,
    printcolumn = r#"{"name":"API-Via","type":"string","jsonPath":".status.network.apiserverVia"}"#,
    printcolumn = r#"{"name":"Max-Map-Count","type":"integer","jsonPath":".status.limits.vmMaxMapCount"}"#,
    printcolumn = r#"{"name":"Runtime","type":"string","priority":1,"jsonPath":".status.limits.runtime.name"}"#,
    printcolumn = r#"{"name":"Swap","type":"boolean","priority":1,"jsonPath":".status.limits.swapEnabled"}"#,
    printcolumn = r#"{"name":"Volumes","type":"string","priority":1,"jsonPath":".status.volumes[*].path"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct NodeVolumesSpec {
    /// Volumes the agent must scrub, then report in `status.cleanups`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cleanups: Vec<CleanupRequest>,
}

/// One scrub the controller asks for.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CleanupRequest {
    /// Identity the volume must still have; otherwise the agent refuses.
    #[serde(rename = "volumeID")]
    pub volume_id: String,
    /// The released PV's name. The agent reads this PV before it scrubs, and refuses unless
    /// it is volpool's PV of this volume on this node, Released, with reclaim policy Delete.
    pub persistent_volume: String,
    /// The released PV's UID, echoed back in the result.
    #[serde(rename = "pvUID")]
    pub pv_uid: String,
    /// UID of the claim the PV was released from (its `claimRef`); when set, the agent
    /// refuses unless the PV's claimRef still names that claim.
    #[serde(default, skip_serializing_if = "String::is_empty", rename = "claimUID")]
    pub claim_uid: String,
    /// How to scrub.
    pub method: CleanupMethod,
}

/// What the agent found on its node. Written only when something changed.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeVolumesStatus {
    /// UID of the Node this report is for, so a re-created node with the same name is noticed.
    #[serde(default, skip_serializing_if = "String::is_empty", rename = "nodeUID")]
    pub node_uid: String,
    /// The host's `/etc/machine-id`.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        rename = "machineID"
    )]
    pub machine_id: String,
    /// Version of the agent that wrote this report.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub agent_version: String,
    /// Every entry of every local pool's discovery dir, with its state.
    #[serde(default)]
    pub volumes: Vec<VolumeReport>,
    /// NFS client prerequisites and reachability of the NFS pools' servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nfs_client: Option<NfsClientStatus>,
    /// Limits that workloads such as Elasticsearch depend on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<NodeLimits>,
    /// The cluster network as seen from the node, and how the agent reaches the apiserver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::network::NetworkStatus>,
    /// Results of the scrubs asked for in `spec.cleanups`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cleanups: Vec<CleanupResult>,
}

/// One discovered entry of a local pool.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeReport {
    /// The pool whose discovery dir holds the entry.
    pub pool: String,
    /// Stable identity: `uuid:<fs uuid>`, `wwn:<id>`, `serial:<id>`, … (see the agent's docs).
    /// Absent for entries that are not volumes (a plain directory, a stray file).
    // NB: never serialized empty: a 1.20 apiserver turns "" in an apply into null and refuses it.
    #[serde(rename = "volumeID", default, skip_serializing_if = "String::is_empty")]
    pub volume_id: String,
    /// Host path of the entry.
    pub path: String,
    /// Filesystem or Block.
    pub volume_mode: VolumeMode,
    /// Filesystem type, when mounted.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fs_type: String,
    /// Backing device, when known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub device: String,
    /// Total size in bytes (usage goes to metrics only, so status does not churn).
    #[serde(default)]
    pub capacity_bytes: u64,
    /// Whether the entry is offered and, if not, why.
    pub state: VolumeState,
    /// What the user should know or do about this entry.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// State of a discovered entry; only `Ready` entries become PVs.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum VolumeState {
    /// A mount point or block device that is offered.
    Ready,
    /// A plain directory or file: mount a filesystem on it to offer it.
    NotMountPoint,
    /// Smaller than the pool's `minCapacity`.
    TooSmall,
    /// statvfs did not answer within the probe timeout.
    Stuck,
    /// Could not be examined; see the message.
    Error,
}

/// The node's NFS client prerequisites.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NfsClientStatus {
    /// Every check needed by the pools on this node is OK.
    #[serde(default)]
    pub ready: bool,
    /// Individual checks.
    #[serde(default)]
    pub checks: Vec<Check>,
    /// Reachability of each NFS pool's server from this node.
    #[serde(default)]
    pub servers: Vec<ServerReachability>,
}

/// One prerequisite check.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct Check {
    /// Check name, e.g. `mount-helper`.
    pub name: String,
    /// OK, NonOK or Unknown.
    pub status: CheckStatus,
    /// What was found and, when not OK, what to do.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Outcome of a check.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum CheckStatus {
    /// The prerequisite is met.
    OK,
    /// The prerequisite is not met.
    NonOK,
    /// The check could not tell.
    Unknown,
}

/// Whether one NFS pool's server answers from this node.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerReachability {
    /// The NFS pool.
    pub pool: String,
    /// The pool's server.
    pub server: String,
    /// Every probe step succeeded.
    #[serde(default)]
    pub reachable: bool,
    /// Exports the server lists for this client.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exports: Vec<String>,
    /// The real error of the first failing step.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Node limits that containers inherit. Only facts that change rarely are here (the node's
/// locked-memory totals move with every `mlock`, so they are metrics only).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeLimits {
    /// `vm.max_map_count`.
    #[serde(default)]
    pub vm_max_map_count: u64,
    /// Whether the node has swap (`SwapTotal` in `/proc/meminfo` above 0).
    #[serde(default)]
    pub swap_enabled: bool,
    /// The container runtime daemon and its limits; absent when none was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeLimits>,
}

/// Limits of the container runtime daemon, which containers inherit (Kubernetes has no ulimit
/// field). An absent memlock or nproc value means unlimited.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeLimits {
    /// containerd, dockerd or crio.
    pub name: String,
    /// RLIMIT_MEMLOCK soft limit in bytes; absent (or null) = unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memlock_soft_bytes: Option<u64>,
    /// RLIMIT_MEMLOCK hard limit in bytes; absent = unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memlock_hard_bytes: Option<u64>,
    /// RLIMIT_NOFILE soft limit (never unlimited on Linux: capped by `fs.nr_open`).
    #[serde(default)]
    pub nofile_soft: u64,
    /// RLIMIT_NOFILE hard limit.
    #[serde(default)]
    pub nofile_hard: u64,
    /// RLIMIT_NPROC soft limit; absent = unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nproc_soft: Option<u64>,
    /// RLIMIT_NPROC hard limit; absent = unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nproc_hard: Option<u64>,
}

/// The agent's answer to one cleanup request.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CleanupResult {
    /// The volume scrubbed (or refused).
    #[serde(rename = "volumeID")]
    pub volume_id: String,
    /// The PV UID from the request.
    #[serde(rename = "pvUID")]
    pub pv_uid: String,
    /// Running, Succeeded, Failed or Refused.
    pub result: CleanupOutcome,
    /// Why it failed or was refused.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// RFC 3339 time the scrub ended.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub finished_at: String,
    /// RFC 3339 time the scrub started, so a scrub that hangs shows its age.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub started_at: String,
}

/// Result of a scrub.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum CleanupOutcome {
    /// The scrub is under way (since `startedAt`); it may be stuck on a hung mount.
    Running,
    /// The volume is clean.
    Succeeded,
    /// The scrub started but did not finish; the message says why.
    Failed,
    /// The agent would not scrub, and touched nothing: the identity no longer matches, the
    /// path is unsafe, or the PV is not a Released volpool PV of this very volume.
    Refused,
}
