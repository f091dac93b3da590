//! Property tests of the PV-name builders: valid, bounded, deterministic and distinct names
//! for any input, and label values that Kubernetes accepts.

use std::collections::HashSet;

use proptest::prelude::*;

use super::tests::is_dns1123_subdomain;
use super::*;

/// Any text without NUL (Kubernetes names never hold one), biased to separators, case and
/// non-ASCII.
fn part() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9.-]{0,20}",
        "[A-Za-z0-9._ /:-]{0,80}",
        "[^\u{0}]{0,300}",
    ]
}

fn is_label_value(value: &str) -> bool {
    value.len() <= 63
        && (value.is_empty()
            || value.starts_with(|c: char| c.is_ascii_alphanumeric())
                && value.ends_with(|c: char| c.is_ascii_alphanumeric())
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)))
}

proptest! {
    #[test]
    fn local_names_are_valid_bounded_and_deterministic(
        pool in part(), node in part(), entry in part(), id in any::<String>()
    ) {
        let name = local_pv_name(&pool, &node, &entry, &id);
        prop_assert!(!name.is_empty() && name.len() <= MAX_NAME_LEN, "{:?}", name);
        prop_assert!(is_dns1123_subdomain(&name), "{:?}", name);
        prop_assert_eq!(&name, &local_pv_name(&pool, &node, &entry, &id));
    }

    #[test]
    fn distinct_identities_get_distinct_local_names(
        a in (part(), part(), any::<String>()),
        b in (part(), part(), any::<String>()),
        entry in part(),
    ) {
        // NB: pool, node and ID are what the name promises to keep apart, whatever the entry;
        // equal triples must give equal names even when one differs only in case.
        let name = |(pool, node, id): &(String, String, String)| local_pv_name(pool, node, &entry, id);
        prop_assert_eq!(a == b, name(&a) == name(&b), "{:?} {:?}", a, b);
    }

    #[test]
    fn a_node_of_many_disks_gets_one_name_each(
        pool in part(), node in part(), ids in prop::collection::hash_set("\\PC{0,24}", 1..16)
    ) {
        let names: HashSet<String> = ids
            .iter()
            .map(|id| local_pv_name(&pool, &node, "vol", id))
            .collect();
        prop_assert_eq!(names.len(), ids.len());
    }

    #[test]
    fn nfs_names_are_valid_and_distinct_per_directory(
        pool in "[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?",
        dirs in prop::collection::hash_set("pv-[0-9a-f]{8}", 1..20),
        any_pool in part(),
        any_dir in part(),
    ) {
        let names: HashSet<String> = dirs.iter().map(|d| nfs_pv_name(&pool, d)).collect();
        prop_assert_eq!(names.len(), dirs.len());
        for name in &names {
            prop_assert!(is_dns1123_subdomain(name), "{:?}", name);
        }
        let name = nfs_pv_name(&any_pool, &any_dir);
        prop_assert!(name.len() <= MAX_NAME_LEN && (name.is_empty() || is_dns1123_subdomain(&name)), "{:?}", name);
    }

    #[test]
    fn volume_id_labels_are_label_values(id in prop_oneof![any::<String>(), "[a-zA-Z0-9._:-]{1,80}"]) {
        let label = volume_id_label(&id);
        prop_assert!(is_label_value(&label) && !label.is_empty(), "{:?} -> {:?}", id, label);
        prop_assert_eq!(label == id, is_label_value(&id) && !id.is_empty());
    }
}
