//! Property tests of the pool validator: any spec is accepted or refused with every problem
//! named after its field and the pool, and an accepted spec is one the controller can use.

use proptest::prelude::*;

use super::*;

/// Mostly valid values, with arbitrary text mixed in.
fn text(valid: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(valid).prop_map(String::from),
        1 => "\\PC{0,12}",
    ]
}

fn local() -> impl Strategy<Value = LocalSource> {
    (
        text(&["/mnt/disks", "/dev/pool", "/"]),
        prop::sample::select(vec![VolumeMode::Filesystem, VolumeMode::Block]),
        text(&["*", "sd?", "[abc]*"]),
        text(&["1Gi", "0", "1e9", "1.5Gi", "500M"]),
        prop::sample::select(vec![
            None,
            Some(CleanupMethod::Wipe),
            Some(CleanupMethod::Discard),
            Some(CleanupMethod::Zero),
            Some(CleanupMethod::None),
        ]),
    )
        .prop_map(
            |(discovery_dir, volume_mode, name_pattern, min_capacity, cleanup)| LocalSource {
                discovery_dir,
                volume_mode,
                name_pattern,
                min_capacity,
                cleanup,
            },
        )
}

fn nfs() -> impl Strategy<Value = NfsSource> {
    (
        (
            text(&["nfs.example.com", "10.0.0.2", ""]),
            text(&["/export", "/"]),
        ),
        prop::sample::select(vec![NfsAccess::NFSv3, NfsAccess::Mounted]),
        text(&["/mnt/export", ""]),
        text(&["10Gi", "1T"]),
        (any::<u32>(), any::<u32>(), any::<bool>()),
        text(&["0777", "2770", "755", "07777"]),
    )
        .prop_map(
            |(
                (server, path),
                access,
                mounted_path,
                volume_size,
                (min, max, affinity),
                dir_mode,
            )| {
                NfsSource {
                    server,
                    path,
                    access,
                    mounted_path,
                    volume_size,
                    min_available: min,
                    max_volumes: max,
                    on_release: OnRelease::Delete,
                    dir_mode,
                    nfs_client_affinity: affinity,
                }
            },
        )
}

fn pool() -> impl Strategy<Value = VolumePool> {
    (
        "[a-z0-9-]{1,20}",
        text(&["fast-disks", "nfs", " "]),
        text(&["0s", "0", "10m", "1h30m", "1.5h", "300ms"]),
        prop::option::of(local()),
        prop::option::of(nfs()),
    )
        .prop_map(|(name, class, grace, local, nfs)| {
            VolumePool::new(
                &name,
                VolumePoolSpec {
                    storage_class_name: class,
                    reclaim_policy: ReclaimPolicy::Delete,
                    access_modes: Vec::new(),
                    mount_options: Vec::new(),
                    node_selector: None,
                    labels: BTreeMap::new(),
                    release_grace_period: grace,
                    local,
                    nfs,
                },
            )
        })
}

proptest! {
    #[test]
    fn every_problem_names_the_pool_and_its_field(pool in pool()) {
        if let Err(e) = pool.validate() {
            prop_assert_eq!(Some(&e.pool), pool.metadata.name.as_ref());
            prop_assert!(!e.problems.is_empty());
            for problem in &e.problems {
                prop_assert!(problem.contains("spec."), "{}", problem);
            }
            let text = e.to_string();
            prop_assert!(text.contains(&format!("VolumePool {:?}", e.pool)), "{}", text);
        }
    }

    #[test]
    fn an_accepted_pool_is_usable(pool in pool()) {
        if pool.validate().is_ok() {
            let spec = &pool.spec;
            prop_assert!(spec.local.is_some() != spec.nfs.is_some());
            prop_assert!(parse_duration(&spec.release_grace_period).is_ok());
            if let Some(local) = &spec.local {
                prop_assert!(parse_bytes(&local.min_capacity).is_ok());
                prop_assert!(local.discovery_dir.starts_with('/'));
                prop_assert!(pool.local_cleanup().is_some());
            }
            if let Some(nfs) = &spec.nfs {
                prop_assert!(parse_bytes(&nfs.volume_size).is_ok());
                prop_assert!(nfs.dir_mode_bits().is_some_and(|m| m <= 0o7777));
                prop_assert!(nfs.min_available <= nfs.max_volumes);
            }
        }
    }

    #[test]
    fn what_the_schema_admits_the_validator_reads(
        grace in "0|([0-9]{1,6}(\\.[0-9]{1,6})?(ns|us|ms|s|m|h)){1,4}",
        mode in "0?[0-7]{3,4}",
    ) {
        // NB: the CRD's patterns for releaseGracePeriod and dirMode; a value the apiserver
        // admits must not be refused later by the controller.
        prop_assert!(parse_duration(&grace).is_ok(), "{}", grace);
        let nfs = NfsSource { dir_mode: mode.clone(), ..nfs_defaults() };
        prop_assert!(nfs.dir_mode_bits().is_some(), "{}", mode);
    }
}

fn nfs_defaults() -> NfsSource {
    serde_yaml::from_str("{server: s, path: /p}").expect("minimal nfs source")
}
