//! Label, annotation and field-manager keys, and the PV naming both programs share.
//!
//! A local PV is `<pool>-<node>-<entry>-<hash8>`: readable, and `hash8` (over pool, node and
//! volume ID) keeps two different disks at the same path from ever getting the same name.

use sha2::{Digest, Sha256};

/// Label on every object volpool manages.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "volpool";
/// PV label: the pool the PV belongs to.
pub const LABEL_POOL: &str = "volpool.io/pool";
/// PV label: the node of a local PV.
pub const LABEL_NODE: &str = "volpool.io/node";
/// PV label: the volume identity (hashed when it is not a valid label value).
pub const LABEL_VOLUME_ID: &str = "volpool.io/volume-id";
/// PV annotation: the full volume identity (the label may be a hash of it).
pub const ANNOTATION_VOLUME_ID: &str = "volpool.io/volume-id";
/// PV label set when the volume behind a Bound PV is `missing`, `replaced` or on a `node-gone`.
pub const LABEL_HEALTH: &str = "volpool.io/health";
/// Node label kept by the agent: `ready` or `missing`.
pub const LABEL_NFS_CLIENT: &str = "volpool.io/nfs-client";
/// Value of [`LABEL_NFS_CLIENT`] when every needed check passes.
pub const NFS_CLIENT_READY: &str = "ready";
/// Value of [`LABEL_NFS_CLIENT`] when a check fails.
pub const NFS_CLIENT_MISSING: &str = "missing";
/// The node's hostname label, used in local PVs' nodeAffinity.
pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
/// Annotation the PV binder and humans read to see who made a PV.
pub const ANNOTATION_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// Value of [`ANNOTATION_PROVISIONED_BY`].
pub const PROVISIONER: &str = "volpool.io";
/// PV annotation: the host path (local) or export path (nfs) of the volume.
pub const ANNOTATION_PATH: &str = "volpool.io/path";
/// Pod annotations naming a workload's needs (`unlimited` or a number).
pub const ANNOTATION_REQUIRE_MEMLOCK: &str = "volpool.io/require-memlock";
/// See [`ANNOTATION_REQUIRE_MEMLOCK`].
pub const ANNOTATION_REQUIRE_NOFILE: &str = "volpool.io/require-nofile";
/// See [`ANNOTATION_REQUIRE_MEMLOCK`].
pub const ANNOTATION_REQUIRE_NPROC: &str = "volpool.io/require-nproc";
/// See [`ANNOTATION_REQUIRE_MEMLOCK`].
pub const ANNOTATION_REQUIRE_MAX_MAP_COUNT: &str = "volpool.io/require-max-map-count";
/// PV annotation: the controller made this PV for the claim in its `spec.claimRef`
/// (`<namespace>/<name>`), as a dynamic provisioner does.
pub const ANNOTATION_PRE_BOUND: &str = "volpool.io/pre-bound";
/// Server-side apply field manager of the agent.
pub const FIELD_MANAGER_AGENT: &str = "volpool-agent";
/// Server-side apply field manager of the controller.
pub const FIELD_MANAGER_CONTROLLER: &str = "volpool-controller";

/// Longest object name Kubernetes accepts for a PV (a DNS-1123 subdomain).
pub const MAX_NAME_LEN: usize = 253;
const HASH_LEN: usize = 8;

/// Name of the PV for a local volume. Deterministic, a valid DNS-1123 subdomain, at most 253
/// characters, and different whenever pool, node or volume ID differ (up to the 32-bit hash;
/// pool and node are Kubernetes names, which hold no NUL).
pub fn local_pv_name(pool: &str, node: &str, entry: &str, volume_id: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [pool, node, volume_id] {
        // NB: a separator that cannot occur in any part keeps ("a","bc") apart from ("ab","c").
        hasher.update(part.as_bytes());
        hasher.update([0u8]);
    }
    let hash = hex(&hasher.finalize()[..HASH_LEN / 2]);
    let readable = sanitize(
        &format!("{pool}-{node}-{entry}"),
        MAX_NAME_LEN - HASH_LEN - 1,
    );
    if readable.is_empty() {
        hash
    } else {
        format!("{readable}-{hash}")
    }
}

/// Name of the PV that owns the NFS sub-directory `dir` (`pv-<8 hex>`) of a pool.
pub fn nfs_pv_name(pool: &str, dir: &str) -> String {
    sanitize(&format!("{pool}-{dir}"), MAX_NAME_LEN)
}

