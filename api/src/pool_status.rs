//! `VolumePool.status`: what the controller reports about a pool — PV counts and bytes by
//! phase, claims of its class, nodes, the export's space, and the conditions.
//!
//! ```text
//!  controller ──► VolumePoolStatus {volumes, capacityBytes, claims, nodes, export, conditions}
//! ```

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What the controller reports about a pool.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumePoolStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default)]
    pub observed_generation: i64,
    /// PV counts by phase.
    #[serde(default)]
    pub volumes: VolumeCounts,
    /// Bytes by phase.
    #[serde(default)]
    pub capacity_bytes: CapacityBytes,
    /// Nodes contributing volumes (local) or ready to mount (nfs).
    #[serde(default)]
    pub nodes: u32,
    /// Size and free space of an NFS pool's export (available rounded down to 1% of the size,
    /// so the status does not churn).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<ExportSpace>,
    /// Claims of the pool's StorageClass.
    #[serde(default)]
    pub claims: ClaimCounts,
    /// `Ready` and `Degraded`, with a reason and a message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Space on an NFS pool's export, from FSSTAT.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportSpace {
    /// Total bytes.
    #[serde(default)]
    pub size_bytes: u64,
    /// Bytes available to the controller's user.
    #[serde(default)]
    pub available_bytes: u64,
}

/// Claims of a pool's StorageClass by phase.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ClaimCounts {
    /// Waiting for a volume (each has a `NoMatchingVolume` Event saying why, when volpool
    /// knows).
    #[serde(default)]
    pub pending: u32,
    /// Bound to a PV.
    #[serde(default)]
    pub bound: u32,
}

/// PV counts by phase.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct VolumeCounts {
    /// Ready to bind.
    #[serde(default)]
    pub available: u32,
    /// Bound to a claim.
    #[serde(default)]
    pub bound: u32,
    /// Released, not yet scrubbed (or retained).
    #[serde(default)]
    pub released: u32,
    /// Being scrubbed.
    #[serde(default)]
    pub cleaning: u32,
    /// Missing, replaced or on a gone node.
    #[serde(default)]
    pub unhealthy: u32,
}

/// Bytes by phase.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct CapacityBytes {
    /// Bytes in Available PVs.
    #[serde(default)]
    pub available: u64,
    /// Bytes in Bound PVs.
    #[serde(default)]
    pub bound: u64,
}
