//! Small pure checks on pool specs: which pools are refused (invalid, or discovery dirs that
//! overlap). Whether a node matches a pool's `nodeSelector` is
//! `volpool_api::optional_selector_matches`.

use std::collections::HashMap;

use volpool_api::VolumePool;

/// Why a pool is not planned at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Condition reason.
    pub reason: &'static str,
    /// Condition message.
    pub message: String,
}

/// Pools refused this pass: those failing validation, and those whose discovery dirs overlap.
pub fn refusals(pools: &[&VolumePool]) -> HashMap<String, Refusal> {
    let mut refused = HashMap::new();
    for pool in pools {
        if let Err(e) = pool.validate() {
            let name = pool.metadata.name.clone().unwrap_or_default();
            refused.insert(
                name,
                Refusal {
                    reason: "InvalidSpec",
                    message: e.to_string(),
                },
            );
        }
    }
    for (i, a) in pools.iter().enumerate() {
        for b in &pools[i + 1..] {
            let (Some(la), Some(lb)) = (&a.spec.local, &b.spec.local) else {
                continue;
            };
            if !dirs_overlap(&la.discovery_dir, &lb.discovery_dir) {
                continue;
            }
            let (na, nb) = (name_of(a), name_of(b));
            for (me, other, my_dir, other_dir) in [
                (na, nb, &la.discovery_dir, &lb.discovery_dir),
                (nb, na, &lb.discovery_dir, &la.discovery_dir),
            ] {
                refused.entry(me.to_string()).or_insert_with(|| Refusal {
                    reason: "OverlappingDiscoveryDir",
                    message: format!(
                        "spec.local.discoveryDir {my_dir:?} overlaps {other_dir:?} of VolumePool {other:?}: a disk would be offered twice; give each pool its own directory"
                    ),
                });
            }
        }
    }
    refused
}

/// The pool's name ("" when unset).
pub fn name_of(pool: &VolumePool) -> &str {
    pool.metadata.name.as_deref().unwrap_or_default()
}

/// Whether one discovery dir is the other or lies inside it (`/mnt/disks` and
/// `/mnt/disks/ssd` overlap; `/mnt/disks` and `/mnt/disks2` do not).
pub fn dirs_overlap(a: &str, b: &str) -> bool {
    let a = a.trim_end_matches('/');
    let b = b.trim_end_matches('/');
    let inside = |outer: &str, inner: &str| {
        inner == outer
            || inner
                .strip_prefix(outer)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    inside(a, b) || inside(b, a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
    use volpool_api::optional_selector_matches as matches;

    #[test]
    fn selectors() {
        let labels = BTreeMap::from([("disk".to_string(), "ssd".to_string())]);
        let sel = |op: &str, values: &[&str]| LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "disk".into(),
                operator: op.into(),
                values: Some(values.iter().map(|v| v.to_string()).collect()),
            }]),
            match_labels: None,
        };
        assert!(matches(Some(&sel("In", &["ssd", "nvme"])), Some(&labels)));
        assert!(!matches(Some(&sel("NotIn", &["ssd"])), Some(&labels)));
        assert!(matches(Some(&sel("Exists", &[])), Some(&labels)));
        assert!(!matches(Some(&sel("DoesNotExist", &[])), Some(&labels)));
        assert!(!matches(Some(&sel("Typo", &[])), Some(&labels)));
        assert!(matches(None, Some(&labels)));
        assert!(matches(Some(&sel("In", &["hdd"])), None));
    }

    #[test]
    fn overlapping_dirs() {
        assert!(dirs_overlap("/mnt/disks", "/mnt/disks/"));
        assert!(dirs_overlap("/mnt/disks", "/mnt/disks/ssd"));
        assert!(!dirs_overlap("/mnt/disks", "/mnt/disks2"));
    }
}