/// The value of [`LABEL_VOLUME_ID`] for a volume ID: itself when it is a valid label value,
/// else `sha256-` and the first 56 hex digits of its SHA-256 (63 characters).
pub fn volume_id_label(volume_id: &str) -> String {
    let valid = !volume_id.is_empty()
        && volume_id.len() <= 63
        && volume_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && volume_id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && volume_id.ends_with(|c: char| c.is_ascii_alphanumeric());
    if valid {
        volume_id.to_string()
    } else {
        format!(
            "sha256-{}",
            &hex(&Sha256::digest(volume_id.as_bytes()))[..56]
        )
    }
}

/// Lowercase, map anything outside `[a-z0-9.-]` to `-`, collapse runs of separators, cut to
/// `max` characters and trim separators from both ends.
fn sanitize(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars().map(|c| c.to_ascii_lowercase()) {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' {
            c
        } else {
            '-'
        };
        let prev_sep = out.ends_with(['-', '.']);
        if (c == '-' || c == '.') && (out.is_empty() || prev_sep) {
            continue;
        }
        out.push(c);
        if out.len() == max {
            break;
        }
    }
    out.trim_end_matches(['-', '.']).to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    pub(super) fn is_dns1123_subdomain(name: &str) -> bool {
        name.len() <= MAX_NAME_LEN
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    }

    #[test]
    fn readable_and_deterministic() {
        let name = local_pv_name("fast-disks", "node-1", "vol1", "uuid:0b3f");
        assert!(name.starts_with("fast-disks-node-1-vol1-"), "{name}");
        assert_eq!(name.len(), "fast-disks-node-1-vol1-".len() + 8);
        assert_eq!(
            name,
            local_pv_name("fast-disks", "node-1", "vol1", "uuid:0b3f")
        );
        assert_eq!(nfs_pv_name("shared", "pv-0a1b2c3d"), "shared-pv-0a1b2c3d");
    }

    #[test]
    fn a_new_disk_at_the_same_path_gets_a_new_name() {
        assert_ne!(
            local_pv_name("p", "n", "vol1", "uuid:aaaa"),
            local_pv_name("p", "n", "vol1", "uuid:bbbb")
        );
        // Sanitising can merge entries; the hash still keeps them apart.
        assert_ne!(
            local_pv_name("p", "n", "Vol_1", "uuid:a"),
            local_pv_name("p", "n", "vol-1", "uuid:b")
        );
    }

    #[test]
    fn hostile_input_still_gives_valid_names() {
        let long = "x".repeat(400);
        for (pool, node, entry) in [
            ("Pool", "Node.Example.COM", "disk with spaces\\040"),
            ("-", "..", "..."),
            ("", "", ""),
            ("p", "n", "ünïcødé/../etc"),
            (long.as_str(), long.as_str(), long.as_str()),
            (
                "a",
                "b",
                &format!("{}.-{}", "y".repeat(236), "z".repeat(10)),
            ),
        ] {
            let name = local_pv_name(pool, node, entry, "uuid:1");
            assert!(is_dns1123_subdomain(&name), "{name:?}");
        }
    }

    #[test]
    fn no_collision_over_a_million_identities() {
        // A large fleet: 4 pools, 2,500 nodes, 100 disks each, every disk with its own UUID.
        let mut seen = HashSet::with_capacity(1_000_000);
        for i in 0..1_000_000u32 {
            let pool = ["fast-disks", "slow-disks", "Fast_Disks", "ssd"][(i % 4) as usize];
            let node = format!("worker-{}", i / 400);
            let entry = format!("vol{}", (i / 4) % 100);
            let id = format!("uuid:{:08x}-{:04x}", i.wrapping_mul(2_654_435_761), i % 7);
            let name = local_pv_name(pool, &node, &entry, &id);
            assert!(is_dns1123_subdomain(&name), "{name}");
            assert!(seen.insert(name), "collision at identity {i}");
        }
    }

    #[test]
    fn volume_id_labels_are_valid_label_values() {
        assert_eq!(
            volume_id_label("wwn-0x5000c500a1b2c3d4"),
            "wwn-0x5000c500a1b2c3d4"
        );
        let hashed = volume_id_label("uuid:0b3f-aa");
        assert!(
            hashed.starts_with("sha256-") && hashed.len() == 63,
            "{hashed}"
        );
        assert_ne!(hashed, volume_id_label("uuid:0b3f-ab"));
        assert_eq!(volume_id_label(&"a".repeat(64)).len(), 63);
    }
}
